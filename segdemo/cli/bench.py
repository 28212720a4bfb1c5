"""``python -m segdemo bench``: cost of every model and level."""

from __future__ import annotations

import json
import sys

from segdemo.cli.evaluation import MAX_BATCH
from segdemo.config import float_in, int_in, parse_input_size

TRAIN_MODELS = (
    "unet",
    "unetpp",
    "unetpp_ds:encoder=timm-tf_efficientnet_lite0",
    "smp_unetpp:encoder=timm-tf_efficientnet_lite0",
    "smp_unet:encoder=timm-tf_efficientnet_lite0",
)


def cmd_bench(args) -> int:
    from segdemo.bench import (
        bench_train,
        bench_video,
        format_bench_table,
        format_train_table,
        format_video_table,
        run_bench,
    )
    from segdemo.engine import resolve_engine

    args.size_given = args.size is not None
    engines = []
    for name in args.engines.split(","):
        chosen, note = resolve_engine(name.strip(), args.device)
        if note:
            print(f"note: {note}", file=sys.stderr)
        if chosen not in engines:
            engines.append(chosen)
    if args.agreement:
        from segdemo.bench import bench_engine_agreement, format_agreement_table

        if not args.ckpt:
            raise ValueError("--agreement needs --ckpt FILE (repeatable) and --data ROOT")
        rows = bench_engine_agreement(args.ckpt, args.data, max_items=args.max_items)
        print(json.dumps(rows, indent=2) if args.json else format_agreement_table(rows))
        return 0
    if args.video:
        size = args.size or (360, 640)
        result = bench_video(args.video, seconds=args.seconds, size=size,
                             device=args.device, engines=engines)  # fmt: skip
        print(json.dumps(result, indent=2) if args.json else format_video_table(result))
        return 0
    args.size = args.size or (256, 512)
    if args.train:
        specs = args.model or list(TRAIN_MODELS)
        size = args.size if args.size_given else (256, 256)
        rows = bench_train(specs, size=size, batch=args.batch, repeats=args.repeats,
                           device=args.device)  # fmt: skip
        print(json.dumps(rows, indent=2) if args.json else format_train_table(rows))
        return 0

    models = args.models.split(",") if args.models else None
    rows = run_bench(models=models, size=args.size, batch=args.batch, repeats=args.repeats,
                     device=args.device, engines=engines, checkpoints=args.ckpt or (),
                     size_given=args.size_given)  # fmt: skip
    print(json.dumps(rows, indent=2) if args.json else format_bench_table(rows))
    return 0


def add_parsers(sub) -> None:
    be = sub.add_parser("bench", help="parameters, GFLOPs and latency of every model and level")
    be.add_argument("--models", help="comma-separated names (default: all, none with --ckpt)")
    be.add_argument("--ckpt", action="append", metavar="FILE",
                    help="time a checkpoint at every setting (repeatable; at its own input "
                         "size unless --size)")  # fmt: skip
    be.add_argument(
        "--size", type=parse_input_size, help="HxW (default 256x512; 256x256 with --train)"
    )
    be.add_argument("--batch", type=int_in(1, MAX_BATCH), default=8)
    be.add_argument("--repeats", type=int_in(1, 10_000), default=10)
    be.add_argument("--device", default="cpu")
    be.add_argument("--json", action="store_true")
    be.add_argument(
        "--train", action="store_true",
        help="time training steps instead (forward, loss, backward, AdamW): step time, "
        "images/s and the fraction of the machine's bf16 matmul peak",
    )  # fmt: skip
    be.add_argument(
        "--model", action="append", metavar="NAME[:KEY=VALUE...]",
        help="--train: a model to time (repeatable), e.g. "
        "unetpp_ds:encoder=timm-tf_efficientnet_lite0 (default: the bundled models and "
        "smp's U-Net and U-Net++ on the same encoder)",
    )  # fmt: skip
    be.add_argument(
        "--video", action="append", metavar="CKPT",
        help="time video segmentation instead (repeatable): frames/s of each checkpoint at "
        "every setting on a synthetic drive clip (--size, default 360x640), and the time "
        "from clip to playable WebM with all of them together",
    )  # fmt: skip
    be.add_argument("--seconds", type=float_in(0.1, 600), default=10.0,
                    help="--video: clip length")  # fmt: skip
    be.add_argument(
        "--agreement", action="store_true",
        help="with --ckpt and --data: OpenVINO's masks against torch fp32's on the first "
        "--max-items val photos, per setting (pixels agreeing, mIoU of each)",
    )  # fmt: skip
    be.add_argument("--data", help="--agreement: a dataset root")
    be.add_argument("--max-items", type=int_in(1), default=100, help="--agreement: photos used")
    be.add_argument(
        "--engines", default="torch,openvino",
        help="engines to time side by side (comma-separated: torch, openvino, auto); an "
        "engine that cannot run here is left out with a note (--train: torch only)",
    )  # fmt: skip
    be.set_defaults(func=cmd_bench)
