"""``python -m segdemo eval``, ``compare`` and ``report``: numbers for checkpoints."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from segdemo import limits
from segdemo.config import DEFAULT_RESAMPLES, DEFAULT_SEED, int_in
from segdemo.files import check_output_folder
from segdemo.geometry import DEFAULT_POLICY, POLICIES, POLICY_HELP
from segdemo.shift import SHIFTS

_SETTING = re.compile(r"^(fast|accurate)(?::L?([1-9]\d?))?$")
MAX_BATCH = limits.CLI_MAX_BATCH
MAX_RESAMPLES = limits.CLI_MAX_RESAMPLES
SEED_RANGE = limits.CLI_SEED_RANGE
LEVEL_RANGE = limits.CLI_LEVEL_RANGE


def checkpoint_spec(text: str) -> tuple[str, str | None, int | None]:
    """``FILE`` or ``FILE@MODE[:LEVEL]`` (``unetpp.safetensors@fast:3``) -> (path, mode,
    level); no suffix means the default setting. A file that exists is itself, ``@`` in
    its name or not; otherwise the text splits at its last ``@`` if what follows is a
    setting."""
    if Path(text).exists():
        return text, None, None
    path, at, suffix = text.rpartition("@")
    if not at:
        return text, None, None
    match = _SETTING.match(suffix)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a file, and {suffix!r} is not a U-Net++ setting: one looks like "
            "FILE@fast:3 or FILE@accurate (deepest level)"
        )
    return path, match.group(1), None if match.group(2) is None else int(match.group(2))


def _progress_bar(quiet: bool, label: str = "eval"):
    """A ``progress(done, total)`` callback drawing one tqdm bar per pass (none if quiet)."""
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, unit="img", desc=label)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def _ci(interval, digits: int = 4) -> str:
    return "-" if interval is None else f"{interval[0]:.{digits}f}-{interval[1]:.{digits}f}"


def _value(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cmd_eval(args) -> int:
    from segdemo.evaluate import evaluate_checkpoint
    from segdemo.tta import TTA

    storing = args.store or args.store_into
    if storing and (args.mode or args.level or TTA.parse(args.tta).enabled or args.shift):
        raise ValueError(
            "--store keeps the checkpoint's plain figure: leave out --mode, --level, --tta "
            "and --shift"
        )
    if storing and not args.ckpt.endswith(".safetensors"):
        raise ValueError(f"--store needs a .safetensors checkpoint, not {args.ckpt}")
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
        engine=args.engine,
        progress=_progress_bar(args.json),
        resamples=args.resamples,
        seed=args.seed,
        per_image=args.per_image,
        tta=TTA.parse(args.tta),
        shift=args.shift,
        geometry_policy=args.geometry,
    )
    if args.store or args.store_into:
        from segdemo.evaluate import store_evaluation

        stored = store_evaluation(args.ckpt, result, args.max_items, args.store_into)
        print(f"stored in {stored}", file=sys.stderr)
    if args.json:
        result = {k: v for k, v in result.items() if k != "confusion_matrix" or args.confusion}
        print(json.dumps(result, indent=2))
        return 0
    shifted = f", shifted: {args.shift}" if args.shift else ""
    if args.geometry != DEFAULT_POLICY:
        shifted += f", geometry {args.geometry}"
    print(f"{result['model']} on {args.data} ({args.split}, {result['images']} images{shifted})")
    interval = f" (95% CI {_ci(result.get('miou_ci95'))})" if "miou_ci95" in result else ""
    print(f"  mIoU {result['miou']:.4f}{interval}   pixel accuracy {result['pixel_accuracy']:.4f}")
    print(f"  {len(result['counted_classes'])} classes counted in the mean (Cityscapes mIoU)")
    class_ci = result.get("per_class_iou_ci95", {})
    for name, iou in result["per_class_iou"].items():
        ci = f"  ({_ci(class_ci.get(name), 3)})" if class_ci.get(name) else ""
        print(f"  {name:<14} {'  -   ' if iou is None else f'{iou:.4f}'}{ci}")
    if len(result["per_class_iou"]) == 2:  # a binary label set: the KITTI road metrics
        name = list(result["per_class_iou"])[1]
        scores = {
            k: result[f"per_class_{k}"].get(name) for k in ("iou", "precision", "recall", "f1")
        }
        print("  " + name + ": " + ", ".join(
            f"{k if k != 'iou' else 'IoU'} {'-' if v is None else f'{v:.4f}'}"
            for k, v in scores.items()
        ))  # fmt: skip
    for mode, levels in result.get("per_level", {}).items():
        cells = "  ".join(f"L{k} {m['miou']:.4f}" for k, m in levels.items())
        print(f"  {mode:<9} {cells}")
    for view, m in result.get("views", {}).items():
        interval = f" (95% CI {_ci(m.get('miou_ci95'))})" if m.get("miou_ci95") else ""
        print(f"  {view:<9} mIoU {m['miou']:.4f}{interval}")
    if result.get("per_image"):
        print("  per image: mIoU, pixel accuracy, file")
    for row in result.get("per_image", []):
        print(f"  {_value(row['miou'])}  {_value(row['pixel_accuracy'])}  {row['path']}")
    return 0


def cmd_compare(args) -> int:
    from segdemo.evaluate import compare_checkpoints
    from segdemo.tta import TTA

    results = {}
    for shift in args.shift:
        results[shift or "plain"] = compare_checkpoints(
            args.ckpt,
            args.data,
            split=args.split,
            fmt=args.format,
            resamples=args.resamples,
            seed=args.seed,
            per_image=args.per_image,
            batch_size=args.batch,
            max_items=args.max_items,
            device=args.device,
            precision=args.precision,
            engine=args.engine,
            progress=_progress_bar(args.json, "eval"),
            tta=TTA.parse(args.tta),
            shift=shift,
            policies=args.geometry,
        )
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[next(iter(results))], indent=2))
        return 0
    for k, result in enumerate(results.values()):
        print(*([""] if k else []), *compare_lines(result), sep="\n")
    if len(results) > 1 or any("views" in r for r in results.values()):
        print("", *side_by_side_lines(results), sep="\n")
    return 0


def _conditions(results: dict) -> list[tuple[str, dict]]:
    """Each column of the side-by-side table: a shift's result, or one per view."""
    columns = []
    for name, result in results.items():
        if "views" in result:
            columns += [(view, r) for view, r in result["views"].items()]
        else:
            columns.append((name, result))
    return columns


