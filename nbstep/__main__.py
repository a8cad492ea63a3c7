"""``python -m nbstep``: the same command line as ``nbstep``."""

from nbstep.cli import main

if __name__ == "__main__":
    main()
