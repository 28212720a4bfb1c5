"""``python -m segdemo predict`` and ``export``: using a checkpoint."""

from __future__ import annotations

import sys

from segdemo.cli.evaluation import (
    LEVEL_RANGE,
    add_engine_argument,
    add_geometry_argument,
    add_tta_argument,
)
from segdemo.config import float_in, int_in
from segdemo.files import check_output_file, check_output_folder


def cmd_predict(args) -> int:
    from segdemo import viz
    from segdemo.batch import OUTPUT_KINDS, iter_inputs, output_stems, prediction_files
    from segdemo.checkpoints import load_checkpoint
    from segdemo.geometry import TrainingFrames
    from segdemo.images import load_image
    from segdemo.inference import Segmenter, prepare_model
    from segdemo.models import pruning_levels
    from segdemo.tta import TTA

    out = check_output_folder(args.out)
    paths, keep = iter_inputs(args.images)
    stems = output_stems(paths, keep)
    ckpt = load_checkpoint(args.ckpt)
    model, device, precision = prepare_model(ckpt.model, args.device, args.precision, args.engine)
    mode = level = None
    if args.mode or args.level:
        levels = pruning_levels(model)
        if not levels:
            raise ValueError(f"{ckpt.path.name} holds a {ckpt.metadata['model']} without levels")
        mode, level = args.mode or "accurate", args.level or levels
    segmenter = Segmenter(ckpt.path.stem, model, ckpt.input_size, ckpt.label_set, device,
                          precision, mode, level, TTA.parse(args.tta), args.geometry,
                          TrainingFrames.of_checkpoint(ckpt.metadata))  # fmt: skip
    segmenter.forward_kwargs()  # a level the model does not have fails here, before any work
    failures = 0
    for image_path, stem in zip(paths, stems, strict=True):
        try:
            image = load_image(image_path)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        mask = segmenter(image)
        files = prediction_files(image, mask, ckpt.label_set, args.alpha)
        (out / stem).parent.mkdir(parents=True, exist_ok=True)
        for kind in OUTPUT_KINDS:
            (out / f"{stem}_{kind}.png").write_bytes(files[kind])
        legend = viz.legend_entries(mask, ckpt.label_set)
        classes = ", ".join(f"{e['name']} {100 * e['fraction']:.0f}%" for e in legend[:5])
        print(f"{image_path}: {classes} -> {out / stem}_{{{','.join(OUTPUT_KINDS)}}}.png")
    return 2 if failures else 0


def cmd_export(args) -> int:
    from segdemo import export

    if not (args.onnx or args.openvino or args.safetensors or args.pretrained_dir):
        raise ValueError(
            "export needs at least one of --onnx, --openvino, --safetensors, --pretrained-dir"
        )
    for flag, target in (("--onnx", args.onnx), ("--safetensors", args.safetensors)):
        if target:
            check_output_file(target, flag)
    for flag, folder in (("--openvino", args.openvino), ("--pretrained-dir", args.pretrained_dir)):
        if folder:
            check_output_folder(folder, flag)
    if args.safetensors:
        path = export.export_safetensors(args.ckpt, args.safetensors, fp16=args.fp16)
        print(f"wrote {path}")
    if args.onnx:
        path = export.export_onnx(args.ckpt, args.onnx, mode=args.mode, level=args.level)
        print(f"wrote {path}")
    if args.openvino:
        path = export.export_openvino(args.ckpt, args.openvino, mode=args.mode, level=args.level)
        print(f"wrote {path} and {path.with_suffix('.bin').name}")
    if args.pretrained_dir:
        path = export.export_smp_pretrained(args.ckpt, args.pretrained_dir)
        print(f"wrote {path}")
    return 0


def add_parsers(sub) -> None:
    pr = sub.add_parser(
        "predict",
        help="segment photos or folders of photos: train-id PNG, colour mask, overlay, legend",
        description="Segment photos. A folder argument means every photo under it, its "
        "sub-folders mirrored in --out. Each photo's outputs are named after it; photos whose "
        "names clash (a/x.jpg and b/x.png) take their folder (a/x, b/x) or suffix (x_jpg) into "
        "the name, so no photo's outputs overwrite another's.",
    )
    pr.add_argument("--ckpt", required=True)
    pr.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    pr.add_argument("--out", required=True)
    pr.add_argument("--mode", choices=["fast", "accurate"])
    pr.add_argument(
        "--level", type=int_in(*LEVEL_RANGE), help="U-Net++ pruning level (default: the deepest)"
    )
    pr.add_argument("--alpha", type=float_in(0.0, 1.0), default=0.5,
                    help="overlay opacity, 0 (photo only) to 1 (mask only)")  # fmt: skip
    pr.add_argument("--device", default="auto")
    pr.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    add_engine_argument(pr)
    add_tta_argument(pr)
    add_geometry_argument(pr)
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export", help="export a checkpoint: ONNX, OpenVINO IR, fp16 safetensors, smp layout"
    )
    ex.add_argument("--ckpt", required=True)
    ex.add_argument("--onnx", help="write an ONNX file here (needs onnx)")
    ex.add_argument("--openvino", metavar="DIR",
                    help="write OpenVINO IR (.xml + .bin, fp32) into DIR (needs openvino)")  # fmt: skip
    ex.add_argument("--mode", choices=["fast", "accurate"],
                    help="U-Net++ setting for ONNX/OpenVINO (the graph is pruned to it)")  # fmt: skip
    ex.add_argument(
        "--level", type=int_in(*LEVEL_RANGE), help="U-Net++ pruning level (default: the deepest)"
    )
    ex.add_argument("--safetensors", help="write a weights-only copy (no optimizer state)")
    ex.add_argument("--fp16", action="store_true", help="with --safetensors: fp16 storage")
    ex.add_argument("--pretrained-dir", help="smp models: smp's save_pretrained folder")
    ex.set_defaults(func=cmd_export)
