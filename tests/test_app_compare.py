"""The Compare page on two tiny checkpoints (U-Net and U-Net++) and the synthetic set."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "compare.py")
TIMEOUT = 240  # torch import, evaluation and latency timing on a busy CPU


def test_compare_two_checkpoints(app_dirs):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert len(at.multiselect(key="compare_checkpoints").value) == 2  # both tiny models
    at.number_input(key="compare_limit").set_value(4).run()
    assert at.button(key="compare_evaluate").label == "Evaluate 2 checkpoints"
    assert not at.get("plotly_chart")

    at.button(key="compare_evaluate").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["model"]) == ["unet", "unetpp"]
    assert table["mIoU"].between(0, 1).all() and (table["images"] == 4).all()
    # per-class IoU bars, confusion matrix, U-Net++ pruning trade-off
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    assert at.button(key="compare_evaluate").disabled  # results kept for this selection
    assert len(at.get("image")) == 4  # image 0, its ground truth and two predicted masks

    # Another model's confusion matrix; nothing is evaluated again.
    at.selectbox(key="compare_confusion_model").select_index(1).run()
    assert not at.exception and len(at.get("plotly_chart")) == 3


def test_compare_bad_folder_is_one_error(app_dirs, tmp_path):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    at.radio(key="compare_source").set_value("A dataset folder").run()
    at.text_input(key="compare_folder").input(str(tmp_path / "missing")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"dataset folder {tmp_path / 'missing'} does not exist"]
    assert not at.get("plotly_chart")


def test_compare_without_checkpoints(no_checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert "No checkpoints yet" in at.info[0].value
