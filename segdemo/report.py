"""The results report: every number in ``docs/results.md`` comes from one command.

``python -m segdemo report --ckpt A --ckpt B --data ROOT --out docs/results`` evaluates each
checkpoint on the whole split (every number with its 95% bootstrap interval over the
images), compares every model with the first on the same images (paired differences, as
``python -m segdemo compare``), times every U-Net++ level at the checkpoint's working size,
and writes ``results.json`` (all numbers), ``tables.md`` (the markdown tables) and PNG
figures: per-class IoU, the pruning trade-off, a qualitative grid and training curves.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from segdemo import runtime, stats, viz  # noqa: E402
from segdemo.bench import interleaved_median_ms  # noqa: E402
from segdemo.checkpoints import check_checkpoint, load_checkpoint  # noqa: E402
from segdemo.data import open_dataset  # noqa: E402
from segdemo.evaluate import (  # noqa: E402
    Evaluation,
    checkpoint_name,
    compare_evaluations,
    evaluate_per_image,
    setting_name,
)
from segdemo.inference import predict_logits, prepare_model, segment_image  # noqa: E402
from segdemo.models import inference_settings, model_info, pruning_levels  # noqa: E402


def measure_checkpoint(
    path: Path,
    data: str,
    split: str,
    max_items: int | None,
    repeats: int,
    log: Callable,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
) -> tuple[dict[str, Any], Evaluation]:
    """Metrics on the split (with 95% bootstrap intervals) plus params, GFLOPs and latency
    for every setting of one model; and the per-image evaluation, for paired comparisons.

    For a U-Net++, each setting also carries its paired difference from fast mode at the
    deepest level (``miou_diff_vs_fast_deepest`` and its ``_ci95``): the cost of pruning.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt.metadata
    dataset = open_dataset(
        data, split, label_set=meta["label_set"]["name"], size=None,
        normalization=ckpt.normalization,
    )  # fmt: skip
    model, device, precision = prepare_model(ckpt.model, "auto", "auto")
    log(f"evaluating {path} on {len(dataset) if max_items is None else max_items} images")
    evaluation = evaluate_per_image(
        model, dataset, input_size=ckpt.input_size, device=device, precision=precision,
        max_items=max_items,
    )  # fmt: skip
    evaluation.info = {"checkpoint": str(path), "model": meta["model"]}
    metrics = evaluation.summary(resamples=resamples, seed=seed)
    x = torch.randn(1, 3, *ckpt.input_size, generator=torch.Generator().manual_seed(0))
    chosen = inference_settings(model)
    deepest = ("fast", pruning_levels(model))
    kwargs = [{} if mode is None else {"mode": mode, "level": level} for mode, level in chosen]
    latency = interleaved_median_ms(
        [lambda kw=kw: predict_logits(model, x, device, precision, **kw) for kw in kwargs],
        repeats, warmup=3,
    )  # fmt: skip
    settings = []
    for (mode, level), kw, ms in zip(chosen, kwargs, latency, strict=True):
        info = model_info(model, ckpt.input_size, **kw)
        scored = metrics if mode is None else metrics["per_level"][mode][str(level)]
        miou, acc = scored["miou"], scored["pixel_accuracy"]
        row = {"mode": mode, "level": level, "params": info["params"], "gflops": info["gflops"],
               "ms": ms, "miou": miou, "miou_ci95": scored.get("miou_ci95"),
               "pixel_accuracy": acc}  # fmt: skip
        if mode is not None and resamples and (mode, level) != deepest:
            diff = stats.paired_difference(
                evaluation.per_image((mode, level)), evaluation.per_image(deepest),
                resamples=resamples, seed=seed,
            )  # fmt: skip
            row["miou_diff_vs_fast_deepest"] = diff["miou_diff"]
            row["miou_diff_vs_fast_deepest_ci95"] = diff["miou_diff_ci95"]
        settings.append(row)
        log(f"  {mode or 'default'} L{level or '-'}: mIoU {miou:.4f}, {ms:.1f} ms")
    train_state = meta.get("train_state") or {}
    result = {
        "name": checkpoint_name(path),
        "path": str(path),
        "model": meta["model"],
        "model_kwargs": meta.get("model_kwargs", {}),
        "input_size": meta["input_size"],
        "epochs": meta.get("epoch"),
        "train_config": meta.get("train_config"),
        "history": meta.get("history") or train_state.get("history") or [],
        "metrics": {k: v for k, v in metrics.items() if k != "confusion_matrix"},
        "settings": settings,
        "device": runtime.describe(device, precision),
    }
    return result, evaluation


