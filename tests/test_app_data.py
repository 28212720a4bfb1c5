"""The Data page: synthetic scenes, a small folder with a problem, and a bad folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from markdown_text import shown
from PIL import Image
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "data.py")
TIMEOUT = 180  # torch import and synthetic rendering on a busy CPU


@pytest.fixture
def page(no_checkpoints) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_synthetic_counts_problems_and_class_chart(page):
    metrics = _metrics(page)
    assert metrics["Format"] == "synthetic"
    assert metrics["train images"] == "512" and metrics["val images"] == "64"
    assert [s.value for s in page.success] == ["The loader reported no problems."]
    assert len(page.get("plotly_chart")) == 1  # class frequencies

    page.radio(key="data_view").set_value("Grid").run()
    page.number_input(key="data_index").set_value(60).run()  # a grid near the end of the split
    assert not page.exception


def test_folder_dataset_with_a_problem(page, tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{i}.png"
        )
        mask = rng.integers(0, 19, (16, 32), dtype=np.uint8)
        mask[0, 0] = 77  # not a train id: the loader maps it to ignore and says so
        Image.fromarray(mask, mode="L").save(tmp_path / "masks" / f"{i}.png")

    page.radio(key="data_source").set_value("A dataset folder").run()
    page.text_input(key="data_folder").input(str(tmp_path)).run()
    page.radio(key="data_split").set_value("train").run()
    assert not page.exception and not page.error
    metrics = _metrics(page)
    assert metrics["Format"] == "folder" and metrics["train images"] == "5"
    assert any("problem(s) reported" in e.label for e in page.expander)
    assert any("outside 0..18" in t.value for t in page.text)  # file names: plain text
    assert len(page.get("plotly_chart")) == 1


def test_bad_folder_is_one_error(page, tmp_path):
    page.radio(key="data_source").set_value("A dataset folder").run()
    page.text_input(key="data_folder").input(str(tmp_path / "missing")).run()
    assert not page.exception
    assert [shown(e.value) for e in page.error] == [
        f"dataset folder {tmp_path / 'missing'} does not exist"
    ]

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    page.text_input(key="data_folder").input(str(tmp_path / "junk")).run()
    assert not page.exception
    assert len(page.error) == 1 and "cannot tell the dataset format" in shown(page.error[0].value)
