"""The Compare page on two tiny checkpoints (U-Net and U-Net++) and the synthetic set."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_text import shown
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "compare.py")
TIMEOUT = 240  # torch import, evaluation and latency timing on a busy CPU


def _by_title(at, words: str) -> dict:
    """The one chart whose title holds ``words``."""
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (spec,) = [s for s in specs if words in s["layout"].get("title", {}).get("text", "")]
    return spec


def test_compare_shows_intervals_paired_differences_and_error_maps(app_dirs):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    picker = at.multiselect(key="compare_checkpoints")
    assert len(picker.value) == 2  # both tiny models, the better one first
    # U-Net first: the first checkpoint is the reference of the comparison.
    # Listed by their display names, with the architecture beside them.
    assert sorted(picker.options) == ["unet (unet)", "unetpp (unetpp)"]
    picker.set_value(["unet", "unetpp"]).run()
    at.number_input(key="compare_limit").set_value(4).run()
    assert at.button(key="compare_evaluate").label == "Evaluate 2 checkpoints"
    assert not at.get("plotly_chart")

    at.button(key="compare_evaluate").click().run()
    assert not at.exception and not at.error
    assert at.button(key="compare_evaluate").disabled  # results kept for this selection

    # Each checkpoint at its opening setting; a U-Net++ setting is a model of its own.
    chosen = at.multiselect(key="compare_models").value
    assert len(chosen) == 2 and "fast L1" in " ".join(at.multiselect(key="compare_models").options)
    unet, unetpp = chosen
    table = at.dataframe[0].value  # the results table
    assert list(table["model"]) == [unet, unetpp]
    assert list(table["architecture"]) == ["unet", "unetpp"]
    assert (table["images"] == 4).all() and table["mIoU"].between(0, 1).all()
    for miou, ci in zip(table["mIoU"], table["mIoU 95% CI"], strict=True):
        low, high = (float(x) for x in ci.split(" – "))
        assert low <= round(miou, 3) <= high

    # Intervals as error bars: the mIoU chart and the per-class chart.
    miou_chart = _by_title(at, "mIoU with 95% intervals")
    assert [t["name"] for t in miou_chart["data"]] == [unet, unetpp]
    assert all("arrayminus" in t["error_x"] for t in miou_chart["data"])
    per_class = _by_title(at, "IoU per class")
    assert all("error_y" in t for t in per_class["data"])

    # The paired comparison against the reference, in a chart and a sentence.
    assert at.selectbox(key="compare_reference").value == unet
    diff_chart = _by_title(at, f"Difference from {unet}")
    assert [t["name"] for t in diff_chart["data"]] == [f"{unetpp} - {unet}"]
    assert diff_chart["data"][0]["x"][0] == "mIoU"
    sentences = [m.value for m in at.markdown if "95% CI" in m.value]
    assert len(sentences) == 1
    assert any(s in sentences[0] for s in ("no clear difference", "is better than"))

    # Per-image table, worst first for the reference; the first row's image is open.
    images = at.dataframe(key="compare_image_table").value
    assert len(images) == 4 and list(images.columns[:2]) == ["index", "file"]
    scores = images[unet].tolist()
    assert scores == sorted(scores)
    shown = _image_captions(at)
    first = int(images["index"].iloc[0])
    assert shown[0].startswith(f"image {first}:")
    assert "ground truth" in shown and f"A = {unet}, B = {unetpp}" in shown
    assert sum("errors" in c for c in shown) == 2 and sum("prediction" in c for c in shown) == 2

    # Largest disagreement first; selecting a row opens that image.
    at.radio(key="compare_sort").set_value("disagreement").run()
    assert not at.exception
    images = at.dataframe(key="compare_image_table").value
    gaps = images["difference"].abs().tolist()
    assert gaps == sorted(gaps, reverse=True)
    at.session_state["compare_image_table"] = {"selection": {"rows": [2], "columns": []}}
    at.run()
    assert not at.exception
    assert _image_captions(at)[0].startswith(f"image {int(images['index'].iloc[2])}:")

    # Another reference: the comparison turns around; nothing is evaluated again.
    at.selectbox(key="compare_reference").set_value(unetpp).run()
    assert not at.exception
    assert _by_title(at, f"Difference from {unetpp}")["data"][0]["name"] == f"{unet} - {unetpp}"
    assert at.button(key="compare_evaluate").disabled

    # The U-Net++ at level 1 joins as a third model, from the same evaluation.
    (level1,) = [o for o in at.multiselect(key="compare_models").options if o.endswith("fast L1")]
    at.multiselect(key="compare_models").select(level1).run()
    assert not at.exception and not at.error
    assert list(at.dataframe[0].value["model"]) == [unet, unetpp, level1]
    traces = _by_title(at, f"Difference from {unetpp}")["data"]
    assert [t["name"] for t in traces] == [f"{unet} - {unetpp}", f"{level1} - {unetpp}"]
    assert sum("errors" in c for c in _image_captions(at)) == 3
    assert at.button(key="compare_evaluate").disabled


def _image_captions(at) -> list[str]:
    """Captions of the page's images, in order."""
    return [caption for image in at.get("image") for caption in image.captions]


