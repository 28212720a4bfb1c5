"""Entry point for ``python -m segdemo`` (and ``torchrun -m segdemo``)."""

from segdemo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
