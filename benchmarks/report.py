"""Timing helpers and the Markdown tables every benchmark prints."""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable


def per_call(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """(median, p99) seconds of fn(i) for i in range(n)."""
    times = []
    clock = time.perf_counter
    for i in range(n):
        start = clock()
        fn(i)
        times.append(clock() - start)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of fn() over ``repeat`` runs (cold page cache not attempted)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()
