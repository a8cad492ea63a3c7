"""nbstep against the tools a user would reach for instead, in one run.

    python3 dev.py bench                 # everything (about 5 minutes on 2 cores)
    python3 dev.py bench --quick         # smaller sizes, for a smoke check
    python3 dev.py bench --only frame    # one part (repeat --only for several)

Each part prints a table; the summary at the end lists every headline figure with
the peer measured in the same run, their ratio and the target (the README's table).
nbstep's records are durable (written and flushed to disk) when step.run returns;
diskcache's and joblib's are not (neither fsyncs), which the tables say.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("import", "small", "fresh", "frame", "scale", "procs", "readers", "memory", "team")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts")
    args = parser.parse_args()
    only = set(args.only or PARTS)
    quick = args.quick
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}{' (quick)' if quick else ''}")
    from report import summary

    with tempfile.TemporaryDirectory(prefix="nbstep-bench-", dir=os.environ.get("BENCH_DIR")) as t:
        tmp = Path(t)
        if "import" in only:
            from imports import bench_imports

            bench_imports(3 if quick else 9)
        if "small" in only:
            from small import bench_small

            bench_small(tmp, 1_000 if quick else 10_000)
        if "fresh" in only:
            from small import bench_fresh_small

            bench_fresh_small(tmp, [2_000] if quick else [2_000, 10_000], 3 if quick else 5)
        if "frame" in only:
            from frame import bench_frame, bench_frame_fresh

            rows = 100_000 if quick else 1_000_000
            bench_frame(tmp, rows, 3 if quick else 5)
            bench_frame_fresh(tmp, rows, 3 if quick else 5)
        if "scale" in only:
            from scale import bench_scale

            bench_scale(tmp, 10_000 if quick else 100_000, 100 if quick else 1_000,
                        3 if quick else 5)
        if "procs" in only:
            from procs import bench_processes

            bench_processes(tmp, 8, 100 if quick else 500)
        if "readers" in only:
            from readers import bench_readers

            bench_readers(tmp, quick)
        if "memory" in only:
            from memory import bench_memory

            bench_memory(tmp, 1_000_000 if quick else 10_000_000)
        if "team" in only and (HERE / "team.py").exists():
            import team

            team.bench_team(tmp, quick)
    summary()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