def headline_settings(evaluation: Evaluation) -> list[tuple[str | None, int | None]]:
    """The settings a model is compared at: its only one, or for a U-Net++ accurate and
    fast at the deepest level."""
    if evaluation.default[0] is None:
        return [evaluation.default]
    deepest = max(level for mode, level in evaluation.settings if mode is not None)
    return [("accurate", deepest), ("fast", deepest)]


def compare_models(
    results: list[dict], evaluations: list[Evaluation], resamples: int, seed: int
) -> dict[str, Any] | None:
    """Every model (a U-Net++ at accurate and at fast, deepest level) against the first
    model's default setting, on the same images, with paired intervals; None when there
    is nothing to compare or the models predict different label sets."""
    first = evaluations[0]
    if not resamples or any(e.class_names != first.class_names for e in evaluations):
        return None
    models = []
    for r, evaluation in zip(results, evaluations, strict=True):
        settings = headline_settings(evaluation)
        if r is results[0]:
            settings = [evaluation.default] + [s for s in settings if s != evaluation.default]
        for setting in settings:
            name = r["name"] if setting[0] is None else f"{r['name']} {setting_name(setting)}"
            while name in {m[0] for m in models}:
                name += "'"  # two checkpoints with one file name
            models.append((name, evaluation, setting))
    if len(models) < 2:
        return None
    return compare_evaluations(models, resamples=resamples, seed=seed)


