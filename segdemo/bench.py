"""Benchmark: parameters, GFLOPs and latency of every model, and of every U-Net++ level.

One row per plain model and, for U-Net++ models with deep supervision, one row per
``(mode, level)``: fast L1..L4 and accurate L1..L4. Latencies are medians over
``repeats`` timed runs after ``warmup`` untimed ones, through ``inference.predict_logits``
(so they include what a user of the app waits for, not the bare ``forward``):

- ``ms_fp32``: batch 1, eager fp32, default memory layout;
- ``ms_fast``: batch 1, the fast path (bf16 autocast + channels_last where supported,
  otherwise fp32 again; ``precision_fast`` says which);
- ``images_per_s``: throughput at batch ``batch`` on the fast path.

Run it on a quiet machine: ``python -m segdemo bench [--models a,b] [--size HxW]``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from segdemo import runtime
from segdemo.checkpoints import check_model_size
from segdemo.inference import predict_logits, prepare_model
from segdemo.models import create_model, list_models
from segdemo.models.registry import (
    count_flops,
    count_parameters,
    forward_kwargs,
    get_model_config,
    inference_settings,
)

BENCH_KEYS = ("model", "mode", "level", "params", "gflops", "ms_fp32", "ms_fast", "images_per_s")


def default_model_kwargs(name: str) -> dict:
    """The registered default build of ``name`` (scratch models at base width 16, smp
    models on a randomly initialised resnet18: latency does not depend on weights)."""
    return dict(get_model_config(name).default_kwargs)


def median_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    return interleaved_median_ms([fn], repeats, warmup)[0]


def interleaved_median_ms(
    fns: Sequence[Callable[[], object]], repeats: int, warmup: int
) -> list[float]:
    """Median wall time in milliseconds of each of ``fns``, timed in rounds that call each
    once in turn, so a slow spell of a shared machine spreads over all of them instead of
    skewing the one that happened to run then (as timing them one after another would)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(max(1, repeats)):
        for fn, timed in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            timed.append(time.perf_counter() - start)
    return [1000.0 * statistics.median(timed) for timed in times]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(
    name: str,
    size: tuple[int, int] = (256, 512),
    batch: int = 8,
    repeats: int = 10,
    warmup: int = 3,
    num_classes: int = 19,
    device: str | torch.device = "cpu",
    model_kwargs: dict | None = None,
    seed: int = 0,
    engines: Sequence[str] = ("torch",),
    model: torch.nn.Module | None = None,
) -> list[dict]:
    """Benchmark rows of one registered model (see ``run_bench``), or of ``model`` (e.g. a
    loaded checkpoint's) under the label ``name``."""
    device = runtime.resolve_device(device)
    torch.manual_seed(seed)
    if model is None:
        kwargs = default_model_kwargs(name) if model_kwargs is None else model_kwargs
        model = create_model(name, num_classes=num_classes, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    one = torch.randn(1, 3, *size, generator=generator).to(device)
    many = torch.randn(batch, 3, *size, generator=generator).to(device)
    settings = inference_settings(model)

    def timed(precision: str, x: torch.Tensor, kwargs: dict) -> float:
        def step() -> None:
            predict_logits(model, x, device, precision, **kwargs)
            _sync(device)

        return median_ms(step, repeats, warmup)

    model, _, _ = prepare_model(model, device, "fp32")
    rows = []
    for mode, level in settings:
        kwargs = forward_kwargs(mode, level)
        if hasattr(model, "count_parameters"):
            params = model.count_parameters(**kwargs)
        else:
            params = count_parameters(model)
        rows.append(
            {
                "model": name,
                "mode": mode,
                "level": level,
                "params": int(params),
                "gflops": count_flops(model, size, **kwargs) / 1e9,
                "ms_fp32": timed("fp32", one, kwargs),
            }
        )
    # The fast path changes the model's memory layout, so it is measured after fp32.
    model, _, precision = prepare_model(model, device, "auto")
    for row, (mode, level) in zip(rows, settings, strict=True):
        kwargs = forward_kwargs(mode, level)
        row["ms_fast"] = timed(precision, one, kwargs)
        row["images_per_s"] = 1000.0 * batch / timed(precision, many, kwargs)
        row.update(
            precision_fast=precision,
            device=runtime.describe(device, precision),
            size=list(size),
            batch=batch,
        )
    if "openvino" in engines and device.type == "cpu":
        # Timed in rounds with the fast path, so the ratio is a paired one; conversion (or
        # reading the cache) happens in the warm-up runs.
        compiled, _, ov_precision = prepare_model(model, "cpu", "auto", engine="openvino")
        for row, (mode, level) in zip(rows, settings, strict=True):
            kwargs = forward_kwargs(mode, level)

            def fast(kwargs=kwargs) -> None:
                predict_logits(model, one, device, precision, **kwargs)

            def step(kwargs=kwargs) -> None:
                predict_logits(compiled, one, "cpu", ov_precision, **kwargs)

            fast_ms, row["ms_openvino"] = interleaved_median_ms([fast, step], repeats, warmup)
            row["fast_over_openvino"] = fast_ms / row["ms_openvino"]
            row["openvino"] = compiled.describe()
    return rows


def run_bench(
    models: list[str] | None = None,
    size: tuple[int, int] = (256, 512),
    batch: int = 8,
    repeats: int = 10,
    num_classes: int = 19,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    model_kwargs: dict[str, dict] | None = None,
    progress: Callable[[dict], None] | None = None,
    engines: Sequence[str] = ("torch",),
    checkpoints: Sequence[str] = (),
    size_given: bool = True,
) -> list[dict]:
    """Parameters, GFLOPs and latencies of ``models`` (default: every registered model).

    Args:
        models: registered names; ``None`` means ``list_models()``.
        size: ``(H, W)`` of the input images.
        batch: batch size of the throughput measurement.
        repeats: timed runs per measurement (the median is reported).
        num_classes: output channels of every model.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        warmup: untimed runs before each measurement.
        model_kwargs: per-name builder kwargs overriding ``default_model_kwargs``.
        progress: called with each row when it is done.
        engines: ``("torch",)``, or with ``"openvino"`` also ``ms_openvino`` (batch 1,
            OpenVINO on the CPU at its default precision), ``fast_over_openvino`` (the
            fast path's time over OpenVINO's, timed in the same rounds) and ``openvino``.
        checkpoints: checkpoint files to time as well (at their own input size unless
            ``size_given``), one row per setting labelled with the file's stem.

    Returns:
        Rows with ``BENCH_KEYS`` (``mode``/``level`` are ``None`` for plain models) plus
        ``precision_fast``, ``device``, ``size`` and ``batch``.

    Raises:
        ValueError: for an unknown model name (lists the valid ones).
    """
    names = (list_models() if not checkpoints else []) if models is None else list(models)
    unknown = [name for name in names if name not in list_models()]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; valid models: {', '.join(list_models())}")
    model_kwargs = model_kwargs or {}
    rows = []
    for name in names:
        for row in bench_model(
            name,
            size=size,
            batch=batch,
            repeats=repeats,
            warmup=warmup,
            num_classes=num_classes,
            device=device,
            model_kwargs=model_kwargs.get(name),
            engines=engines,
        ):
            rows.append(row)
            if progress is not None:
                progress(row)
    for path in checkpoints:
        from segdemo.checkpoints import load_checkpoint

        ckpt = load_checkpoint(path)
        for row in bench_model(
            ckpt.path.stem, size=size if size_given else tuple(ckpt.input_size), batch=batch,
            repeats=repeats, warmup=warmup, device=device, engines=engines, model=ckpt.model,
        ):  # fmt: skip
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def format_bench_table(rows: list[dict]) -> str:
    """Markdown table of ``run_bench`` rows.

    Adds ``fp32/fast`` (speed-up of the fast path, ``ms_fp32 / ms_fast``) and ``vs full``
    (fast-path latency relative to the deepest level of the same model and mode).
    """
    deepest: dict[tuple[str, str], int] = {}
    for row in rows:
        if row["mode"] is not None:
            key = (row["model"], row["mode"])
            deepest[key] = max(deepest.get(key, 0), row["level"])
    reference = {
        (row["model"], row["mode"]): row["ms_fast"]
        for row in rows
        if row["mode"] is not None and row["level"] == deepest[(row["model"], row["mode"])]
    }
    openvino = any("ms_openvino" in row for row in rows)
    header = (
        "| model | mode | level | params (M) | GFLOPs | ms fp32 (b=1) | ms fast (b=1) "
        "| fp32/fast | vs full | img/s fast |"
        + (" ms openvino (b=1) | fast/openvino (paired) |" if openvino else "")
    )
    lines = [header, "|" + "---|" * (12 if openvino else 10)]
    for row in rows:
        full = reference.get((row["model"], row["mode"]))
        relative = f"{row['ms_fast'] / full:.2f}" if full else "-"
        ov_cells = ""
        if openvino:
            ms = row.get("ms_openvino")
            ov_cells = f" {ms:.1f} | {row['fast_over_openvino']:.2f} |" if ms else " - | - |"
        lines.append(
            f"| {row['model']} | {row['mode'] or '-'} | {row['level'] or '-'} "
            f"| {row['params'] / 1e6:.3f} | {row['gflops']:.2f} | {row['ms_fp32']:.1f} "
            f"| {row['ms_fast']:.1f} | {row['ms_fp32'] / row['ms_fast']:.2f} | {relative} "
            f"| {row['images_per_s']:.1f} |{ov_cells}"
        )
    if rows:
        first = rows[0]
        size = "x".join(str(v) for v in first.get("size", []))
        lines.append("")
        lines.append(
            f"Input {size or '?'}, throughput at batch {first.get('batch', '?')}; "
            f"{first.get('device', '')}"
            + (f"; openvino: {first['openvino']}." if first.get("openvino") else ".")
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- training


def bf16_matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """This machine's bf16 matrix-multiply rate (GFLOP/s) on its current threads: the
    reference a training step's fraction of peak is measured against."""
    a = torch.randn(size, size).to(torch.bfloat16)
    b = torch.randn(size, size).to(torch.bfloat16)
    ms = median_ms(lambda: torch.mm(a, b), repeats=repeats, warmup=2)
    return 2 * size**3 / (ms / 1000.0) / 1e9


def parse_model_spec(spec: str) -> tuple[str, dict]:
    """``"unetpp_ds:encoder=timm-tf_efficientnet_lite0"`` -> (name, kwargs); values are
    read as JSON where they parse (``base_width=16``, ``deep_supervision=false``)."""
    import json

    name, *pairs = spec.split(":")
    kwargs = dict(get_model_config(name).default_kwargs)
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    from segdemo.checkpoint_schema import check_model_arguments
    from segdemo.models import model_arguments

    unknown = sorted(set(kwargs) - set(model_arguments(name)))
    if unknown:
        raise ValueError(f"--model {spec}: {name} does not take {', '.join(unknown)}")
    # the rules a checkpoint's model_kwargs follow, so no spec builds what could not load
    check_model_arguments(name, kwargs, name=lambda key: f"--model {spec}: {key}")
    return name, kwargs


def bench_train(
    specs: Sequence[str],
    size: tuple[int, int] = (256, 256),
    batch: int = 8,
    repeats: int = 6,
    warmup: int = 2,
    num_classes: int = 19,
    loss: str = "ce_dice",
    device: str = "cpu",
) -> list[dict]:
    """Time one training step (forward, loss of every head, backward, AdamW) of each model,
    the way ``train`` runs it (bf16 autocast + channels_last where supported), in
    interleaved rounds; no data loading.

    Returns:
        One row per spec: ``model`` (the spec), ``step_s``, ``images_per_s``,
        ``gflop_per_step`` (forward + backward, counted by ``torch.utils.flop_counter``),
        ``peak_fraction`` (achieved rate / :func:`bf16_matmul_peak_gflops`), ``peak_gflops``
        and ``precision``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from segdemo.losses import SegmentationLoss

    device = runtime.resolve_device(device)
    precision = runtime.resolve_precision("auto", device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=generator).to(device)
    target = torch.randint(0, num_classes, (batch, *size), generator=generator).to(device)
    if precision == "bf16":
        images = images.contiguous(memory_format=torch.channels_last)
    loss_fn = SegmentationLoss(loss, num_classes)
    steps, flops = [], []
    for spec in specs:
        name, kwargs = parse_model_spec(spec)
        check_model_size(name, num_classes, kwargs, size, f"--model {spec}")
        torch.manual_seed(0)
        model = create_model(name, num_classes, **kwargs).to(device).train()
        if precision == "bf16":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, optimizer=optimizer) -> None:
            with runtime.autocast(device, precision):
                heads = model.forward_heads(images)
            loss_value = loss_fn(heads, target)
            optimizer.zero_grad(set_to_none=True)
            loss_value.backward()
            optimizer.step()
            _sync(device)

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops.append(counter.get_total_flops())
        steps.append(step)
    peak = bf16_matmul_peak_gflops() if precision == "bf16" else None
    times = interleaved_median_ms(steps, repeats, warmup)
    rows = []
    for spec, ms, flop in zip(specs, times, flops, strict=True):
        rate = flop / (ms / 1000.0) / 1e9
        rows.append({
            "model": spec, "step_s": ms / 1000.0, "images_per_s": 1000.0 * batch / ms,
            "gflop_per_step": flop / 1e9, "peak_fraction": rate / peak if peak else None,
            "peak_gflops": peak, "precision": precision, "size": list(size), "batch": batch,
            "device": runtime.describe(device, precision),
        })  # fmt: skip
    return rows


def format_train_table(rows: list[dict]) -> str:
    """Markdown table of ``bench_train`` rows."""
    lines = [
        "| model | step (s) | images/s | GFLOP per step | fraction of bf16 peak |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        fraction = "-" if row["peak_fraction"] is None else f"{row['peak_fraction']:.2f}"
        lines.append(
            f"| {row['model']} | {row['step_s']:.3f} | {row['images_per_s']:.2f} "
            f"| {row['gflop_per_step']:.1f} | {fraction} |"
        )
    if rows:
        first = rows[0]
        peak = first["peak_gflops"]
        lines.append("")
        lines.append(
            f"Batch {first['batch']} at {'x'.join(map(str, first['size']))}, {first['device']}"
            + (f"; bf16 matmul peak {peak:.0f} GFLOP/s." if peak else ".")
        )
    return "\n".join(lines)


def _video_segmenters(
    checkpoints: Sequence, device: str, precision: str, engine: str = "torch"
) -> list[list]:
    """Per checkpoint: a Segmenter at every inference setting, the app's opening one first
    (the deepest level in the mode that validated better; the plain forward for a model
    without levels), run by ``engine``."""
    from segdemo.inference import Segmenter, default_mode
    from segdemo.models import pruning_levels

    per_checkpoint = []
    for ckpt in checkpoints:
        model, dev, prec = prepare_model(ckpt.model, device, precision, engine)
        levels = pruning_levels(model)

        def make(mode, level, ckpt=ckpt, model=model, dev=dev, prec=prec):
            name = ckpt.path.stem
            return Segmenter(name, model, ckpt.input_size, ckpt.label_set, dev, prec, mode, level)

        if not levels:
            per_checkpoint.append([make(None, None)])
            continue
        opening = default_mode(ckpt.metadata, levels)
        settings = [(opening, levels)] + [
            (mode, level)
            for mode in ("fast", "accurate")
            for level in range(1, levels + 1)
            if (mode, level) != (opening, levels)
        ]
        per_checkpoint.append([make(mode, level) for mode, level in settings])
    return per_checkpoint


def bench_video(
    checkpoint_paths: Sequence[str],
    seconds: float = 10.0,
    fps: float = 10.0,
    size: tuple[int, int] = (360, 640),
    device: str = "auto",
    precision: str = "auto",
    workdir: str | None = None,
    warmup: int = 3,
    rounds: int = 3,
    engines: Sequence[str] = ("torch",),
) -> dict:
    """Video throughput of checkpoints, the way the Segment page's video section runs them.

    A ``seconds``-long synthetic drive clip (``size`` = H x W, ``fps`` frames a second,
    WebM) is segmented by each checkpoint alone at every inference setting (fast and
    accurate L1..Lk for U-Net++; warm frames per second, the first frame left out), then
    by all checkpoints together at their opening settings in the photo | masks layout,
    which is what the page does after an upload: ``wall_s`` there is the time from the
    uploaded file to a playable WebM (reading, segmenting, composing, encoding). Each
    setting first runs ``warmup`` times on a blank frame, as the app's first run of a
    setting does, so the numbers are of warm runs; each setting's frames per second is the
    median of ``rounds`` runs of the clip, taken in interleaved rounds. With several
    ``engines`` every setting runs on each (rows carry ``engine``), interleaved the same way;
    the all-together run uses the first engine.
    """
    import tempfile
    from pathlib import Path

    from segdemo.checkpoints import load_checkpoint
    from segdemo.video import drive_clip, segment_video

    checkpoints = [load_checkpoint(path) for path in checkpoint_paths]
    by_engine = {e: _video_segmenters(checkpoints, device, precision, e) for e in engines}
    per_checkpoint = by_engine[engines[0]]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        clip = drive_clip(Path(tmp) / "drive.webm", seconds=seconds, fps=fps, size=size)
        blank = np.zeros((*size, 3), np.uint8)
        settings = [s for per in by_engine.values() for group in per for s in group]
        for segmenter in settings:
            for _ in range(warmup):  # kernel selection and allocation, per setting
                segmenter(blank)
        # Every setting once per round, the median over rounds: a slow spell of a shared
        # CPU lands on one round of every setting, not on all rounds of one.
        fps_runs: list[list[float]] = [[] for _ in settings]
        for _ in range(rounds):
            for runs, segmenter in zip(fps_runs, settings, strict=True):
                result = segment_video(clip, Path(tmp) / "one.webm", [segmenter], "overlay",
                                       max_fps=fps)  # fmt: skip
                runs.append(result.models[0]["fps"] or 0.0)
        rows = []
        for runs, segmenter in zip(fps_runs, settings, strict=True):
            median = statistics.median(runs)
            rows.append({
                "checkpoint": segmenter.name, "mode": segmenter.mode, "level": segmenter.level,
                "engine": segmenter.engine, "fps": median, "ms_per_frame": 1000.0 / median if median else None,
                "frames": result.frames, "fps_runs": runs,
            })  # fmt: skip
        together = [segmenters[0] for segmenters in per_checkpoint]
        labels = {s.label_set.name for s in together}
        all_models = None
        if len(labels) == 1:
            result = segment_video(clip, Path(tmp) / "all.webm", together, "masks",
                                   max_fps=fps)  # fmt: skip
            all_models = {
                "models": [s.title for s in together], "wall_s": result.wall_seconds,
                "frames": result.frames, "width": result.width, "height": result.height,
                "fps": [m["fps"] for m in result.models],
            }  # fmt: skip
    device_text = runtime.describe(together[0].device, together[0].precision) if together else ""
    for per in by_engine.values():
        model = per[0][0].model if per and per[0] else None
        if model is not None and hasattr(model, "describe"):
            device_text += f"; openvino: {model.describe()}"
            break
    return {
        "clip": {"seconds": seconds, "fps": fps, "size": list(size)},
        "device": device_text,
        "rows": rows,
        "together": all_models,
    }


def format_video_table(result: dict) -> str:
    """Markdown table of ``bench_video``'s result."""
    engines = len({row.get("engine") for row in result["rows"]}) > 1
    lines = [
        "| checkpoint | setting |"
        + (" engine |" if engines else "")
        + " frames/s | ms per frame |",
        "|---|---|" + ("---|" if engines else "") + "---|---|",
    ]
    for row in result["rows"]:
        setting = f"{row['mode']} L{row['level']}" if row["level"] is not None else "-"
        fps = "-" if row["fps"] is None else f"{row['fps']:.1f}"
        ms = "-" if row["ms_per_frame"] is None else f"{row['ms_per_frame']:.0f}"
        engine = f" {row['engine']} |" if engines else ""
        lines.append(f"| {row['checkpoint']} | {setting} |{engine} {fps} | {ms} |")
    clip = result["clip"]
    height, width = clip["size"]
    lines.append("")
    lines.append(
        f"A {clip['seconds']:g} s synthetic drive clip, {width}x{height} at {clip['fps']:g} "
        f"frames/s, each checkpoint alone (overlay layout; the median of interleaved runs); "
        f"{result['device']}."
    )
    together = result["together"]
    if together:
        lines.append(
            f"All together ({', '.join(together['models'])}; photo | masks, "
            f"{together['width']}x{together['height']}): {together['frames']} frames, "
            f"{together['wall_s']:.1f} s from the clip to a playable WebM."
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- engines


def bench_engine_agreement(
    checkpoint_paths: Sequence[str],
    data: str,
    split: str = "val",
    max_items: int = 100,
    batch: int = 8,
    precision: str = "auto",
) -> list[dict]:
    """How far OpenVINO's masks are from torch fp32's, per checkpoint and setting.

    The first ``max_items`` photos of ``data`` are run by both engines at the checkpoint's
    input size (each setting its own graph, as the app runs it). Per setting: ``agreement``
    (the fraction of pixels with the same class) and the mIoU of each engine's masks
    against the labels (``miou_torch``, ``miou_openvino``; masks scaled back to the labels
    by nearest neighbour, so these are not ``eval``'s numbers, only their difference is
    the point).
    """
    from segdemo.checkpoints import load_checkpoint
    from segdemo.data import open_dataset
    from segdemo.inference import mask_to_size, predict_mask, preprocess
    from segdemo.metrics import confusion_per_image, metrics_from_confusion

    rows = []
    for path in checkpoint_paths:
        ckpt = load_checkpoint(path)
        model, _, _ = prepare_model(ckpt.model, "cpu", "fp32")
        compiled, _, ov_precision = prepare_model(model, "cpu", precision, engine="openvino")
        dataset = open_dataset(data, split, label_set=ckpt.label_set.name)
        pairs = [dataset.read_raw(i) for i in range(min(max_items, len(dataset)))]
        classes, ignore = len(ckpt.label_set.names), ckpt.label_set.ignore_index
        for mode, level in inference_settings(model):
            kwargs = forward_kwargs(mode, level)
            same = total = 0
            confusion = {"torch": 0, "openvino": 0}
            for start in range(0, len(pairs), batch):
                group = pairs[start : start + batch]
                x = torch.cat([preprocess(image, ckpt.input_size, model.normalization)
                               for image, _ in group])  # fmt: skip
                masks = {
                    "torch": predict_mask(model, x, "cpu", "fp32", **kwargs),
                    "openvino": predict_mask(compiled, x, "cpu", ov_precision, **kwargs),
                }
                same += int((masks["torch"] == masks["openvino"]).sum())
                total += masks["torch"].numel()
                for engine, mask in masks.items():
                    for one, (_, label) in zip(mask, group, strict=True):
                        target = torch.from_numpy(label.astype(np.int64))[None]
                        pred = mask_to_size(one, tuple(target.shape[-2:]))[None]
                        confusion[engine] = confusion[engine] + confusion_per_image(
                            pred, target, classes, ignore
                        ).sum(0)
            miou = {e: metrics_from_confusion(c)["miou"] for e, c in confusion.items()}
            rows.append({
                "checkpoint": ckpt.path.stem, "mode": mode, "level": level,
                "images": len(pairs), "agreement": same / total,
                "miou_torch": miou["torch"], "miou_openvino": miou["openvino"],
                "openvino": compiled.describe(),
            })  # fmt: skip
    return rows


def format_agreement_table(rows: list[dict]) -> str:
    """Markdown table of ``bench_engine_agreement`` rows."""
    lines = [
        "| checkpoint | setting | pixels agreeing | mIoU torch fp32 | mIoU openvino | difference |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        setting = f"{row['mode']} L{row['level']}" if row["level"] is not None else "-"
        diff = 100 * (row["miou_openvino"] - row["miou_torch"])
        lines.append(
            f"| {row['checkpoint']} | {setting} | {100 * row['agreement']:.3f}% "
            f"| {row['miou_torch']:.4f} | {row['miou_openvino']:.4f} | {diff:+.2f} points |"
        )
    if rows:
        lines.append("")
        lines.append(f"The first {rows[0]['images']} images; openvino: {rows[0]['openvino']}.")
    return "\n".join(lines)
