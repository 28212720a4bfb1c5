"""Pictures of masks: one colouriser, hidden and highlighted classes, the pruning diagram."""

from __future__ import annotations

import re

import numpy as np
import pytest

from segdemo import viz
from segdemo.labels import CITYSCAPES19, ROAD
from segdemo.models import create_model, get_model_config, inference_settings, list_models
from segdemo.models.registry import pruning_levels


def test_one_colouriser_out_of_range_ids_are_black_like_ignore():
    ids = np.array([[0, 13, 255], [19, 256, -1]])
    rgb = viz.colorize(ids, CITYSCAPES19)
    assert (rgb == CITYSCAPES19.colorize(ids)).all()
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[0, 1].tolist() == [0, 0, 142]
    # ignore, an id past the classes and ids outside 0..255 all show black (no wrapping:
    # 256 is not road, -1 is not ignore's colour by accident).
    assert rgb[0, 2].tolist() == rgb[1, 0].tolist() == rgb[1, 1].tolist() == [0, 0, 0]
    assert rgb[1, 2].tolist() == [0, 0, 0]


def test_hidden_classes_leave_the_colour_mask_and_the_overlay():
    mask = np.array([[0, 0, 13], [13, 2, 255]], dtype=np.uint8)
    photo = np.full((2, 3, 3), 200, np.uint8)
    car = CITYSCAPES19.names.index("car")
    colour = viz.colorize(mask, CITYSCAPES19, hidden={car})
    assert colour[0, 2].tolist() == list(viz.HIDDEN_COLOR) and colour[1, 0].tolist() == [0, 0, 0]
    assert colour[0, 0].tolist() == [128, 64, 128]  # road still shown
    blended = viz.overlay(photo, mask, CITYSCAPES19, alpha=0.5, hidden={car})
    assert blended[0, 2].tolist() == [200, 200, 200]  # the photo where the car was
    assert blended[0, 0].tolist() == [164, 132, 164]  # road at 50 %
    assert blended[1, 2].tolist() == [200, 200, 200]  # ignored, as before
    assert (viz.overlay(photo, mask, CITYSCAPES19, 0.5, hidden=()) != blended).any()


def test_highlight_fades_everything_but_one_class():
    mask = np.array([[0, 13]], dtype=np.uint8)
    rgb = np.array([[[100, 100, 100], [0, 0, 0]]], dtype=np.uint8)
    out = viz.highlight(rgb, mask, 13)
    assert out[0, 1].tolist() == [0, 0, 0]  # the class keeps its pixels
    faded = round(100 * (1 - viz.HIGHLIGHT_FADE) + 255 * viz.HIGHLIGHT_FADE)
    assert out[0, 0].tolist() == [faded] * 3
    with pytest.raises(ValueError, match="2x1 but mask is 1x1"):
        viz.highlight(rgb, mask[:, :1], 13)


def test_render_view_combines_view_hidden_and_highlight():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    mask = rng.integers(0, 2, (8, 8)).astype(np.uint8)
    assert (viz.render_view(photo, mask, ROAD, "mask") == viz.colorize(mask, ROAD)).all()
    overlay = viz.render_view(photo, mask, ROAD, "overlay", 0.3, hidden={0}, highlighted=1)
    expected = viz.highlight(viz.overlay(photo, mask, ROAD, 0.3, hidden={0}), mask, 1)
    assert (overlay == expected).all()
    with pytest.raises(ValueError, match="view must be one of"):
        viz.render_view(photo, mask, ROAD, "sketch")


@pytest.mark.parametrize("mode", ["fast", "accurate"])
@pytest.mark.parametrize("levels", [2, 3, 4])
def test_unetpp_nodes_lit_at_each_level(mode, levels):
    for level in range(1, levels + 1):
        nodes = viz.unetpp_nodes(levels, mode, level)
        assert len(nodes) == (levels + 1) * (levels + 2) // 2
        computed = {(n["i"], n["j"]) for n in nodes if n["computed"]}
        assert computed == {(i, j) for i in range(levels + 1) for j in range(levels + 1 - i)
                            if i + j <= level}  # fmt: skip
        heads = {n["j"] for n in nodes if n["head"]}
        outputs = {n["j"] for n in nodes if n["output"]}
        assert heads == set(range(1, levels + 1))
        assert outputs == ({level} if mode == "fast" else set(range(1, level + 1)))
        assert all(n["computed"] for n in nodes if n["output"])  # a used head is computed


def test_unetpp_nodes_without_deep_supervision_is_the_full_grid():
    nodes = viz.unetpp_nodes(4, None)
    assert all(n["computed"] for n in nodes)
    assert {n["j"] for n in nodes if n["output"]} == {4}
    with pytest.raises(ValueError, match="level must be in 1..4"):
        viz.unetpp_nodes(4, "fast", 5)
    with pytest.raises(ValueError, match="mode must be"):
        viz.unetpp_nodes(4, "fastest", 2)


@pytest.mark.parametrize("name", list_models())
def test_diagram_follows_the_registry_for_every_model(name):
    """The diagram is drawn from the model's own level count (a unetpp_ds on a depth-3
    encoder has two levels), for every setting the model runs."""
    config = get_model_config(name)
    model = create_model(name, num_classes=3, **config.tiny_kwargs)
    levels = pruning_levels(model)
    if not levels:
        assert inference_settings(model) == [(None, None)]
        return
    for mode, level in inference_settings(model):
        svg = viz.unetpp_grid_svg(viz.unetpp_nodes(levels, mode, level))
        found = re.findall(r'data-node="(\d+),(\d+)" data-state="(\w+)"', svg)
        states = {(int(i), int(j)): state for i, j, state in found}
        assert len(states) == (levels + 1) * (levels + 2) // 2
        assert all((s == "computed") == (i + j <= level) for (i, j), s in states.items())
        used = re.findall(r'data-head="(\d+)" data-state="used"', svg)
        assert sorted(map(int, used)) == ([level] if mode == "fast" else list(range(1, level + 1)))
        for name_in_legend in ("computed", "pruned", "head used"):
            assert f">{name_in_legend}</text>" in svg  # the diagram's legend
