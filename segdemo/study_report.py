"""The report of a study: every finished run evaluated on the val split, summarised over
seeds, compared with the reference model on the same images, and written as
``<dir>/<study>.md``, ``<dir>/<study>/study.json`` and figures.

What each number is:

- a run is scored with its final weights (``last.safetensors``, the end of the schedule),
  not its best epoch: picking the best epoch on the val split would be a selection on the
  very images that score it;
- every U-Net++ with deep supervision is scored at every (mode, level); its headline
  entries are accurate and fast mode at the deepest level, each compared like a model;
- "mean +- std" is over seeds (sample standard deviation);
- a paired difference against the reference is ``stats.pooled_paired_difference``: per
  seed, the entry minus the reference trained with the same seed, averaged over seeds;
  its 95% interval resamples the images (the same draws for every seed and model);
- parameters, GFLOPs and latency (batch 1, at the study's input size, on this machine)
  come from one seed's model; latencies are timed in interleaved rounds.
"""

from __future__ import annotations

import io
import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from segdemo import runtime, stats  # noqa: E402
from segdemo.bench import interleaved_median_ms  # noqa: E402
from segdemo.checkpoints import load_checkpoint  # noqa: E402
from segdemo.evaluate import Evaluation, evaluate_checkpoint_per_image  # noqa: E402
from segdemo.files import atomic_write_bytes  # noqa: E402
from segdemo.inference import predict_logits, prepare_model  # noqa: E402
from segdemo.models import forward_kwargs, inference_settings, model_info  # noqa: E402
from segdemo.runs import format_duration, training_seconds  # noqa: E402
from segdemo.study import Study, run_state  # noqa: E402
from segdemo.train import read_progress  # noqa: E402

Setting = tuple[str | None, int | None]


@dataclass(frozen=True)
class Entry:
    """One row of the study's tables: a model of the study at one setting."""

    model: str
    setting: Setting

    @property
    def name(self) -> str:
        mode, level = self.setting
        return self.model if mode is None else f"{self.model} ({mode} L{level})"

    @property
    def key(self) -> str:
        mode, level = self.setting
        return self.model if mode is None else f"{self.model}:{mode}:{level}"


def parse_entry(text: str, headline: dict[str, list[Entry]]) -> Entry:
    """``"unetpp"`` (its first headline entry) or ``"unetpp:fast:3"``."""
    model, *rest = text.split(":")
    if model not in headline:
        raise ValueError(f"the study has no model {model!r}; its models: {sorted(headline)}")
    if not rest:
        return headline[model][0]
    mode, level = rest[0], int(rest[1]) if len(rest) > 1 else None
    return Entry(model, (mode, level))


def _headline(evaluation: Evaluation, model: str) -> list[Entry]:
    settings = [s for s in evaluation.settings if s[0] is not None]
    if not settings:
        return [Entry(model, (None, None))]
    deepest = max(level for _, level in settings)
    return [Entry(model, ("accurate", deepest)), Entry(model, ("fast", deepest))]


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


def _road_scores(metrics: dict) -> dict[str, float | None]:
    """Road IoU, precision, recall and F1 of a binary ``road`` evaluation."""
    iou = metrics["per_class_iou"].get("road")
    precision = metrics["per_class_precision"].get("road")
    recall = metrics["per_class_recall"].get("road")
    f1 = metrics["per_class_f1"].get("road")
    return {"road_iou": iou, "road_precision": precision, "road_recall": recall, "road_f1": f1}


# --------------------------------------------------------------------------- measuring


def _evaluate_runs(study: Study, out: Path, data: str | None, max_items: int | None, log):
    """Per finished run: (model name, seed, Evaluation, train config, progress events)."""
    runs = []
    for model, seed in study.runs():
        run_dir = study.run_dir(out, model.name, seed)
        if run_state(run_dir) != "finished":
            log(f"skipping {model.name} seed {seed}: not finished")
            continue
        last = run_dir / "last.safetensors"
        config = load_checkpoint(last).metadata["train_config"]
        log(f"evaluating {model.name} seed {seed}")
        evaluation = evaluate_checkpoint_per_image(
            last, data or config["data"], "val", fmt=config.get("data_format", "auto"),
            data_options=dict(config.get("data_options") or {}), max_items=max_items,
        )  # fmt: skip
        runs.append((model.name, seed, evaluation, read_progress(run_dir)))
    return runs


