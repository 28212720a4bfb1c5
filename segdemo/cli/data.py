"""``python -m segdemo data inspect``."""

from __future__ import annotations

import json


def cmd_data_inspect(args) -> int:
    from segdemo.data import format_inspection, inspect_dataset

    report = inspect_dataset(args.root, fmt=args.format, label_set=args.label_set)
    print(json.dumps(report, indent=2) if args.json else format_inspection(report))
    return 0


def add_parsers(sub) -> None:
    data = sub.add_parser("data", help="inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser(
        "inspect", help="detect a dataset's format and count its images per split"
    )
    inspect.add_argument("root", help="dataset folder, or 'synthetic' for the built-in set")
    inspect.add_argument(
        "--format", default="auto", help="pairs, cityscapes, kitti, folder, synthetic"
    )
    inspect.add_argument("--label-set", default="cityscapes19")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=cmd_data_inspect)
