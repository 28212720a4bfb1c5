"""Plotly figures for comparing models and following training (no Streamlit).

Every function takes plain numbers (as ``segdemo.evaluate`` and ``segdemo.runs`` return
them) and gives back a ``plotly.graph_objects.Figure``, for the app (``st.plotly_chart``),
a notebook, or a results page (``fig.write_html``; ``fig.write_image`` needs kaleido).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# Plotly's default qualitative palette, named so that several charts of one page agree on
# the colour of a model.
MODEL_COLORS = (
    "#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a",
    "#19d3f3", "#ff6692", "#b6e880", "#ff97ff", "#fecb52",
)  # fmt: skip
LEVEL_MODES = ("fast", "accurate")


def _hex(rgb: Sequence[int]) -> str:
    r, g, b = (int(c) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def model_color(index: int) -> str:
    return MODEL_COLORS[index % len(MODEL_COLORS)]


def _error(values: Sequence[float | None], intervals: Sequence[Sequence[float] | None]) -> dict:
    """Plotly asymmetric error bars from ``[low, high]`` intervals around ``values``."""
    plus, minus = [], []
    for value, interval in zip(values, intervals, strict=True):
        if value is None or not interval:
            plus.append(None)
            minus.append(None)
        else:
            plus.append(max(0.0, interval[1] - value))
            minus.append(max(0.0, value - interval[0]))
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus,
            "thickness": 1.2, "width": 3}  # fmt: skip


def per_class_iou_bars(
    per_model: Mapping[str, Mapping[str, float | None]],
    classes: Sequence[str] | None = None,
    title: str = "IoU per class",
    intervals: Mapping[str, Mapping[str, Sequence[float] | None]] | None = None,
) -> go.Figure:
    """Grouped bars: one group per class, one bar per model.

    Args:
        per_model: model label -> {class name -> IoU in 0..1, or None where the class is
            absent from both prediction and ground truth (drawn as no bar)}.
        classes: x-axis order; default: the classes of the first model, then any others.
        intervals: model label -> {class name -> ``[low, high]``}: drawn as error bars
            (e.g. the 95% bootstrap intervals of ``segdemo.stats.bootstrap_ci``).

    Returns:
        A figure with one ``Bar`` trace per model (``trace.name`` is the model label);
        with ``intervals``, ``error_y.array`` / ``arrayminus`` hold the distances from
        each bar to its interval's ends.
    """
    if classes is None:
        classes = []
        for ious in per_model.values():
            classes += [name for name in ious if name not in classes]
    fig = go.Figure()
    for k, (label, ious) in enumerate(per_model.items()):
        values = [ious.get(name) for name in classes]
        extra = {}
        if intervals is not None and label in intervals:
            extra["error_y"] = _error(values, [intervals[label].get(n) for n in classes])
        fig.add_bar(
            name=label,
            x=list(classes),
            y=values,
            marker_color=model_color(k),
            hovertemplate="%{x}: IoU %{y:.3f}<extra>" + label + "</extra>",
            **extra,
        )
    fig.update_layout(
        title=title,
        barmode="group",
        yaxis={"title": "IoU", "range": [0, 1]},
        xaxis={"title": "class", "tickangle": -45},
        legend={"orientation": "h", "y": 1.12},
        margin={"t": 80, "b": 10},
    )
    return fig


def miou_intervals(
    models: Sequence[Mapping],
    title: str = "mIoU with 95% intervals",
) -> go.Figure:
    """One point per model with its interval as an error bar, on a shared mIoU axis.

    Args:
        models: mappings with ``name``, ``miou`` and ``miou_ci95`` (``[low, high]`` or
            None), e.g. the ``models`` of ``segdemo.evaluate.compare_evaluations``.

    Returns:
        One ``Scatter`` trace per model (in the model's colour), x = mIoU, y = name, with
        ``error_x`` reaching the interval's ends.
    """
    fig = go.Figure()
    for k, m in enumerate(models):
        fig.add_scatter(
            name=m["name"],
            x=[m["miou"]],
            y=[m["name"]],
            mode="markers",
            marker={"color": model_color(k), "size": 11},
            error_x=_error([m["miou"]], [m.get("miou_ci95")]),
            hovertemplate="mIoU %{x:.3f}<extra>" + m["name"] + "</extra>",
        )
    fig.update_layout(
        title=title,
        showlegend=False,
        xaxis={"title": "mIoU", "rangemode": "tozero"},
        yaxis={"autorange": "reversed"},
        height=max(180, 60 * len(models) + 100),
        margin={"t": 50, "b": 10},
    )
    return fig


def paired_differences(
    comparisons: Sequence[Mapping],
    classes: Sequence[str] | None = None,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Each model minus the reference, in mIoU points, overall and per class, with the
    paired-bootstrap 95% interval as error bars; zero is marked.

    Args:
        comparisons: the ``comparisons`` of ``segdemo.evaluate.compare_evaluations``
            (``name``, ``reference``, ``miou_diff``, ``miou_diff_ci95``,
            ``per_class_iou_diff``, ``per_class_iou_diff_ci95``).
        classes: the per-class points to draw; default: every class with a difference.
        colors: model name -> colour (default: ``model_color`` in order).

    Returns:
        One ``Scatter`` trace per compared model; x = ``"mIoU"`` then the classes, y = the
        difference in points (100 x metric units), ``error_y`` to the interval's ends.
    """
    if classes is None:
        classes = []
        for c in comparisons:
            classes += [
                n for n, d in c["per_class_iou_diff"].items() if d is not None and n not in classes
            ]
    fig = go.Figure()
    fig.add_hline(y=0, line={"color": "#888", "width": 1})
    for k, c in enumerate(comparisons):
        values = [c["miou_diff"]] + [c["per_class_iou_diff"].get(n) for n in classes]
        intervals = [c["miou_diff_ci95"]] + [c["per_class_iou_diff_ci95"].get(n) for n in classes]
        points = [None if v is None else 100 * v for v in values]
        scaled = [None if i is None else [100 * i[0], 100 * i[1]] for i in intervals]
        color = (colors or {}).get(c["name"], model_color(k + 1))
        fig.add_scatter(
            name=f"{c['name']} - {c['reference']}",
            x=["mIoU", *classes],
            y=points,
            mode="markers",
            marker={"color": color, "size": 9, "symbol": "diamond"},
            error_y=_error(points, scaled),
            hovertemplate="%{x}: %{y:+.1f} points<extra>" + c["name"] + "</extra>",
        )
    reference = comparisons[0]["reference"] if comparisons else ""
    fig.update_layout(
        title=title or f"Difference from {reference} on the same images (95% paired intervals)",
        yaxis={"title": "IoU difference (points)", "zeroline": True},
        xaxis={"title": "", "tickangle": -45},
        legend={"orientation": "h", "y": 1.12},
        margin={"t": 80, "b": 10},
    )
    return fig


def confusion_heatmap(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    title: str = "Confusion matrix (rows: ground truth, normalised per row)",
    hide_empty: bool = True,
) -> go.Figure:
    """Row-normalised confusion matrix: cell (i, j) is the share of class-i pixels
    predicted as class j, so the diagonal is each class's recall.

    Args:
        matrix: ``(C, C)`` pixel counts, rows = ground truth, columns = prediction.
        class_names: ``C`` names.
        hide_empty: drop classes that appear neither in the ground truth nor in the
            predictions (keeps a 19-class matrix readable on small sets).

    Returns:
        A figure with one ``Heatmap``: ``z`` holds the row fractions (None for a class
        without ground-truth pixels), ``customdata`` the pixel counts.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    names = list(class_names)
    if counts.shape != (len(names), len(names)):
        raise ValueError(
            f"confusion matrix is {counts.shape[0]}x{counts.shape[1]} but there are "
            f"{len(names)} class names"
        )
    keep = np.arange(len(names))
    if hide_empty:
        keep = np.flatnonzero((counts.sum(1) > 0) | (counts.sum(0) > 0))
    counts = counts[np.ix_(keep, keep)]
    names = [names[i] for i in keep]
    row_sums = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(row_sums > 0, counts / row_sums, np.nan)
    z = [[None if np.isnan(v) else float(v) for v in row] for row in fractions]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            customdata=counts.astype(np.int64),
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "share of row"},
            hovertemplate="truth %{y}<br>predicted %{x}<br>%{z:.1%} (%{customdata} px)"
            "<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis={"title": "predicted", "tickangle": -45},
        yaxis={"title": "ground truth", "autorange": "reversed"},
        height=max(360, 28 * len(names) + 160),
    )
    return fig


def pruning_tradeoff(
    points: Sequence[Mapping],
    title: str = "U-Net++ pruning: accuracy vs latency",
) -> go.Figure:
    """mIoU against measured latency for pruning levels L1..L4 (the U-Net++ paper's figure).

    Args:
        points: one mapping per (model, mode, level) with ``model`` (label), ``mode``
            ("fast" or "accurate"), ``level`` (1..4), ``miou``, ``latency_ms`` and
            ``params`` (parameters used at that level; sets the marker area); an optional
            ``miou_ci95`` (``[low, high]``) is drawn as an error bar.

    Returns:
        One ``Scatter`` trace per (model, mode), points ordered by level and labelled
        ``L1``..``L4``; one colour per model; fast mode solid with round markers and its
        labels above, accurate mode dashed with diamonds and its labels below (at L1 the
        two modes are the same head, so their points meet: the labels must not).
    """
    params = [float(p["params"]) for p in points if p.get("params")]
    biggest = max(params) if params else 1.0
    fig = go.Figure()
    models = list(dict.fromkeys(p["model"] for p in points))
    for k, model in enumerate(models):
        for mode in LEVEL_MODES:
            rows = sorted(
                (p for p in points if p["model"] == model and p["mode"] == mode),
                key=lambda p: p["level"],
            )
            if not rows:
                continue
            # Marker area proportional to parameters: diameter ~ sqrt(params).
            sizes = [10 + 30 * (float(p.get("params") or 0) / biggest) ** 0.5 for p in rows]
            extra = {}
            if any(p.get("miou_ci95") for p in rows):
                extra["error_y"] = _error(
                    [p["miou"] for p in rows], [p.get("miou_ci95") for p in rows]
                )
            fig.add_scatter(
                name=f"{model} · {mode}",
                x=[p["latency_ms"] for p in rows],
                y=[p["miou"] for p in rows],
                mode="lines+markers+text",
                text=[f"L{p['level']}" for p in rows],
                textposition="top center" if mode == "fast" else "bottom center",
                customdata=[[p["level"], p.get("params") or 0] for p in rows],
                marker={
                    "size": sizes,
                    "color": model_color(k),
                    "opacity": 0.75,
                    "symbol": "circle" if mode == "fast" else "diamond-open",
                    "line": {"width": 2, "color": model_color(k)},
                },
                line={"color": model_color(k), "dash": "solid" if mode == "fast" else "dash"},
                hovertemplate=(
                    "L%{customdata[0]} "
                    + mode
                    + "<br>%{x:.1f} ms<br>mIoU %{y:.3f}<br>%{customdata[1]:,} params"
                    "<extra>" + model + "</extra>"
                ),
                **extra,
            )
    fig.update_layout(
        title=title,
        xaxis={"title": "latency per image (ms, median)", "rangemode": "tozero"},
        yaxis={"title": "mIoU"},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def training_curves(
    loss_curve: Mapping[str, Sequence],
    val_curve: Mapping[str, Sequence],
    title: str | None = None,
) -> go.Figure:
    """Training loss per step and, once a validation has run, validation mIoU per epoch.

    Args:
        loss_curve: ``{"step": [...], "loss": [...]}``.
        val_curve: ``{"epoch": [...], "val_miou": [...]}`` (``train_loss`` optional, drawn
            per epoch on the loss panel at the epoch's last step when ``step`` is given).

    Returns:
        A figure with traces ``loss per step`` (x1/y1), optional ``epoch mean loss``
        (x1/y1) and, when there are validations, ``val mIoU`` (x2/y2); a legend names them.
    """
    validated = bool(val_curve.get("epoch"))
    if validated:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "validation mIoU"),
                            horizontal_spacing=0.12)  # fmt: skip
    else:
        fig = make_subplots(rows=1, cols=1, subplot_titles=("training loss",))
    fig.add_scatter(
        name="loss per step",
        x=list(loss_curve.get("step", [])),
        y=list(loss_curve.get("loss", [])),
        mode="lines",
        line={"color": MODEL_COLORS[0]},
        row=1,
        col=1,
    )
    if val_curve.get("step") and val_curve.get("train_loss"):
        fig.add_scatter(
            name="epoch mean loss",
            x=list(val_curve["step"]),
            y=list(val_curve["train_loss"]),
            mode="markers",
            marker={"color": MODEL_COLORS[0], "symbol": "diamond", "size": 9},
            row=1,
            col=1,
        )
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    if validated:
        fig.add_scatter(
            name="val mIoU",
            x=list(val_curve["epoch"]),
            y=list(val_curve.get("val_miou", [])),
            mode="lines+markers",
            line={"color": MODEL_COLORS[2]},
            row=1,
            col=2,
        )
        fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=2)
        fig.update_yaxes(title_text="mIoU", rangemode="tozero", row=1, col=2)
    fig.update_layout(
        title=title, showlegend=True, height=360, margin={"t": 60, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": -0.35, "x": 0},
    )  # fmt: skip
    return fig


def class_frequency_bars(
    class_names: Sequence[str],
    pixel_counts: Sequence[int] | np.ndarray,
    colors: Sequence[Sequence[int]],
    title: str = "Pixels per class",
) -> go.Figure:
    """Share of labelled pixels per class, each bar in its class colour.

    Returns:
        One ``Bar`` trace; ``y`` holds fractions of all counted pixels, ``customdata``
        the pixel counts.
    """
    counts = np.asarray(pixel_counts, dtype=np.int64)
    if len(counts) != len(class_names) or len(colors) != len(class_names):
        raise ValueError(
            f"{len(class_names)} class names but {len(counts)} counts and {len(colors)} colours"
        )
    total = int(counts.sum()) or 1
    fig = go.Figure(
        go.Bar(
            x=list(class_names),
            y=(counts / total).tolist(),
            customdata=counts.tolist(),
            marker={"color": [_hex(c) for c in colors], "line": {"color": "#444", "width": 1}},
            hovertemplate="%{x}: %{y:.2%} (%{customdata:,} px)<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        yaxis={"title": "share of labelled pixels", "tickformat": ".0%"},
        xaxis={"title": "class", "tickangle": -45},
        margin={"t": 50, "b": 10},
    )
    return fig
