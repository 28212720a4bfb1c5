"""``python -m segdemo bench``: cost of every model and level."""

from __future__ import annotations

import json

from segdemo.cli.types import size


def cmd_bench(args) -> int:
    from segdemo.bench import format_bench_table, run_bench

    models = args.models.split(",") if args.models else None
    rows = run_bench(
        models=models, size=args.size, batch=args.batch, repeats=args.repeats, device=args.device
    )
    print(json.dumps(rows, indent=2) if args.json else format_bench_table(rows))
    return 0


def add_parsers(sub) -> None:
    be = sub.add_parser("bench", help="parameters, GFLOPs and latency of every model and level")
    be.add_argument("--models", help="comma-separated names (default: all)")
    be.add_argument("--size", type=size, default=(256, 512))
    be.add_argument("--batch", type=int, default=8)
    be.add_argument("--repeats", type=int, default=10)
    be.add_argument("--device", default="cpu")
    be.add_argument("--json", action="store_true")
    be.set_defaults(func=cmd_bench)
