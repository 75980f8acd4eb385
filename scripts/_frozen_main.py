"""The entry point PyInstaller freezes into dist/modelux-local (scripts/build)."""
import multiprocessing
import sys

from modelux_local.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
