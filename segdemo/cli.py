"""Command line: ``python -m segdemo {data,train,eval,predict,bench,export,report} ...``.

Every command has ``--help``. Errors a user can fix (a bad folder, a bad checkpoint, a bad
image) print one line starting with ``error:`` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    """``"256x512"`` -> (256, 512) as (H, W); a single number means square."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like 256x512 (HxW), got {text!r}"
        ) from None
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


# Arguments that may change when a run is resumed; all others define the run itself.
_CONTINUATION_FIELDS = (
    "epochs", "max_steps", "device", "precision", "workers", "out", "log_every", "val_max_items",
)  # fmt: skip
_ARG_TO_FIELD = {"format": "data_format", "batch": "batch_size"}


def _train_config_values(args) -> dict:
    """TrainConfig fields from the arguments the user actually typed (others are absent)."""
    given = vars(args)
    values: dict = {}
    model_kwargs = dict(given.get("model_arg") or [])
    for key in ("base_width", "encoder", "deep_supervision"):
        if key in given:
            model_kwargs[key] = given[key]
    if "encoder_weights" in given:
        model_kwargs["encoder_weights"] = (
            None if given["encoder_weights"] == "none" else given["encoder_weights"]
        )
    if model_kwargs:
        values["model_kwargs"] = model_kwargs
    if "synthetic_length" in given:
        values["data_options"] = {"length": given["synthetic_length"]}
    if given.get("no_augment"):
        values["augment"] = False
    for key in (
        "data", "format", "label_set", "model", "epochs", "max_steps", "size", "batch", "lr",
        "weight_decay", "schedule", "warmup_steps", "loss", "seed", "device", "precision",
        "workers", "out", "log_every", "val_max_items",
    ):  # fmt: skip
        if key in given:
            values[_ARG_TO_FIELD.get(key, key)] = given[key]
    return values


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
    from segdemo.checkpoints import read_metadata
    from segdemo.train import TrainConfig, fit

    values = _train_config_values(args)
    values.setdefault("out", str(Path("runs") / values.get("model", TrainConfig.model)))
    if args.resume:
        last = Path(values["out"]) / "last.safetensors"
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        saved = read_metadata(last)["train_config"]
        changed = [
            f"--{k.replace('_', '-')}"
            for k, v in values.items()
            if k not in _CONTINUATION_FIELDS and json.dumps(v) != json.dumps(saved.get(k))
        ]
        if changed:
            raise ValueError(
                f"cannot resume {values['out']} with other settings ({', '.join(changed)}); "
                "a resumed run keeps its data, model and schedule"
            )
        values = {**saved, **values}
    config = TrainConfig.from_dict(values)
    callbacks = [] if args.quiet else [_ConsoleProgress()]
    result = fit(config, callbacks=callbacks, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary line, not one per rank
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


# --------------------------------------------------------------------------- report


def cmd_report(args) -> int:
    from segdemo.report import build_report

    report = build_report(
        args.ckpt, args.data, args.out, split=args.split, max_items=args.max_items,
        repeats=args.repeats, qualitative=args.qualitative, with_photos=args.with_photos,
    )  # fmt: skip
    print(f"wrote {', '.join(report['figures'])}, tables.md and results.json to {args.out}")
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
    inspect.add_argument(
        "--format", default="auto", help="pairs, cityscapes, kitti, folder, synthetic"
    )
    inspect.add_argument("--label-set", default="cityscapes19")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=cmd_data_inspect)

    train = sub.add_parser(
        "train",
        help="train a model; checkpoints land in --out",
        description="Train a model. Unset options take the TrainConfig defaults shown.",
        argument_default=argparse.SUPPRESS,
    )
    train.add_argument("--data", help="dataset folder or 'synthetic' (default)")
    train.add_argument("--format", help="dataset format (default: detect)")
    train.add_argument("--label-set", help="cityscapes19 (default) or road")
    train.add_argument("--model", help="unet (default), unetpp, unetpp_ds, smp_unet, smp_unetpp")
    train.add_argument("--base-width", type=int, help="scratch models: channels at level 0")
    train.add_argument("--encoder", help="smp models: encoder name, e.g. resnet18")
    train.add_argument("--encoder-weights", choices=["imagenet", "none"], help="smp encoders")
    ds = train.add_mutually_exclusive_group()
    ds.add_argument("--deep-supervision", dest="deep_supervision", action="store_true")
    ds.add_argument("--no-deep-supervision", dest="deep_supervision", action="store_false")
    train.add_argument("--model-arg", type=_model_arg, action="append", metavar="KEY=VALUE",
                       help="any other model keyword argument (repeatable)")  # fmt: skip
    train.add_argument("--epochs", type=int, help="default 10")
    train.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    train.add_argument("--size", type=_size, help="HxW, e.g. 256x256 (default 128x256)")
    train.add_argument("--batch", type=int, help="default 8")
    train.add_argument("--lr", type=float, help="AdamW learning rate (default 2e-3)")
    train.add_argument("--weight-decay", type=float, help="default 1e-4")
    train.add_argument("--schedule", choices=["poly", "cosine"], help="default poly")
    train.add_argument("--warmup-steps", type=int, help="default 100")
    train.add_argument("--loss", choices=["ce", "dice", "ce_dice"], help="default ce_dice")
    train.add_argument("--no-augment", action="store_true", help="turn off flips/crops/jitter")
    train.add_argument("--seed", type=int, help="default 0")
    train.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    train.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="default auto")
    train.add_argument("--workers", type=int, help="DataLoader worker processes (default 1)")
    train.add_argument("--out", help="run folder (default runs/<model>)")
    train.add_argument("--resume", action="store_true", default=False,
                       help="continue from --out/last.safetensors")  # fmt: skip
    train.add_argument("--log-every", type=int, help="steps between progress events (default 10)")
    train.add_argument("--val-max-items", type=int, help="evaluate on the first N val images")
    train.add_argument("--synthetic-length", type=int, help="images in the synthetic train split")
    train.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
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