def _costs(study: Study, out: Path, entries: list[Entry], repeats: int) -> dict[str, dict]:
    """Parameters, GFLOPs and latency of every entry and level, from one seed's model."""
    models, calls, keys = {}, [], []
    for model in study.models:
        for seed in study.seeds:
            path = study.run_dir(out, model.name, seed) / "last.safetensors"
            if path.is_file() and run_state(path.parent) == "finished":
                models[model.name] = load_checkpoint(path)
                break
    costs: dict[str, dict] = {}
    for name, ckpt in models.items():
        prepared, device, precision = prepare_model(ckpt.model, "auto", "auto")
        x = torch.randn(1, 3, *ckpt.input_size, generator=torch.Generator().manual_seed(0))
        for setting in inference_settings(prepared):
            entry = Entry(name, setting)
            kwargs = forward_kwargs(*setting)
            info = model_info(prepared, tuple(ckpt.input_size), **kwargs)
            costs[entry.key] = {"params": info["params"], "gflops": info["gflops"]}
            calls.append(
                lambda m=prepared, x=x, d=device, p=precision, kw=kwargs: predict_logits(
                    m, x, d, p, **kw
                )
            )
            keys.append(entry.key)
    for key, ms in zip(keys, interleaved_median_ms(calls, repeats, warmup=3), strict=True):
        costs[key]["latency_ms"] = ms
    return costs


def _entry_numbers(entry: Entry, per_seed: dict[int, Evaluation], road: bool) -> dict:
    seeds = {}
    for seed, evaluation in sorted(per_seed.items()):
        metrics = evaluation.metrics(entry.setting, resamples=0)
        row = {
            "miou": metrics["miou"],
            "pixel_accuracy": metrics["pixel_accuracy"],
            "per_class_iou": metrics["per_class_iou"],
        }
        if road:
            row.update(_road_scores(metrics))
        seeds[seed] = row
    summary = {}
    for key in ("miou", "pixel_accuracy", *(("road_iou", "road_f1") if road else ())):
        mean, std = _mean_std([row[key] for row in seeds.values()])
        summary[key] = mean
        summary[f"{key}_std"] = std
    names = next(iter(per_seed.values())).class_names
    summary["per_class_iou"] = {
        c: _mean_std([row["per_class_iou"][c] for row in seeds.values()])[0] for c in names
    }
    return {"name": entry.name, "key": entry.key, "model": entry.model,
            "mode": entry.setting[0], "level": entry.setting[1], **summary,
            "seeds": {str(s): row for s, row in seeds.items()}}  # fmt: skip


def _difference(a: Entry, b: Entry, evaluations: dict, names, resamples: int) -> dict | None:
    seeds = sorted(set(evaluations[a.model]) & set(evaluations[b.model]))
    if not seeds:
        return None
    pairs = [
        (evaluations[a.model][s].per_image(a.setting), evaluations[b.model][s].per_image(b.setting))
        for s in seeds
    ]
    diff = stats.pooled_paired_difference(pairs, class_names=names, resamples=resamples)
    diff["a"], diff["b"] = a.name, b.name
    diff["sentence"] = _sentence(a.name, b.name, diff)
    return diff


def _sentence(name_a: str, name_b: str, diff: dict) -> str:
    """``stats.describe_difference``, unless the interval excludes zero while the seeds
    disagree on the sign: then the difference is not called clear."""
    sentence = stats.describe_difference(name_a, name_b, diff["miou_diff"], diff["miou_diff_ci95"])
    signs = {math.copysign(1, v) for v in diff["miou_diff_per_seed"] if v}
    low, high = diff["miou_diff_ci95"]
    if (low > 0 or high < 0) and len(signs) > 1:
        per_seed = ", ".join(f"{100 * v:+.1f}" for v in diff["miou_diff_per_seed"])
        return (
            f"no clear difference between {name_a} and {name_b}: the images favour one "
            f"({sentence}), but the seeds disagree on the sign ({per_seed} points)"
        )
    return sentence


