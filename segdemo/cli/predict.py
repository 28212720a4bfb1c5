"""``python -m segdemo predict`` and ``export``: using a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_predict(args) -> int:
    import numpy as np
    from PIL import Image

    from segdemo import viz
    from segdemo.checkpoints import load_checkpoint
    from segdemo.images import load_image
    from segdemo.inference import (
        mask_to_size,
        predict_mask,
        prepare_model,
        preprocess,
        pruning_kwargs,
    )
    from segdemo.models import pruning_levels

    ckpt = load_checkpoint(args.ckpt)
    model, device, precision = prepare_model(ckpt.model, args.device, args.precision)
    label_set = ckpt.label_set
    forward_kwargs = {}
    if args.mode or args.level:
        if not pruning_levels(model):
            raise ValueError(f"{ckpt.path.name} holds a {ckpt.metadata['model']} without levels")
        forward_kwargs = pruning_kwargs(model, args.mode, args.level)
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


def add_parsers(sub) -> None:
    pr = sub.add_parser("predict", help="segment photos: colour mask, overlay, train-id PNG")
    pr.add_argument("--ckpt", required=True)
    pr.add_argument("images", nargs="+")
    pr.add_argument("--out", required=True)
    pr.add_argument("--mode", choices=["fast", "accurate"])
    pr.add_argument("--level", type=int, help="U-Net++ pruning level (default: the deepest)")
    pr.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="export a checkpoint: ONNX, fp16 safetensors, smp layout")
    ex.add_argument("--ckpt", required=True)
    ex.add_argument("--onnx", help="write an ONNX file here (needs onnx)")
    ex.add_argument("--mode", choices=["fast", "accurate"], help="U-Net++ setting for ONNX")
    ex.add_argument("--level", type=int, help="U-Net++ pruning level (default: the deepest)")
    ex.add_argument("--safetensors", help="write a weights-only copy (no optimizer state)")
    ex.add_argument("--fp16", action="store_true", help="with --safetensors: fp16 storage")
    ex.add_argument("--pretrained-dir", help="smp models: smp's save_pretrained folder")
    ex.set_defaults(func=cmd_export)
