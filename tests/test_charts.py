"""The Plotly figures hold the numbers they were given, on the axes they claim."""

from __future__ import annotations

import numpy as np
import pytest

from segdemo import charts
from segdemo.labels import get_label_set


def test_per_class_iou_bars_one_trace_per_model():
    fig = charts.per_class_iou_bars(
        {"unet": {"road": 0.9, "car": None}, "unetpp": {"road": 0.8, "car": 0.5, "sky": 0.7}}
    )
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert [t.name for t in fig.data] == ["unet", "unetpp"]
    assert list(fig.data[0].x) == ["road", "car", "sky"]
    assert list(fig.data[0].y) == [0.9, None, None]
    assert list(fig.data[1].y) == [0.8, 0.5, 0.7]
    assert fig.layout.barmode == "group" and tuple(fig.layout.yaxis.range) == (0, 1)


def test_confusion_heatmap_is_row_normalised_and_drops_empty_classes():
    matrix = [[8, 2, 0], [0, 0, 0], [1, 0, 3]]  # rows = ground truth; class b never occurs
    fig = charts.confusion_heatmap(matrix, ["a", "b", "c"], hide_empty=False)
    heat = fig.data[0]
    assert heat.type == "heatmap" and list(heat.x) == ["a", "b", "c"]
    assert heat.z[0] == pytest.approx((0.8, 0.2, 0.0))
    assert list(heat.z[1]) == [None, None, None]
    assert heat.z[2] == pytest.approx((0.25, 0.0, 0.75))
    assert fig.layout.yaxis.title.text == "ground truth"

    # b is predicted once for a's pixels, so it stays; d is in neither truth nor prediction.
    fig = charts.confusion_heatmap(np.pad(np.asarray(matrix), (0, 1)), ["a", "b", "c", "d"])
    assert list(fig.data[0].y) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="3 class names"):
        charts.confusion_heatmap(np.zeros((2, 2)), ["a", "b", "c"])


def test_pruning_tradeoff_traces_per_mode_labelled_by_level():
    points = [
        {"model": "unetpp", "mode": mode, "level": level, "miou": 0.1 * level + (mode == "accurate") * 0.01,
         "latency_ms": 2.0 * level, "params": 1000 * level**2}
        for mode in ("accurate", "fast") for level in (4, 3, 2, 1)
    ]  # fmt: skip
    fig = charts.pruning_tradeoff(points)
    assert [t.name for t in fig.data] == ["unetpp · fast", "unetpp · accurate"]
    fast = fig.data[0]
    assert list(fast.text) == ["L1", "L2", "L3", "L4"]
    assert list(fast.x) == [2.0, 4.0, 6.0, 8.0]
    assert list(fast.y) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert fast.marker.size[0] < fast.marker.size[-1]  # more parameters, bigger marker
    assert fig.data[1].line.dash == "dash" and fast.line.dash == "solid"
    # The modes differ in marker too, and their labels sit on opposite sides (at L1 the
    # two modes are one head: their points meet, their labels must not).
    assert fast.marker.symbol != fig.data[1].marker.symbol
    assert fast.textposition != fig.data[1].textposition
    assert "latency" in fig.layout.xaxis.title.text and fig.layout.yaxis.title.text == "mIoU"


def test_training_curves_name_every_trace_and_add_the_miou_panel_once_validated():
    fig = charts.training_curves(
        {"step": [10, 20], "loss": [2.0, 1.5]},
        {"epoch": [1], "step": [20], "val_miou": [0.3], "train_loss": [1.7]},
    )
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["loss per step"].x) == [10, 20]
    assert list(by_name["loss per step"].y) == [2.0, 1.5]
    assert by_name["val mIoU"].xaxis == "x2" and list(by_name["val mIoU"].y) == [0.3]
    assert list(by_name["epoch mean loss"].x) == [20]
    assert fig.layout.showlegend  # the markers are named in a legend
    # Before the first validation there is no (empty) mIoU panel.
    early = charts.training_curves({"step": [10], "loss": [2.0]}, {"epoch": [], "val_miou": []})
    assert [t.name for t in early.data] == ["loss per step"]
    assert "xaxis2" not in early.layout or early.layout.xaxis2.domain is None