def _per_class_figure(results: list[dict], out: Path) -> None:
    names = list(results[0]["metrics"]["per_class_iou"])
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        values = [r["metrics"]["per_class_iou"].get(n) or 0.0 for n in names]
        intervals = r["metrics"].get("per_class_iou_ci95") or {}
        # Error bars: the 95% bootstrap interval of each class IoU (none where undefined).
        errors = np.array([
            [v - intervals[n][0], intervals[n][1] - v] if intervals.get(n) else [0.0, 0.0]
            for n, v in zip(names, values, strict=True)
        ]).T  # fmt: skip
        ax.bar(np.arange(len(names)) + i * width, values, width, yerr=errors, capsize=1.5,
               error_kw={"elinewidth": 0.8},
               label=f"{r['name']} (mIoU {r['metrics']['miou']:.3f})")  # fmt: skip
    ax.set_xticks(np.arange(len(names)) + width * (len(results) - 1) / 2, names, rotation=45,
                  ha="right")  # fmt: skip
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Per-class IoU on the validation split (bars: 95% bootstrap intervals)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _tradeoff_figure(results: list[dict], out: Path) -> bool:
    pruned = [r for r in results if r["settings"][0]["mode"] is not None]
    if not pruned:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # One colour per model; fast is round and solid, accurate square and dashed.
    for i, r in enumerate(pruned):
        for mode, marker, line in (("fast", "o", "-"), ("accurate", "s", "--")):
            rows = [s for s in r["settings"] if s["mode"] == mode]
            ax.plot([s["ms"] for s in rows], [s["miou"] for s in rows], line, color=f"C{i}",
                    alpha=0.5)  # fmt: skip
            ax.scatter([s["ms"] for s in rows], [s["miou"] for s in rows],
                       s=[30 + 300 * s["params"] / max(x["params"] for x in rows) for s in rows],
                       marker=marker, color=f"C{i}", label=f"{r['name']} {mode}", alpha=0.8)  # fmt: skip
            for s in rows:
                ax.annotate(f"L{s['level']}", (s["ms"], s["miou"]), textcoords="offset points",
                            xytext=(6, -4), fontsize=8)  # fmt: skip
    plain = [r for r in results if r["settings"][0]["mode"] is None]
    for i, r in enumerate(plain, start=len(pruned)):
        s = r["settings"][0]
        ax.scatter([s["ms"]], [s["miou"]], marker="^", s=120, color=f"C{i}", label=r["name"])
    ax.set_xlabel("latency, batch 1 (ms)")
    ax.set_ylabel("val mIoU")
    ax.set_title("U-Net++ pruning: accuracy against speed (point size ~ parameters)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def _curve_labels(result: dict) -> tuple[str, str]:
    """Legend labels of a run's loss and val curves, naming what makes them differ from
    other runs' (epochs that continue another checkpoint, a class-weighted loss, validation
    on the first N images only). The training config comes from the checkpoint: anything
    but the expected types is ignored, and a start checkpoint's name is shown only when it
    is short and plain (letters, digits, ``._+-``)."""
    config = result.get("train_config")
    config = config if isinstance(config, dict) else {}
    loss = val = result["name"]
    start = config.get("init_from")
    if isinstance(start, str) and start:
        stem = PurePath(start.replace("\\", "/")).stem
        start = stem if re.fullmatch(r"[\w.+-]{1,40}", stem, re.ASCII) else "a checkpoint"
        loss = val = f"{loss} (epochs after {start})"
    weighting = config.get("class_weighting")
    if isinstance(weighting, str) and weighting != "none":
        loss += " (class-weighted)"
    images = config.get("val_max_items")
    if isinstance(images, int) and not isinstance(images, bool) and images > 0:
        val += f" (first {images} val images)"
    return loss, val


def _curves_figure(results: list[dict], out: Path) -> bool:
    if not any(r["history"] for r in results):
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 5))
    for r in results:
        h = r["history"]
        if not h:
            continue
        loss_label, val_label = _curve_labels(r)
        a.plot([e["epoch"] for e in h], [e["train_loss"] for e in h], "o-", label=loss_label)
        b.plot([e["epoch"] for e in h], [e["val_miou"] for e in h], "o-", label=val_label)
    a.set_xlabel("epoch")
    a.set_ylabel("train loss")
    b.set_xlabel("epoch")
    b.set_ylabel("val mIoU")
    # Below the axes: the labels can be long (what makes a run's curves differ) and would
    # cover the curves inside them.
    for ax in (a, b):
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _qualitative_figure(
    paths: list[Path], results, data: str, split: str, n: int, out: Path, with_photos: bool
):
    loaded = [load_checkpoint(p) for p in paths]
    first = loaded[0]
    dataset = open_dataset(data, split, label_set=first.metadata["label_set"]["name"])
    label_set = dataset.label_set
    indices = np.linspace(0, len(dataset) - 1, n).round().astype(int)
    cols = (2 if with_photos else 1) + len(loaded)
    fig, axes = plt.subplots(n, cols, figsize=(2.3 * cols, 2.3 * n), squeeze=False)
    for row, index in enumerate(indices):
        image, mask = dataset.read_raw(int(index))
        panels = [("photo", image)] if with_photos else []
        panels.append(("ground truth", viz.colorize(mask, label_set)))
        for r, ckpt in zip(results, loaded, strict=True):
            model, device, precision = prepare_model(ckpt.model, "auto", "auto")
            pred = segment_image(model, image, ckpt.input_size, device, precision)
            panels.append((r["name"], viz.colorize(pred, label_set)))
        for col, (title, picture) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _ci(interval, digits: int = 3) -> str:
    return "" if not interval else f" ({interval[0]:.{digits}f}-{interval[1]:.{digits}f})"


def _points(interval) -> str:
    return "-" if not interval else f"{100 * interval[0]:+.2f} to {100 * interval[1]:+.2f}"


