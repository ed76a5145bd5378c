"""``python -m adabatch``: the same command line as the ``adabatch`` script."""

from adabatch.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