def test_class_frequency_bars_use_label_set_colours():
    labels = get_label_set("cityscapes19")
    counts = np.zeros(labels.num_classes, dtype=np.int64)
    counts[0], counts[10] = 300, 100
    fig = charts.class_frequency_bars(labels.names, counts, labels.colors)
    bar = fig.data[0]
    assert list(bar.x) == list(labels.names)
    assert bar.y[0] == pytest.approx(0.75) and bar.y[10] == pytest.approx(0.25)
    r, g, b = labels.colors[0]
    assert bar.marker.color[0] == f"#{r:02x}{g:02x}{b:02x}"
    with pytest.raises(ValueError):
        charts.class_frequency_bars(["a"], [1, 2], [(0, 0, 0)])


def test_per_class_iou_bars_draw_intervals_as_error_bars():
    fig = charts.per_class_iou_bars(
        {"unet": {"road": 0.9, "car": None}, "unetpp": {"road": 0.8, "car": 0.5}},
        intervals={"unet": {"road": [0.85, 0.93], "car": None}},
    )
    unet, unetpp = fig.data
    assert unet.error_y.array == pytest.approx((0.03, None)) and unet.error_y.symmetric is False
    assert unet.error_y.arrayminus[0] == pytest.approx(0.05) and unet.error_y.arrayminus[1] is None
    assert unetpp.error_y.array is None  # no intervals given for this model


def test_miou_intervals_one_point_per_model_with_its_interval():
    fig = charts.miou_intervals(
        [{"name": "unet", "miou": 0.30, "miou_ci95": [0.28, 0.33]},
         {"name": "unetpp fast L4", "miou": 0.31, "miou_ci95": None}]
    )  # fmt: skip
    assert [t.name for t in fig.data] == ["unet", "unetpp fast L4"]
    assert list(fig.data[0].x) == [0.30] and list(fig.data[0].y) == ["unet"]
    assert fig.data[0].error_x.array == pytest.approx((0.03,))
    assert fig.data[0].error_x.arrayminus == pytest.approx((0.02,))
    assert fig.data[1].error_x.array == (None,)


def test_paired_differences_in_points_with_intervals_and_a_zero_line():
    comparison = {
        "name": "unetpp", "reference": "unet", "miou_diff": 0.012, "miou_diff_ci95": [0.004, 0.02],
        "per_class_iou_diff": {"road": -0.01, "car": 0.03, "bus": None},
        "per_class_iou_diff_ci95": {"road": [-0.02, 0.0], "car": [0.01, 0.05], "bus": None},
    }  # fmt: skip
    fig = charts.paired_differences([comparison], colors={"unetpp": "#123456"})
    (trace,) = fig.data
    assert list(trace.x) == ["mIoU", "road", "car"]
    assert trace.y == pytest.approx((1.2, -1.0, 3.0))
    assert trace.error_y.array == pytest.approx((0.8, 1.0, 2.0))
    assert trace.error_y.arrayminus == pytest.approx((0.8, 1.0, 2.0))
    assert trace.marker.color == "#123456" and trace.name == "unetpp - unet"
    assert fig.layout.shapes[0].y0 == 0 and "unet" in fig.layout.title.text


def test_pruning_tradeoff_error_bars_when_points_carry_intervals():
    points = [
        {"model": "m", "mode": "fast", "level": k, "miou": 0.1 * k, "latency_ms": k,
         "params": k, "miou_ci95": [0.1 * k - 0.01, 0.1 * k + 0.02]}
        for k in (1, 2)
    ]  # fmt: skip
    (fast,) = charts.pruning_tradeoff(points).data
    assert fast.error_y.array == pytest.approx((0.02, 0.02))
    assert fast.error_y.arrayminus == pytest.approx((0.01, 0.01))