def _tables(results: list[dict], meta: dict, comparison: dict | None) -> str:
    names = list(results[0]["metrics"]["per_class_iou"])
    boot = results[0]["metrics"].get("bootstrap")
    lines = [
        f"Measured {meta['date']} on {meta['device']} ({meta['cpu']}), "
        f"{meta['images']} {meta['split']} images of `{meta['data']}`. mIoU by the Cityscapes "
        "definition; in brackets the 95% bootstrap interval over the images"
        + (f" ({boot['resamples']} resamples, seed {boot['seed']})." if boot else "."),
        "",
        "| model | mIoU (95% CI) | pixel acc. (95% CI) | params | GFLOPs | ms (batch 1) | epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["metrics"]
        default = r["settings"][-1] if r["settings"][0]["mode"] else r["settings"][0]
        lines.append(
            f"| {r['name']} ({r['model']}) | {m['miou']:.4f}{_ci(m.get('miou_ci95'))} | "
            f"{m['pixel_accuracy']:.4f}{_ci(m.get('pixel_accuracy_ci95'))} | "
            f"{default['params'] / 1e6:.2f}M | {default['gflops']:.2f} | {default['ms']:.1f} | "
            f"{r['epochs']} |"
        )
    if comparison and comparison["comparisons"]:
        lines += ["", f"Against {comparison['reference']}, on the same images (paired bootstrap):",
                  "", "| model | mIoU difference (points) | 95% CI | sign flips | in words |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for c in comparison["comparisons"]:
            lines.append(
                f"| {c['name']} | {100 * c['miou_diff']:+.2f} | {_points(c['miou_diff_ci95'])} | "
                f"{100 * c['miou_diff_sign_flip']:.1f}% | {c['sentence']} |"
            )
    lines += ["", "Per-class IoU (95% CI):", "",
              "| class | " + " | ".join(r["name"] for r in results) + " |",
              "|---|" + "---|" * len(results)]  # fmt: skip
    for n in names:
        cells = []
        for r in results:
            v = r["metrics"]["per_class_iou"].get(n)
            ci = (r["metrics"].get("per_class_iou_ci95") or {}).get(n)
            cells.append("-" if v is None else f"{v:.3f}{_ci(ci, 2)}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    for r in results:
        if r["settings"][0]["mode"] is None:
            continue
        deepest = max(s["level"] for s in r["settings"])
        top = next(s for s in r["settings"] if s["mode"] == "fast" and s["level"] == deepest)
        lines += ["", f"U-Net++ levels of {r['name']}:", "",
                  f"| mode | level | mIoU (95% CI) | vs fast L{deepest}, points (95% CI) | "
                  f"params | GFLOPs | ms | speed vs fast L{deepest} |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for s in r["settings"]:
            diff = s.get("miou_diff_vs_fast_deepest")
            versus = "reference" if s is top else "-" if diff is None else (
                f"{100 * diff:+.2f} ({_points(s.get('miou_diff_vs_fast_deepest_ci95'))})"
            )  # fmt: skip
            lines.append(
                f"| {s['mode']} | L{s['level']} | {s['miou']:.4f}{_ci(s.get('miou_ci95'))} | "
                f"{versus} | {s['params'] / 1e6:.3f}M | {s['gflops']:.2f} | {s['ms']:.1f} | "
                f"{top['ms'] / s['ms']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def build_report(
    checkpoints: list[str | Path],
    data: str,
    out_dir: str | Path,
    split: str = "val",
    max_items: int | None = None,
    repeats: int = 20,
    qualitative: int = 6,
    with_photos: bool = False,
    log: Callable[[str], None] = print,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
) -> dict[str, Any]:
    """Measure ``checkpoints`` on ``data`` and write the report files into ``out_dir``.

    Every metric carries its 95% bootstrap interval over the images (``resamples``,
    ``seed``; 0 resamples: none), and ``comparison`` in ``results.json`` holds every model
    against the first on the same images (``segdemo.evaluate.compare_evaluations``).
    The qualitative grid shows ground truth and predicted masks; ``with_photos`` adds the
    photos, for local use where the dataset's licence does not allow publishing them.
    """
    import datetime as dt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in checkpoints]
    for path in paths:  # every file refused before the first one is measured
        check_checkpoint(path)
    measured = [
        measure_checkpoint(p, data, split, max_items, repeats, log, resamples, seed) for p in paths
    ]
    results = [result for result, _ in measured]
    comparison = compare_models(results, [e for _, e in measured], resamples, seed)
    meta = {
        "date": dt.date.today().isoformat(),
        "device": results[0]["device"],
        "cpu": platform.processor() or platform.machine(),
        "data": str(data),
        "split": split,
        "images": results[0]["metrics"]["images"],
        "torch": torch.__version__,
    }
    _per_class_figure(results, out / "per_class_iou.png")
    figures = ["per_class_iou.png"]
    if _tradeoff_figure(results, out / "pruning_tradeoff.png"):
        figures.append("pruning_tradeoff.png")
    if _curves_figure(results, out / "training_curves.png"):
        figures.append("training_curves.png")
    if qualitative:
        _qualitative_figure(
            paths, results, data, split, qualitative, out / "qualitative.png", with_photos
        )
        figures.append("qualitative.png")
    (out / "tables.md").write_text(_tables(results, meta, comparison), encoding="utf-8")
    report = {"meta": meta, "results": results, "comparison": comparison, "figures": figures}
    (out / "results.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report