def side_by_side_lines(results: dict) -> list[str]:
    """One Markdown table of every model's mIoU (95% interval) under every condition
    (plain val, a shift, each view of the geometry shift), then each model's paired
    difference from the reference in points, per condition."""
    columns = _conditions(results)
    first = next(iter(results.values()))
    head = "| model | " + " | ".join(name for name, _ in columns) + " |"
    lines = [
        f"mIoU (95% CI) per condition, {first['images']} items per column for plain and "
        "camera, one per image per view for geometry:",
        "",
        head,
        "|---" * (len(columns) + 1) + "|",
    ]
    for k, model in enumerate(first["models"]):
        cells = []
        for _, result in columns:
            m = result["models"][k]
            cells.append(f"{m['miou']:.3f} ({_ci(m['miou_ci95'], 3)})")
        lines.append(f"| {model['name']} | " + " | ".join(cells) + " |")
    for k, comparison in enumerate(first["comparisons"]):
        cells = []
        for _, result in columns:
            c = result["comparisons"][k]
            low, high = (100 * v for v in c["miou_diff_ci95"])
            cells.append(f"{100 * c['miou_diff']:+.1f} ({low:+.1f} to {high:+.1f})")
        lines.append(
            f"| {comparison['name']} - {comparison['reference']}, points | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def compare_lines(result: dict) -> list[str]:
    """The text ``compare`` prints for :func:`segdemo.evaluate.compare_checkpoints`' dict."""
    data = result["dataset"]
    boot = result["bootstrap"]
    width = max(len(m["name"]) for m in result["models"]) + 2
    shifted = f", shifted: {result['shift']}" if result.get("shift") else ""
    if result.get("geometry", [DEFAULT_POLICY]) != [DEFAULT_POLICY]:
        shifted += f", geometry {', '.join(result['geometry'])}"
    lines = [
        f"{len(result['models'])} models on {data['root']} ({data['split']}, "
        f"{result['images']} images{shifted}, the same for all); 95% intervals from "
        f"{boot['resamples']} bootstrap resamples of the images (seed {boot['seed']})",
        "",
        f"  {'model':<{width}} {'mIoU':>7}  {'95% CI':<14} {'pixel acc.':>10}  95% CI",
    ]
    for m in result["models"]:
        lines.append(
            f"  {m['name']:<{width}} {m['miou']:>7.4f}  {_ci(m['miou_ci95']):<14} "
            f"{m['pixel_accuracy']:>10.4f}  {_ci(m['pixel_accuracy_ci95'])}"
        )
    for c in result["comparisons"]:
        low, high = (100 * v for v in c["miou_diff_ci95"])
        lines += [
            "",
            f"{c['name']} against {c['reference']} (paired, the same resamples):",
            f"  {c['sentence']}",
            f"  mIoU {100 * c['miou_diff']:+.2f} points (95% CI {low:+.2f} to {high:+.2f}); "
            f"the sign flips in {100 * c['miou_diff_sign_flip']:.1f}% of resamples",
            "  per class, points (95% CI):",
        ]
        for name, diff in c["per_class_iou_diff"].items():
            ci = c["per_class_iou_diff_ci95"][name]
            if diff is None:
                lines.append(f"    {name:<14}   -")
            else:
                lines.append(
                    f"    {name:<14} {100 * diff:+6.1f}  ({100 * ci[0]:+.1f} to {100 * ci[1]:+.1f})"
                )
    if result.get("per_image"):
        names = ", ".join(m["name"] for m in result["models"])
        lines += ["", f"mIoU per image ({names}), file:"]
    for row in result.get("per_image", []):
        cells = "  ".join(f"{_value(row['miou'][m['name']])}" for m in result["models"])
        lines.append(f"  {cells}  {row['path']}")
    return lines


def cmd_report(args) -> int:
    from segdemo.report import build_report

    check_output_folder(args.out)
    report = build_report(
        args.ckpt, args.data, args.out, split=args.split, max_items=args.max_items,
        repeats=args.repeats, qualitative=args.qualitative, with_photos=args.with_photos,
        resamples=args.resamples, seed=args.seed,
    )  # fmt: skip
    print(f"wrote {', '.join(report['figures'])}, tables.md and results.json to {args.out}")
    return 0


def add_tta_argument(parser) -> None:
    parser.add_argument(
        "--tta", metavar="SPEC",
        help="test-time augmentation: 'flip' and scale factors, e.g. 'flip,0.75,1.25', or "
        "'default' (that one); probabilities are averaged over the views",
    )  # fmt: skip


def add_engine_argument(parser) -> None:
    parser.add_argument(
        "--engine", choices=["torch", "openvino", "auto"], default="torch",
        help="what runs the model: torch (default), openvino (the CPU, 1.5-6x faster here; "
        "graphs are converted once and cached) or auto (openvino on the CPU when installed); "
        "see docs/benchmarks.md",
    )  # fmt: skip


_SHIFT_HELP = (
    "camera: the val photos as another camera in other light would take them (colour "
    "temperature, tone curve, exposure, defocus, sensor noise, lower resolution, JPEG); "
    "geometry: each photo cut to 4:3, 16:9, 1:1 and 3.3:1 at 0.5x-2x resolution, scored per "
    "shape; the same draw per image for every model; see docs/evaluation.md"
)


def add_shift_argument(parser) -> None:
    parser.add_argument("--shift", choices=SHIFTS, help=_SHIFT_HELP)


def _shift_list(text: str) -> list[str | None]:
    """``none,camera,geometry`` -> ``[None, "camera", "geometry"]``."""
    shifts = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in shifts if t not in ("none", *SHIFTS)]
    if unknown or not shifts:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give shifts from none, {', '.join(SHIFTS)}, separated by commas"
        )
    return [None if t == "none" else t for t in dict.fromkeys(shifts)]


