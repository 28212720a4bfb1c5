"""Two browser sessions at once: one trains, the other segments, and neither disturbs the other."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from segdemo import runs

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180


def _photo() -> bytes:
    image = np.zeros((48, 96, 3), np.uint8)
    image[:16] = (120, 170, 230)
    image[16:32] = (110, 90, 80)
    image[32:] = (90, 90, 95)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_a_training_session_and_a_segmenting_session_do_not_interfere(
    app_dirs, fill_tiny_train_form
):
    from segdemo_app import common

    trainer = AppTest.from_file(str(REPO / "pages" / "train.py"), default_timeout=TIMEOUT).run()
    fill_tiny_train_form(trainer, epochs=2)
    trainer.button(key="train_start").click().run()
    assert not trainer.exception and not trainer.error
    (run,) = runs.list_runs(common.RUNS_DIR)
    assert run.active

    # Meanwhile, in another session: upload a photo, get masks, switch the U-Net++ level.
    segmenter = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    segmenter.file_uploader(key="segment_uploads").set_value(
        ("street.png", _photo(), "image/png")
    ).run()
    assert not segmenter.exception and not segmenter.error
    masks = [i for i in segmenter.get("image") if not i.captions[0].startswith("photo")]
    assert len(masks) == 2
    unetpp = app_dirs["bundled"] / "unetpp.safetensors"
    segmenter.slider(key=f"segment_level::{unetpp}").set_value(2).run()
    assert not segmenter.exception and not segmenter.error
    assert "L2" in [i for i in segmenter.get("image") if "unetpp" in i.captions[0]][0].captions[0]

    # The sessions share no state: the trainer never saw the upload or the level.
    assert f"segment_level::{unetpp}" not in trainer.session_state
    assert "train_selected" not in segmenter.session_state

    deadline = time.time() + 600
    while (info := runs.get_run(run.path)).active and time.time() < deadline:
        time.sleep(1)
    assert info.status == "finished", info.error
    trainer.run()
    assert not trainer.exception and not trainer.error


def test_every_page_renders_while_the_store_holds_broken_files(app_dirs):
    """Broken files among the checkpoints (an upload, a run's best) never take a page or the
    sidebar down: they are not offered for segmenting, and the sidebar says they exist."""
    from checkpoint_cases import CASES

    makers = {name: make for name, make, _ in CASES}
    uploaded, run = app_dirs["uploaded"], app_dirs["runs"] / "crashed"
    uploaded.mkdir()
    run.mkdir()
    makers["label_set_is_a_string"](uploaded)
    makers["base_width_bomb"](uploaded)
    makers["text_as_safetensors"](run).rename(run / "best.safetensors")

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert "3 checkpoint files cannot be loaded" in at.sidebar.warning[0].value
    assert len(at.sidebar.text) == 2  # the two good checkpoints
    for page in sorted((REPO / "pages").glob("*.py")):  # AppTest runs a page without the router
        at.switch_page(f"pages/{page.name}").run()
        assert not at.exception, page.name
        assert at.title, page.name
    at.switch_page("pages/segment.py").run()
    offered = at.multiselect(key="segment_checkpoints").options
    assert len(offered) == 2 and not any("broken" in label for label in offered)