def test_compare_bad_folder_is_one_error(app_dirs, tmp_path):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    at.radio(key="compare_source").set_value("A dataset folder").run()
    at.text_input(key="compare_folder").input(str(tmp_path / "missing")).run()
    assert not at.exception
    assert [shown(e.value) for e in at.error] == [
        f"dataset folder {tmp_path / 'missing'} does not exist"
    ]
    assert not at.get("plotly_chart")


def test_compare_without_checkpoints(no_checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert "No checkpoints yet" in at.info[0].value


def test_image_table_orders_worst_first_or_by_disagreement():
    from segdemo_app.compare import image_table

    result = {
        "models": [{"name": "a"}, {"name": "b"}],
        "per_image": [
            {"index": 0, "path": "x/0.png", "miou": {"a": 0.5, "b": 0.65}},
            {"index": 1, "path": "x/1.png", "miou": {"a": 0.2, "b": 0.1}},
            {"index": 2, "path": "x/2.png", "miou": {"a": None, "b": None}},  # no labels
            {"index": 3, "path": "x/3.png", "miou": {"a": 0.7, "b": 0.3}},
        ],
    }
    worst = image_table(result, "a", None, "worst")
    assert [r["index"] for r in worst] == [1, 0, 3, 2] and "difference" not in worst[0]
    assert worst[0]["file"] == "1.png" and worst[0]["b"] == 0.1
    apart = image_table(result, "a", "b", "disagreement")
    assert [r["index"] for r in apart] == [3, 0, 1, 2]
    assert apart[0]["difference"] == pytest.approx(-0.4) and apart[-1]["difference"] is None


def test_wrong_classes_name_the_colours_of_the_mistakes():
    import numpy as np

    from segdemo.labels import get_label_set
    from segdemo_app.compare import legend_html, wrong_classes

    labels = get_label_set("cityscapes19")
    truth = np.array([[0, 0, 0, 0], [13, 13, 255, 255]])
    pred = np.array([[0, 13, 13, 2], [13, 0, 2, 2]])  # wrong: car, car, building, road
    wrong = wrong_classes(pred, truth, labels)
    assert wrong == {"car 50%": labels.colors[13], "building 25%": labels.colors[2],
                     "road 25%": labels.colors[0]}  # fmt: skip
    assert "&lt;b&gt;" in legend_html({"<b>": (1, 2, 3)}) and "#010203" in legend_html(
        {"x": (1, 2, 3)}
    )


def _study_json(folder, road: bool = False, name: str = "demo", runs: int = 2) -> None:
    """A study report as ``study --report`` writes it (two models, two seeds)."""
    import json

    def entry(name, key, miou, std, mode=None, level=None, latency=10.0):
        scores = ({"road_iou": miou + 0.62, "road_iou_std": 0.004, "road_f1": miou + 0.667,
                   "road_f1_std": 0.002} if road else {})  # fmt: skip
        return {"name": name, "key": key, "model": key.split(":")[0], "mode": mode,
                "level": level, "miou": miou, "miou_std": std, "pixel_accuracy": 0.8,
                "pixel_accuracy_std": 0.01, "per_class_iou": {"road": 0.9},
                "params": 2e6, "gflops": 1.5, "latency_ms": latency, "seeds": {}, **scores}  # fmt: skip

    diff = {"a": "unetpp (accurate L4)", "b": "unet", "miou_diff": 0.012,
            "miou_diff_ci95": [0.004, 0.02], "miou_diff_sign_flip": 0.0,
            "miou_diff_per_seed": [0.01, 0.014], "miou_diff_seed_std": 0.003,
            "per_class_iou_diff": {"road": 0.01}, "per_class_iou_diff_ci95": {"road": [0, 0.02]},
            "sentence": "unetpp (accurate L4) is better than unet by +1.2 points (95% CI +0.4 "
                        "to +2.0)"}  # fmt: skip
    levels = [entry("unetpp", f"unetpp:{m}:{k}", 0.2 + 0.02 * k, 0.01, m, k, 5.0 * k)
              for m in ("fast", "accurate") for k in (1, 2, 3, 4)]  # fmt: skip
    result = {
        "study": "demo", "description": "U-Net vs U-Net++", "seeds": [0, 1], "images": 50,
        "label_set": "road" if road else "cityscapes19", "reference": "unet", "models": [{"name": "unet"}, {"name": "unetpp"}],
        "entries": [entry("unet", "unet", 0.28, 0.01),
                    entry("unetpp (accurate L4)", "unetpp:accurate:4", 0.29, 0.01, "accurate", 4)],
        "differences": [diff], "claims": [{**diff, "claim": "deep supervision helps"}],
        "levels": levels,
        "runs": [{"model": m, "seed": k, "train_s": 600.0 + 60 * k}
                 for m in ("unet", "unetpp") for k in range(runs)],
        "training_time": {"total_s": 2520.0, "models": {
            "unet": {"mean_s": 630.0, "std_s": 42.4, "runs": 2},
            "unetpp": {"mean_s": 630.0, "std_s": 42.4, "runs": 2}}},
    }  # fmt: skip
    (folder / name).mkdir(parents=True)
    (folder / name / "study.json").write_text(json.dumps(result))


def test_the_study_view_shows_the_verdict_spread_differences_and_levels(
    app_dirs, tmp_path, monkeypatch
):
    _study_json(tmp_path / "studies")
    monkeypatch.setenv("SEGDEMO_STUDIES", str(tmp_path / "studies"))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.segmented_control(key="compare_view").set_value("Study").run()
    assert not at.exception
    assert shown(at.success[0].value).startswith("unetpp (accurate L4) has the highest mean val")
    assert "better than unet by +1.2 points" in shown(at.success[0].value)
    titles = [chart.proto.spec for chart in at.get("plotly_chart")]
    assert len(titles) == 3
    assert any("std over 2 seeds" in t for t in titles)
    assert any("Difference from unet" in t for t in titles)
    table = at.dataframe[0].value
    assert list(table["val mIoU"]) == ["0.280 ± 0.010", "0.290 ± 0.010"]
    assert "road IoU" not in table.columns
    assert any("42 min 00 s for all 4 runs" in c.value for c in at.caption)


def test_the_study_view_of_a_road_study_gives_road_iou_and_f1(app_dirs, tmp_path, monkeypatch):
    _study_json(tmp_path / "studies", road=True, name="a_road", runs=2)
    _study_json(tmp_path / "studies", name="b_classes", runs=3)
    monkeypatch.setenv("SEGDEMO_STUDIES", str(tmp_path / "studies"))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.segmented_control(key="compare_view").set_value("Study").run()
    assert not at.exception
    # the study with the most runs opens first, whatever the names' order
    study = at.selectbox(key="compare_study")
    assert study.options == ["b_classes", "a_road"]
    assert "road IoU" not in at.dataframe[0].value.columns
    study.select_index(1).run()
    assert "(0.290 ± 0.010; road IoU 0.910 ± 0.004)" in shown(at.success[0].value)
    table = at.dataframe[0].value
    assert list(table["road IoU"]) == ["0.900 ± 0.004", "0.910 ± 0.004"]
    assert list(table["road F1"]) == ["0.947 ± 0.002", "0.957 ± 0.002"]


def test_compare_opens_on_a_real_dataset_found_on_this_machine(app_dirs, tmp_path, monkeypatch):
    """With a dataset folder on the machine ($SEGDEMO_DATA here; else the folder the
    checkpoints were trained on), Compare opens on it, not on the synthetic scenes, and
    says what the synthetic scenes' numbers mean when they are chosen."""
    import numpy as np
    from PIL import Image

    from segdemo.labels import CITYSCAPES19
    from segdemo_app.dataset_picker import FOLDER, SYNTHETIC, SYNTHETIC_NOTE

    root = tmp_path / "street_pairs"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for i in range(2):
            photo = rng.integers(0, 256, (32, 32, 3), np.uint8)
            mask = CITYSCAPES19.colorize(rng.integers(0, 19, (32, 32)).astype(np.uint8))
            Image.fromarray(np.concatenate([photo, mask], 1)).save(root / split / f"{i}.jpg")
    monkeypatch.setenv("SEGDEMO_DATA", str(root))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert at.radio(key="compare_source").value == FOLDER
    assert at.text_input(key="compare_folder").value == str(root)
    assert at.button(key="compare_evaluate").label == "Evaluate 2 checkpoints"
    assert not [c for c in at.caption if c.value == SYNTHETIC_NOTE]
    at.radio(key="compare_source").set_value(SYNTHETIC).run()
    assert [c for c in at.caption if c.value == SYNTHETIC_NOTE]