def _claims(study: Study, headline, evaluations, names, resamples: int):
    """The claims measured (as differences), and those waiting for a model's first
    finished run (a report written while the study trains)."""
    claims, pending = [], []
    for claim in study.claims:
        missing = [side.split(":")[0] for side in (claim["a"], claim["b"])]
        missing = [model for model in missing if model not in headline]
        if missing:
            pending.append({**claim, "missing": sorted(set(missing))})
            continue
        a, b = parse_entry(claim["a"], headline), parse_entry(claim["b"], headline)
        diff = _difference(a, b, evaluations, names, resamples)
        if diff is None:  # finished runs, but no seed in common yet
            pending.append({**claim, "missing": []})
            continue
        claims.append({"claim": claim["claim"], **diff})
    return claims, pending


def _levels(evaluations: dict, costs: dict, road: bool) -> list[dict]:
    """Every (mode, level) of every U-Net++: mean and std over seeds, and its cost."""
    levels = []
    for model, per_seed in evaluations.items():
        settings = [s for s in next(iter(per_seed.values())).settings if s[0] is not None]
        for setting in settings:
            entry = Entry(model, setting)
            levels.append({**_entry_numbers(entry, per_seed, road), **costs.get(entry.key, {})})
    return levels


def _curves(runs) -> dict:
    """Per model and seed, validation mIoU and training loss per epoch."""
    curves: dict[str, dict] = {}
    for name, seed, _, events in runs:
        epochs = [e for e in events if e.get("event") == "epoch"]
        curves.setdefault(name, {})[str(seed)] = {
            "epoch": [e["epoch"] for e in epochs],
            "val_miou": [e["val_miou"] for e in epochs],
            "train_loss": [e["train_loss"] for e in epochs],
        }
    return curves


def _training_time(run_rows: list[dict]) -> dict:
    """From the runs' ``train_s``: per model the mean and std over its seeds, and the
    study's total."""
    per_model: dict[str, list[float]] = {}
    for row in run_rows:
        per_model.setdefault(row["model"], []).append(row["train_s"])
    models = {}
    for name, seconds in per_model.items():
        mean, std = _mean_std(seconds)
        models[name] = {"mean_s": mean, "std_s": std, "runs": len(seconds)}
    return {"models": models, "total_s": sum(sum(v) for v in per_model.values())}


def measure_study(
    study: Study,
    out: str | Path,
    data: str | None = None,
    max_items: int | None = None,
    repeats: int = 20,
    resamples: int = stats.DEFAULT_RESAMPLES,
    log=print,
) -> dict[str, Any]:
    """Every number of the study's report, as plain values (``study.json``)."""
    out = Path(out)
    runs = _evaluate_runs(study, out, data, max_items, log)
    if not runs:
        raise ValueError(f"no finished run in {out} to report on")
    evaluations: dict[str, dict[int, Evaluation]] = {}
    for name, seed, evaluation, _ in runs:
        evaluations.setdefault(name, {})[seed] = evaluation
    first = runs[0][2]
    names = first.class_names
    road = study.train.get("label_set") == "road"
    headline = {
        m: _headline(next(iter(evaluations[m].values())), m)
        for m in [m.name for m in study.models]
        if m in evaluations
    }
    entries = [e for model_entries in headline.values() for e in model_entries]
    costs = _costs(study, out, entries, repeats)
    rows = []
    for entry in entries:
        row = _entry_numbers(entry, evaluations[entry.model], road)
        row.update(costs.get(entry.key, {}))
        rows.append(row)
    reference = headline.get(study.reference_model, [None])[0]
    differences = [
        diff
        for entry in entries
        if reference is not None and entry != reference
        if (diff := _difference(entry, reference, evaluations, names, resamples)) is not None
    ]
    run_rows = [{"model": name, "seed": seed, "checkpoint": e.info.get("checkpoint"),
                 "train_s": training_seconds(events)} for name, seed, e, events in runs]  # fmt: skip
    claims, pending_claims = _claims(study, headline, evaluations, names, resamples)
    levels = _levels(evaluations, costs, road)
    curves = _curves(runs)
    return {
        "study": study.name,
        "description": study.description,
        "file": str(study.path) if study.path else None,
        "train": study.train,
        "seeds": list(study.seeds),
        "reference": reference.name if reference else None,
        "label_set": study.train.get("label_set", "cityscapes19"),
        "images": first.images,
        "class_names": names,
        "bootstrap": {"resamples": resamples, "seed": stats.DEFAULT_SEED},
        "device": runtime.describe(runtime.resolve_device("auto"),
                                   runtime.resolve_precision("auto", "cpu")),
        "machine": platform.processor() or platform.machine(),
        "models": [{"name": m.name, "model": m.model, "kwargs": m.kwargs,
                    "description": m.description} for m in study.models],
        "runs": run_rows,
        "training_time": _training_time(run_rows),
        "entries": rows,
        "differences": differences,
        "claims": claims,
        "pending_claims": pending_claims,
        "levels": levels,
        "curves": curves,
    }  # fmt: skip


