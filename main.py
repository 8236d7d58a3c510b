"""K-Arb entry point: `python main.py --help`."""
import sys

from karb.cli import main

if __name__ == "__main__":
    sys.exit(main())