def _policy_list(text: str) -> list[str]:
    """``squeeze,slide`` -> ``["squeeze", "slide"]``."""
    policies = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in policies if t not in POLICIES]
    if unknown or not policies:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give geometry policies from {', '.join(POLICIES)}, separated by commas"
        )
    return list(dict.fromkeys(policies))


GEOMETRY_HELP = (
    "how a photo is sized for the model: "
    + "; ".join(f"{name}: {text}" for name, text in POLICY_HELP.items())
    + f" (default {DEFAULT_POLICY}; see docs/evaluation.md)"
)


def add_geometry_argument(parser) -> None:
    parser.add_argument("--geometry", choices=POLICIES, default=DEFAULT_POLICY,
                        metavar="POLICY", help=GEOMETRY_HELP)  # fmt: skip


def _add_bootstrap(parser, paired: bool = False) -> None:
    """``--resamples`` and ``--seed``; a paired comparison needs at least one resample."""
    parser.add_argument("--resamples", type=int_in(int(paired), MAX_RESAMPLES),
                        default=DEFAULT_RESAMPLES,
                        help="bootstrap resamples of the images for the 95%% intervals"
                             + ("" if paired else " (0: no intervals)"))  # fmt: skip
    parser.add_argument("--seed", type=int_in(*SEED_RANGE), default=DEFAULT_SEED,
                        help="bootstrap seed")  # fmt: skip


