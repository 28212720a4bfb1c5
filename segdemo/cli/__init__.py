"""Command line: ``python -m segdemo {data,train,eval,predict,bench,export,report} ...``.

Every command has ``--help``. Errors a user can fix (a bad folder, a bad checkpoint, a bad
image) print one line starting with ``error:`` and exit with status 2, without a traceback.
Each command lives in its own module with an ``add_parsers(sub)`` that declares it.
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # CheckpointError, ImageError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
