"""``python -m segdemo eval`` and ``report``: numbers for checkpoints."""

from __future__ import annotations

import json


def cmd_eval(args) -> int:
    from tqdm import tqdm

    from segdemo.evaluate import evaluate_checkpoint

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if args.json:
            return
        if bar is None:
            bar = tqdm(total=total, unit="img", desc="eval")
        bar.update(done - bar.n)

    result = evaluate_checkpoint(
        args.ckpt,
        args.data,
        split=args.split,
        fmt=args.format,
        mode=args.mode,
        level=args.level,
        batch_size=args.batch,
        max_items=args.max_items,
        device=args.device,
        precision=args.precision,
        progress=progress,
    )
    if bar is not None:
        bar.close()
    if args.json:
        result = {k: v for k, v in result.items() if k != "confusion_matrix" or args.confusion}
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']} on {args.data} ({args.split}, {result['images']} images)")
    print(f"  mIoU {result['miou']:.4f}   pixel accuracy {result['pixel_accuracy']:.4f}")
    for name, iou in result["per_class_iou"].items():
        print(f"  {name:<14} {'  -   ' if iou is None else f'{iou:.4f}'}")
    for mode, levels in result.get("per_level", {}).items():
        cells = "  ".join(f"L{k} {m['miou']:.4f}" for k, m in levels.items())
        print(f"  {mode:<9} {cells}")
    return 0


def cmd_report(args) -> int:
    from segdemo.report import build_report

    report = build_report(
        args.ckpt, args.data, args.out, split=args.split, max_items=args.max_items,
        repeats=args.repeats, qualitative=args.qualitative, with_photos=args.with_photos,
    )  # fmt: skip
    print(f"wrote {', '.join(report['figures'])}, tables.md and results.json to {args.out}")
    return 0


def add_parsers(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a checkpoint on a dataset split")
    ev.add_argument("--ckpt", required=True)
    ev.add_argument("--data", default="synthetic")
    ev.add_argument("--format", default="auto")
    ev.add_argument("--split", default="val", choices=["train", "val"])
    ev.add_argument("--mode", choices=["fast", "accurate"], help="U-Net++ only")
    ev.add_argument("--level", type=int, help="U-Net++ pruning level (default: the deepest)")
    ev.add_argument("--batch", type=int, default=8)
    ev.add_argument("--max-items", type=int, help="evaluate on the first N images")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--confusion", action="store_true", help="include the confusion matrix in JSON")
    ev.set_defaults(func=cmd_eval)

    rp = sub.add_parser("report", help="evaluate checkpoints and write the results tables/figures")
    rp.add_argument("--ckpt", action="append", required=True, help="repeat for each model")
    rp.add_argument("--data", default="synthetic")
    rp.add_argument("--split", default="val", choices=["train", "val"])
    rp.add_argument("--max-items", type=int, help="evaluate on the first N images")
    rp.add_argument("--repeats", type=int, default=20, help="latency repeats per setting")
    rp.add_argument("--qualitative", type=int, default=6, help="rows in the qualitative grid")
    rp.add_argument("--with-photos", action="store_true",
                    help="add the photos to the qualitative grid (check the data's licence "
                         "before publishing it)")  # fmt: skip
    rp.add_argument("--out", default="docs/results")
    rp.set_defaults(func=cmd_report)