# --------------------------------------------------------------------------- writing


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f}"


def _ci_points(interval) -> str:
    return "-" if not interval else f"{100 * interval[0]:+.2f} to {100 * interval[1]:+.2f}"


def _partial_lines(result: dict) -> list[str]:
    """While the study trains: which runs the numbers below stand on."""
    done: dict[str, list[int]] = {m["name"]: [] for m in result["models"]}
    for run in result["runs"]:
        done[run["model"]].append(run["seed"])
    total = len(result["models"]) * len(result["seeds"])
    if len(result["runs"]) == total:
        return []
    per_model = "; ".join(
        f"{name}: {', '.join(map(str, sorted(seeds))) if seeds else 'none yet'}"
        for name, seeds in done.items()
    )
    return [
        "",
        f"**Partial: {len(result['runs'])} of {total} runs have finished** (seeds "
        f"per model: {per_model}); means and spreads are over the finished seeds.",
    ]


def _claim_lines(result: dict) -> list[str]:
    """The claims section: each claim's verdict, or what it still waits for."""
    pending = result.get("pending_claims") or []
    if not (result["claims"] or pending):
        return []
    lines = ["", "## The study's claims on this data and budget", ""]
    for c in result["claims"]:
        lines.append(f"- **{c['claim']}** ({c['a']} against {c['b']}): {c['sentence']}.")
    for c in pending:
        waiting = ", ".join(c["missing"]) or "a seed both have finished"
        lines.append(f"- **{c['claim']}** ({c['a']} against {c['b']}): not measured yet "
                     f"(waiting for {waiting}).")  # fmt: skip
    return lines


def _training_lines(result: dict) -> list[str]:
    """How long the runs took: the cost of the study itself."""
    timing = result.get("training_time")
    if not timing:
        return []
    per_model = "; ".join(
        f"{name} {format_duration(t['mean_s'])}"
        + (f" ± {format_duration(t['std_s'])}" if t["std_s"] is not None else "")
        + f" ({t['runs']} run{'s' * (t['runs'] != 1)})"
        for name, t in timing["models"].items()
    )
    return ["", f"Training time per run (wall clock of the training runs, evaluation after "
            f"each epoch included; mean ± std over seeds): {per_model}. All "
            f"{len(result['runs'])} runs: {format_duration(timing['total_s'])}."]  # fmt: skip


