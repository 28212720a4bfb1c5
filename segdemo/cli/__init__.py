"""Command line: ``python -m segdemo {data,train,eval,predict,bench,export,report} ...``.

Every command has ``--help``. Errors a user can fix (a bad folder, a bad checkpoint, a bad
image, a file where a folder should be, no memory left) print one line starting with
``error:`` and exit with status 2, without a traceback. Each command lives in its own
module with an ``add_parsers(sub)`` that declares it; the modules import nothing heavy at
the top (torch, smp, OpenCV come with the command that runs), so ``--help`` and an
argument error answer at once.
"""

from __future__ import annotations

import argparse
import sys

from segdemo.cli import bench, data, evaluation, predict, train

COMMAND_MODULES = (data, train, evaluation, predict, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m segdemo",
        description="segdemo: train, evaluate and compare U-Net and U-Net++ street-scene models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


OUT_OF_MEMORY = "out of memory: try a smaller --size or --batch, or fewer photos at once"


def _out_of_memory(error: RuntimeError) -> bool:
    """torch's CPU and CUDA allocation failures (RuntimeErrors, without importing torch)."""
    text = str(error)
    return type(error).__name__ == "OutOfMemoryError" or any(
        s in text for s in ("can't allocate memory", "not enough memory", "out of memory")
    )


def _error(message: object) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # CheckpointError, ImageError are ValueErrors
        return _error(e)
    except MemoryError:
        return _error(OUT_OF_MEMORY)
    except RuntimeError as e:
        if _out_of_memory(e):
            return _error(OUT_OF_MEMORY)
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