def add_parsers(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a checkpoint on a dataset split")
    ev.add_argument("--ckpt", required=True)
    ev.add_argument("--data", default="synthetic")
    ev.add_argument("--format", default="auto")
    ev.add_argument("--split", default="val", choices=["train", "val"])
    ev.add_argument("--mode", choices=["fast", "accurate"], help="U-Net++ only")
    ev.add_argument(
        "--level", type=int_in(*LEVEL_RANGE), help="U-Net++ pruning level (default: the deepest)"
    )
    ev.add_argument("--batch", type=int_in(1, MAX_BATCH), default=8)
    ev.add_argument("--max-items", type=int_in(1), help="evaluate on the first N images")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    add_engine_argument(ev)
    _add_bootstrap(ev)
    ev.add_argument("--per-image", action="store_true",
                    help="one row per image: path, mIoU and pixel accuracy")  # fmt: skip
    ev.add_argument("--json", action="store_true")
    add_tta_argument(ev)
    add_shift_argument(ev)
    add_geometry_argument(ev)
    ev.add_argument("--confusion", action="store_true", help="include the confusion matrix in JSON")
    ev.add_argument("--store", action="store_true",
                    help="write the result into the checkpoint's metadata (metrics.evaluated, "
                    "with the split and image count; the weights stay byte-identical), so the "
                    "app shows this figure and what it was measured on")  # fmt: skip
    ev.add_argument(
        "--store-into",
        metavar="PATH",
        help="like --store, but into a copy of the checkpoint at PATH",
    )
    ev.set_defaults(func=cmd_eval)

    cp = sub.add_parser(
        "compare",
        help="evaluate checkpoints on the same images and compare each with the first",
        description="Evaluate every checkpoint once on the same images; print each model's "
        "mIoU with its 95%% bootstrap interval and each model against the first: the paired "
        "difference with its interval, per class, in one sentence.",
    )
    cp.add_argument("--ckpt", action="append", required=True, type=checkpoint_spec,
                    metavar="FILE[@MODE[:LEVEL]]",
                    help="repeat for each model; a U-Net++ setting such as FILE@fast:3 makes "
                         "a model of its own (default: accurate, deepest level)")  # fmt: skip
    cp.add_argument("--data", default="synthetic")
    cp.add_argument("--format", default="auto")
    cp.add_argument("--split", default="val", choices=["train", "val"])
    cp.add_argument("--batch", type=int_in(1, MAX_BATCH), default=8)
    cp.add_argument("--max-items", type=int_in(1), help="evaluate on the first N images")
    cp.add_argument("--device", default="auto")
    cp.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    add_engine_argument(cp)
    _add_bootstrap(cp, paired=True)
    cp.add_argument("--per-image", action="store_true", help="each model's mIoU per image")
    cp.add_argument("--json", action="store_true")
    add_tta_argument(cp)
    cp.add_argument("--shift", type=_shift_list, default=[None], metavar="SHIFT[,SHIFT]",
                    help=_SHIFT_HELP + "; several (e.g. none,camera,geometry) print a table "
                    "of every condition side by side")  # fmt: skip
    cp.add_argument("--geometry", type=_policy_list, default=[DEFAULT_POLICY],
                    metavar="POLICY[,POLICY]",
                    help=GEOMETRY_HELP + "; several score every checkpoint under each, the "
                    "first as the reference")  # fmt: skip
    cp.set_defaults(func=cmd_compare)

    rp = sub.add_parser("report", help="evaluate checkpoints and write the results tables/figures")
    rp.add_argument("--ckpt", action="append", required=True, help="repeat for each model")
    rp.add_argument("--data", default="synthetic")
    rp.add_argument("--split", default="val", choices=["train", "val"])
    rp.add_argument("--max-items", type=int_in(1), help="evaluate on the first N images")
    rp.add_argument(
        "--repeats", type=int_in(1, 10_000), default=20, help="latency repeats per setting"
    )
    rp.add_argument(
        "--qualitative", type=int_in(0, 100), default=6, help="rows in the qualitative grid"
    )
    rp.add_argument("--with-photos", action="store_true",
                    help="add the photos to the qualitative grid (check the data's licence "
                         "before publishing it)")  # fmt: skip
    _add_bootstrap(rp)
    rp.add_argument("--out", default="docs/results")
    rp.set_defaults(func=cmd_report)
