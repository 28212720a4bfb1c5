"""Command line: ``python -m segdemo {data,train,eval,predict,bench,export} ...``.

Every command has ``--help``. Errors a user can fix (a bad folder, a bad checkpoint, a bad
image) print one line starting with ``error:`` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    """``"256x512"`` -> (256, 512) as (H, W); a single number means square."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x512 (HxW), got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 256x512 (HxW), got {text!r}")
    return values[0], values[1]


def _model_arg(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model-arg takes key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# --------------------------------------------------------------------------- data


def cmd_data_inspect(args) -> int:
    from segdemo.data import format_inspection, inspect_dataset

    report = inspect_dataset(args.root, fmt=args.format, label_set=args.label_set)
    print(json.dumps(report, indent=2) if args.json else format_inspection(report))
    return 0


# --------------------------------------------------------------------------- train


def _model_kwargs(args) -> dict:
    kwargs = dict(args.model_arg or [])
    if args.base_width is not None:
        kwargs["base_width"] = args.base_width
    if args.encoder is not None:
        kwargs["encoder"] = args.encoder
    if args.encoder_weights is not None:
        kwargs["encoder_weights"] = None if args.encoder_weights == "none" else args.encoder_weights
    if args.deep_supervision is not None:
        kwargs["deep_supervision"] = args.deep_supervision
    return kwargs


class _ConsoleProgress:
    """tqdm bar over steps and one summary line per epoch."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event["event"]
        if kind == "start":
            print(
                f"training on {event['device']}: {event['train_images']} train / "
                f"{event['val_images']} val images, {event['steps_per_epoch']} steps per epoch",
                flush=True,
            )
            self.bar = tqdm(total=event["total_steps"], initial=event["step"], unit="step")
        elif kind == "step" and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(
                epoch=event["epoch"] + 1,
                loss=f"{event['loss']:.3f}",
                lr=f"{event['lr']:.2e}",
                img_s=f"{event['images_per_s']:.1f}",
            )
        elif kind == "epoch":
            line = (
                f"epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.4f}, "
                f"val mIoU {event['val_miou']:.4f}, pixel acc {event['val_pixel_accuracy']:.4f}, "
                f"{event['epoch_time_s']:.0f}s (data overhead x{event['data_overhead_ratio']:.2f}, "
                f"eval {event['eval_time_s']:.0f}s), best {event['best_miou']:.4f}"
            )
            (self.bar.write if self.bar is not None else print)(line)
        elif kind in ("stopped", "end", "failed") and self.bar is not None:
            self.bar.close()
            self.bar = None
            if kind == "stopped":
                print(f"stopped ({event['reason']}) at step {event['step']}; --resume continues")


def cmd_train(args) -> int:
    from segdemo.train import TrainConfig, fit

    out = args.out or str(Path("runs") / f"{args.model}")
    data_options = {}
    if args.synthetic_length is not None:
        data_options["length"] = args.synthetic_length
    config = TrainConfig(
        data=args.data,
        data_format=args.format,
        label_set=args.label_set,
        data_options=data_options,
        model=args.model,
        model_kwargs=_model_kwargs(args),
        size=args.size,
        batch_size=args.batch,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_steps=args.warmup_steps,
        loss=args.loss,
        augment=not args.no_augment,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        workers=args.workers,
        out=out,
        log_every=args.log_every,
        val_max_items=args.val_max_items,
    )
    callbacks = [] if args.quiet else [_ConsoleProgress()]
    result = fit(config, callbacks=callbacks, resume=args.resume)
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- eval


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


# --------------------------------------------------------------------------- predict


def cmd_predict(args) -> int:
    import numpy as np
    from PIL import Image

    from segdemo import viz
    from segdemo.checkpoints import load_checkpoint
    from segdemo.images import load_image
    from segdemo.inference import mask_to_size, predict_mask, prepare_model, preprocess

    ckpt = load_checkpoint(args.ckpt)
    model, device, precision = prepare_model(ckpt.model, args.device, args.precision)
    label_set = ckpt.label_set
    forward_kwargs = {}
    if args.mode or args.level:
        if not getattr(model, "supports_pruning", False):
            raise ValueError(f"{ckpt.path.name} holds a {ckpt.metadata['model']} without levels")
        forward_kwargs = {"mode": args.mode or "accurate", "level": args.level or 4}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for image_path in args.images:
        try:
            image = load_image(image_path)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        batch = preprocess(image, ckpt.input_size, ckpt.normalization)
        mask = predict_mask(model, batch, device, precision, **forward_kwargs)[0]
        mask = mask_to_size(mask, image.shape[:2]).cpu().numpy().astype(np.uint8)
        stem = Path(image_path).stem
        Image.fromarray(mask).save(out / f"{stem}_trainids.png")
        Image.fromarray(viz.colorize(mask, label_set)).save(out / f"{stem}_mask.png")
        Image.fromarray(viz.overlay(image, mask, label_set, args.alpha)).save(
            out / f"{stem}_overlay.png"
        )
        legend = viz.legend_entries(mask, label_set)
        Image.fromarray(viz.legend_image(legend)).save(out / f"{stem}_legend.png")
        classes = ", ".join(f"{e['name']} {100 * e['fraction']:.0f}%" for e in legend[:5])
        print(f"{image_path}: {classes} -> {out / stem}_{{mask,overlay,trainids,legend}}.png")
    return 2 if failures else 0


# --------------------------------------------------------------------------- bench


def cmd_bench(args) -> int:
    from segdemo.bench import format_bench_table, run_bench

    models = args.models.split(",") if args.models else None
    rows = run_bench(
        models=models, size=args.size, batch=args.batch, repeats=args.repeats, device=args.device
    )
    print(json.dumps(rows, indent=2) if args.json else format_bench_table(rows))
    return 0


# --------------------------------------------------------------------------- export


def cmd_export(args) -> int:
    from segdemo import export

    if not (args.onnx or args.safetensors or args.pretrained_dir):
        raise ValueError("export needs at least one of --onnx, --safetensors, --pretrained-dir")
    if args.safetensors:
        path = export.export_safetensors(args.ckpt, args.safetensors, fp16=args.fp16)
        print(f"wrote {path}")
    if args.onnx:
        path = export.export_onnx(args.ckpt, args.onnx, mode=args.mode, level=args.level)
        print(f"wrote {path}")
    if args.pretrained_dir:
        path = export.export_smp_pretrained(args.ckpt, args.pretrained_dir)
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m segdemo",
        description="segdemo: train, evaluate and compare U-Net and U-Net++ street-scene models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser(
        "inspect", help="detect a dataset's format and count its images per split"
    )
    inspect.add_argument("root", help="dataset folder, or 'synthetic' for the built-in set")
    inspect.add_argument("--format", default="auto", help="pairs, cityscapes, kitti, folder, synthetic")
    inspect.add_argument("--label-set", default="cityscapes19")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=cmd_data_inspect)

    train = sub.add_parser("train", help="train a model; checkpoints land in --out")
    train.add_argument("--data", default="synthetic", help="dataset folder or 'synthetic'")
    train.add_argument("--format", default="auto", help="dataset format (default: detect)")
    train.add_argument("--label-set", default="cityscapes19", help="cityscapes19 or road")
    train.add_argument("--model", default="unet", help="a name from segdemo.models.list_models()")
    train.add_argument("--base-width", type=int, help="scratch models: channels at level 0")
    train.add_argument("--encoder", help="smp models: encoder name, e.g. resnet18")
    train.add_argument("--encoder-weights", choices=["imagenet", "none"], help="smp encoders")
    ds = train.add_mutually_exclusive_group()
    ds.add_argument("--deep-supervision", dest="deep_supervision", action="store_true", default=None)
    ds.add_argument("--no-deep-supervision", dest="deep_supervision", action="store_false")
    train.add_argument("--model-arg", type=_model_arg, action="append", metavar="KEY=VALUE",
                       help="any other model keyword argument (repeatable)")  # fmt: skip
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    train.add_argument("--size", type=_size, default=(128, 256), help="HxW, e.g. 256x256")
    train.add_argument("--batch", type=int, default=8)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--schedule", choices=["poly", "cosine"], default="poly")
    train.add_argument("--warmup-steps", type=int, default=100)
    train.add_argument("--loss", choices=["ce", "dice", "ce_dice"], default="ce_dice")
    train.add_argument("--no-augment", action="store_true", help="turn off flips/crops/jitter")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    train.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    train.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    train.add_argument("--out", help="run folder (default runs/<model>)")
    train.add_argument("--resume", action="store_true", help="continue from --out/last.safetensors")
    train.add_argument("--log-every", type=int, default=10, help="steps between progress events")
    train.add_argument("--val-max-items", type=int, help="evaluate on the first N val images")
    train.add_argument("--synthetic-length", type=int, help="images in the synthetic train split")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint on a dataset split")
    ev.add_argument("--ckpt", required=True)
    ev.add_argument("--data", default="synthetic")
    ev.add_argument("--format", default="auto")
    ev.add_argument("--split", default="val", choices=["train", "val"])
    ev.add_argument("--mode", choices=["fast", "accurate"], help="U-Net++ only")
    ev.add_argument("--level", type=int, choices=[1, 2, 3, 4], help="U-Net++ pruning level")
    ev.add_argument("--batch", type=int, default=8)
    ev.add_argument("--max-items", type=int, help="evaluate on the first N images")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--confusion", action="store_true", help="include the confusion matrix in JSON")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="segment photos: colour mask, overlay, train-id PNG")
    pr.add_argument("--ckpt", required=True)
    pr.add_argument("images", nargs="+")
    pr.add_argument("--out", required=True)
    pr.add_argument("--mode", choices=["fast", "accurate"])
    pr.add_argument("--level", type=int, choices=[1, 2, 3, 4])
    pr.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    pr.set_defaults(func=cmd_predict)

    be = sub.add_parser("bench", help="parameters, GFLOPs and latency of every model and level")
    be.add_argument("--models", help="comma-separated names (default: all)")
    be.add_argument("--size", type=_size, default=(256, 512))
    be.add_argument("--batch", type=int, default=8)
    be.add_argument("--repeats", type=int, default=10)
    be.add_argument("--device", default="cpu")
    be.add_argument("--json", action="store_true")
    be.set_defaults(func=cmd_bench)

    ex = sub.add_parser("export", help="export a checkpoint: ONNX, fp16 safetensors, smp layout")
    ex.add_argument("--ckpt", required=True)
    ex.add_argument("--onnx", help="write an ONNX file here (needs onnx)")
    ex.add_argument("--mode", choices=["fast", "accurate"], help="U-Net++ setting for ONNX")
    ex.add_argument("--level", type=int, choices=[1, 2, 3, 4])
    ex.add_argument("--safetensors", help="write a weights-only copy (no optimizer state)")
    ex.add_argument("--fp16", action="store_true", help="with --safetensors: fp16 storage")
    ex.add_argument("--pretrained-dir", help="smp models: smp's save_pretrained folder")
    ex.set_defaults(func=cmd_export)
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