def write_markdown(result: dict, figures: list[str], relative: str) -> str:
    road = result["label_set"] == "road"
    lines = [
        f"# Study: {result['study']}",
        "",
        result["description"],
        "",
        f"Every model trained the same way ({_train_line(result['train'])}), with seeds "
        f"{', '.join(map(str, result['seeds']))}; scored with its final weights on the "
        f"{result['images']} val images. {stats.spread_over(result)}; differences are "
        f"paired on the same images and averaged over seeds, with a 95% bootstrap interval "
        f"over the images ({result['bootstrap']['resamples']} resamples). Latency: batch 1 "
        f"at the training size, {result['device']}.",
        *_partial_lines(result),
        "",
        "## Models",
        "",
    ]
    columns = ["model", "parameters (M)", "GFLOPs", "latency (ms)", "val mIoU"]
    columns += ["road IoU", "road F1"] if road else []
    columns.append("pixel accuracy")
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in result["entries"]:
        cells = [
            row["name"],
            f"{row['params'] / 1e6:.2f}" if "params" in row else "-",
            f"{row['gflops']:.2f}" if "gflops" in row else "-",
            f"{row['latency_ms']:.1f}" if "latency_ms" in row else "-",
            stats.spread_text(row["miou"], row["miou_std"]),
        ]
        if road:
            cells += [
                stats.spread_text(row["road_iou"], row["road_iou_std"]),
                stats.spread_text(row["road_f1"], row["road_f1_std"]),
            ]
        cells.append(stats.spread_text(row["pixel_accuracy"], row["pixel_accuracy_std"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += _training_lines(result)
    if result["differences"]:
        lines += ["", f"## Against {result['reference']}", "",
                  "| model | mIoU difference (points) | 95% CI | std over seeds | resamples "
                  "with the other sign | per seed |", "|---|---|---|---|---|---|"]  # fmt: skip
        for d in result["differences"]:
            per_seed = ", ".join(_points(v) for v in d["miou_diff_per_seed"])
            std = "-" if d["miou_diff_seed_std"] is None else f"{100 * d['miou_diff_seed_std']:.2f}"
            lines.append(
                f"| {d['a']} | {_points(d['miou_diff'])} | {_ci_points(d['miou_diff_ci95'])} "
                f"| {std} | {100 * d['miou_diff_sign_flip']:.1f}% | {per_seed} |"
            )
        lines += [""] + [f"- {d['sentence']}." for d in result["differences"]]
    lines += _claim_lines(result)
    pruned = [row for row in result["levels"] if row["mode"] is not None]
    if pruned:
        lines += ["", "## U-Net++ levels", "", "| model | mode | level | val mIoU | latency (ms) "
                  "| parameters (M) | GFLOPs |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in pruned:
            lines.append(
                f"| {row['model']} | {row['mode']} | L{row['level']} | "
                f"{stats.spread_text(row['miou'], row['miou_std'])} | "
                f"{row.get('latency_ms', float('nan')):.1f} | {row.get('params', 0) / 1e6:.3f} "
                f"| {row.get('gflops', float('nan')):.2f} |"
            )
    names = result["class_names"]
    lines += ["", "## Per-class IoU (mean over seeds)", "",
              "| class | " + " | ".join(r["name"] for r in result["entries"]) + " |",
              "|---|" + "---|" * len(result["entries"])]  # fmt: skip
    for c in names:
        values = [r["per_class_iou"].get(c) for r in result["entries"]]
        lines.append(
            f"| {c} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in values) + " |"
        )
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(f).stem}]({relative}/{f})" for f in figures]
    lines += ["", f"Regenerate: `python -m segdemo study {result['file']} --out DIR --report DOCS_DIR` "
              "(after training with `--data ROOT`)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _train_line(train: dict) -> str:
    keys = ("label_set", "size", "epochs", "batch_size", "lr", "schedule", "loss", "augment")
    return ", ".join(
        f"{k} {'x'.join(map(str, train[k])) if k == 'size' else train[k]}"
        for k in keys
        if k in train
    )


def figure_differences(result: dict) -> list[dict]:
    """The rows of the differences figure: every difference from the reference, then the
    claims about other pairs (a claim about a pair already shown adds no row)."""
    shown = {(d["a"], d["b"]) for d in result["differences"]}
    return result["differences"] + [c for c in result["claims"] if (c["a"], c["b"]) not in shown]


def _save(fig, path: Path) -> None:
    """A figure as a PNG, written atomically (a page reading it never sees half a file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue(), durable=False)


def _figures(result: dict, folder: Path) -> list[str]:
    written = []
    entries = result["entries"]
    if entries:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(entries)))
        means = [e["miou"] or 0 for e in entries]
        stds = [e["miou_std"] or 0 for e in entries]
        ax.barh([e["name"] for e in entries], means, xerr=stds, color="#4c72b0", capsize=3)
        ax.invert_yaxis()
        ax.set_xlabel(f"val mIoU, {stats.spread_over(result)}")
        low, high = (min(means) * 0.9, max(means) * 1.05) if means else (0.0, 1.0)
        ax.set_xlim(low, high if high > low else low + 0.01)  # all-zero means: a sliver
        fig.tight_layout()
        _save(fig, folder / "miou.png")
        plt.close(fig)
        written.append("miou.png")
    diffs = figure_differences(result)
    if diffs:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(diffs)))
        labels = [f"{d['a']} − {d['b']}" for d in diffs]
        points = [100 * (d["miou_diff"] or 0) for d in diffs]
        low = [p - 100 * d["miou_diff_ci95"][0] for p, d in zip(points, diffs, strict=True)]
        high = [100 * d["miou_diff_ci95"][1] - p for p, d in zip(points, diffs, strict=True)]
        ax.errorbar(points, range(len(diffs)), xerr=[low, high], fmt="o", color="#c44e52",
                    capsize=3, label="mean over seeds, 95% CI over images")  # fmt: skip
        per_seed = [(100 * v, i) for i, d in enumerate(diffs)
                    for v in d.get("miou_diff_per_seed") or [] if v is not None]  # fmt: skip
        if per_seed:
            seeds_x, seeds_y = zip(*per_seed, strict=True)
            ax.scatter(seeds_x, seeds_y, marker="x", s=18, color="#555555", label="each seed")
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(range(len(diffs)), labels)
        ax.invert_yaxis()
        ax.set_xlabel("mIoU difference (points)")
        # above the axes, where no point can hide under it
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
        fig.tight_layout()
        _save(fig, folder / "differences.png")
        plt.close(fig)
        written.append("differences.png")
    pruned = [row for row in result["levels"] if row["mode"] is not None and "latency_ms" in row]
    if pruned:
        fig, ax = plt.subplots(figsize=(7, 4))
        for model in sorted({r["model"] for r in pruned}):
            for mode, style in (("fast", "-o"), ("accurate", "--s")):
                rows = sorted((r for r in pruned if r["model"] == model and r["mode"] == mode),
                              key=lambda r: r["level"])  # fmt: skip
                ax.errorbar([r["latency_ms"] for r in rows], [r["miou"] for r in rows],
                            yerr=[r["miou_std"] or 0 for r in rows], fmt=style, capsize=3,
                            label=f"{model} {mode}")  # fmt: skip
                for r in rows:
                    ax.annotate(f"L{r['level']}", (r["latency_ms"], r["miou"]), fontsize=8,
                                xytext=(3, -10), textcoords="offset points")  # fmt: skip
        ax.set_xlabel("latency (ms, batch 1)")
        ax.set_ylabel("val mIoU (mean ± std over seeds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, folder / "levels.png")
        plt.close(fig)
        written.append("levels.png")
    if result["curves"]:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for index, (model, seeds) in enumerate(result["curves"].items()):
            color = f"C{index}"
            for k, curve in enumerate(seeds.values()):
                label = model if k == 0 else None
                left.plot(curve["epoch"], curve["train_loss"], color=color, alpha=0.7, label=label)
                right.plot(curve["epoch"], curve["val_miou"], color=color, alpha=0.7, label=label)
        left.set(xlabel="epoch", ylabel="train loss")
        right.set(xlabel="epoch", ylabel="val mIoU (one line per seed)")
        right.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, folder / "curves.png")
        plt.close(fig)
        written.append("curves.png")
    return written


def write_study_report(
    study: Study, out: str | Path, report_dir: str | Path, data: str | None = None,
    max_items: int | None = None, repeats: int = 20, log=print,
) -> dict[str, Any]:  # fmt: skip
    """Measure the study and write ``<report_dir>/<name>.md``, ``<report_dir>/<name>/``
    (``study.json`` and the figures). Returns the result with ``written`` (the paths)."""
    result = measure_study(study, out, data=data, max_items=max_items, repeats=repeats, log=log)
    report_dir = Path(report_dir)
    folder = report_dir / study.name
    folder.mkdir(parents=True, exist_ok=True)
    figures = _figures(result, folder)
    atomic_write_bytes(folder / "study.json", (json.dumps(result, indent=1) + "\n").encode())
    markdown = report_dir / f"{study.name}.md"
    atomic_write_bytes(markdown, write_markdown(result, figures, study.name).encode("utf-8"))
    result["written"] = ", ".join(str(p) for p in (markdown, folder / "study.json"))
    return result
