"""Entry script of the frozen desktop app (``build.spec``): the same as the ``instructir-studio`` gui-script."""

import multiprocessing
import sys

if __name__ == "__main__":
    # torch / tokenizers may start worker processes; a frozen app must route them here, not into main().
    multiprocessing.freeze_support()
    from desktop.app import main

    sys.exit(main())
