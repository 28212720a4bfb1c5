"""The app within its limits (AppTest): the session budget, photo counts, a rename too long,
broken study reports, an unscorable ground truth and Markdown in upload names."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
from markdown_text import shown
from PIL import Image
from streamlit.testing.v1 import AppTest

from segdemo import limits

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60  # torch pages on a loaded 2-core machine


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def street(height: int = 48, width: int = 96) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 3] = (120, 170, 230)
    image[height // 3 :] = (90, 90, 95)
    return image


def run_app() -> AppTest:
    return AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()


def test_a_session_over_its_budget_is_told_so_and_the_page_stays_up(app_dirs):
    at = run_app()
    assert not at.exception
    at.session_state["segment_budget"] = limits.SessionBudget(limit=0.02)  # 20,000 pixels
    at.file_uploader(key="segment_uploads").set_value(
        ("street.png", png(street(64, 256)), "image/png")  # 16,384 pixels a model
    ).run()
    assert not at.exception and not at.error
    warnings = [shown(w.value) for w in at.warning]
    assert warnings and all("This session has used its processing budget" in w for w in warnings)
    assert any("segmenting street.png" in w for w in warnings)
    # A batch ZIP is refused by the same budget, with one sentence.
    at.session_state["segment_budget"] = limits.SessionBudget(limit=0.02)
    at.run()
    at.button(key="segment_batch_run").click().run()
    assert not at.exception
    assert any("the ZIP" in shown(e.value) for e in at.error)
    assert not [b for b in at.get("download_button") if b.key == "segment_batch_download"]


def test_photos_past_the_count_limit_are_left_out_with_a_message(app_dirs):
    count = limits.PHOTOS_MAX_COUNT
    uploads = [(f"p{k}.png", png(street(16 + k, 32)), "image/png") for k in range(count + 2)]
    at = run_app()
    assert at.file_uploader(key="segment_uploads").proto.max_upload_size_mb == limits.PHOTO_MAX_MB
    at.file_uploader(key="segment_uploads").set_value(uploads).run()
    assert not at.exception
    assert [shown(e.value) for e in at.error] == [
        f"Only the first {count} photos are used; 2 more were left out."
    ]
    assert len(at.radio(key="segment_photo").options) == count


def test_a_batch_over_its_pixel_limit_is_refused_in_one_sentence():
    from segdemo_app import segment as ui

    photo = ui.make_photo("k", "big.png", np.zeros((1000, 1000, 3), np.uint8))
    assert ui.check_batch([photo], [object()] * 2) == 2.0
    try:
        ui.check_batch([photo] * 101, [object()] * 2)
    except ValueError as e:
        assert str(e).startswith("101 photo(s) x 2 checkpoint(s) come to 202 megapixels")
    else:
        raise AssertionError("a batch over the limit was accepted")


def test_markdown_in_an_upload_name_is_shown_as_text(app_dirs):
    name = "**bold** [link](http://example.com) ![x](y.png).png"
    at = run_app()
    at.file_uploader(key="segment_uploads").set_value((name, b"not pixels", "image/png")).run()
    assert not at.exception
    assert len(at.error) == 1
    assert shown(at.error[0].value).startswith(name)
    assert "\\*\\*bold\\*\\*" in at.error[0].value and "\\[link\\]" in at.error[0].value


def test_a_ground_truth_without_labelled_pixels_says_there_is_nothing_to_score(app_dirs):
    at = run_app()
    at.file_uploader(key="segment_uploads").set_value(
        ("street.png", png(street()), "image/png")
    ).run()
    photo_key = at.session_state["segment_photo"]
    ignored = np.full((48, 96), 255, np.uint8)
    at.file_uploader(key=f"segment_truth::{photo_key}").set_value(
        ("blank_gt.png", png(ignored), "image/png")
    ).run()
    assert not at.exception and not at.error
    captions = [i.captions[0] for i in at.get("image") if i.captions[0].startswith("errors")]
    assert len(captions) == 2
    assert all("nothing to score" in c and "nan" not in c for c in captions)


def test_renaming_a_checkpoint_to_256_characters_is_refused_in_one_sentence(app_dirs):
    run = app_dirs["runs"] / "demo"
    run.mkdir()
    shutil.copyfile(app_dirs["bundled"] / "unet.safetensors", run / "best.safetensors")
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    at.switch_page("pages/checkpoints.py").run()
    at.selectbox(key="checkpoints_selected").set_value(str(run / "best.safetensors")).run()
    at.text_input(key="checkpoints_new_name").input("n" * 256).run()
    at.button(key="checkpoints_rename").click().run()
    assert not at.exception
    assert [shown(e.value) for e in at.error] == [
        f"the new name is 256 characters long; a checkpoint's name may be at most "
        f"{limits.CHECKPOINT_NAME_MAX_CHARS}"
    ]
    assert (run / "best.safetensors").is_file()


def test_the_store_turns_a_file_system_refusal_into_one_sentence(tmp_path, tiny_checkpoints):
    from segdemo.checkpoints import CheckpointError
    from segdemo_app import checkpoint_store

    source = tmp_path / "a.safetensors"
    shutil.copyfile(tiny_checkpoints["dir"] / "unet.safetensors", source)
    (tmp_path / "taken.safetensors").mkdir()  # a folder where the new name would go
    try:
        checkpoint_store.rename_checkpoint(source, "taken")
    except CheckpointError as e:
        assert "taken.safetensors" in str(e) or "a.safetensors" in str(e)
    else:
        raise AssertionError("renaming onto a folder was accepted")
    assert source.is_file()


def write_study(folder: Path, name: str, text: str) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "study.json").write_text(text)


def test_a_broken_study_report_gets_one_sentence_and_the_others_still_render(
    app_dirs, tmp_path, monkeypatch
):
    from test_app_compare import _study_json

    studies = tmp_path / "studies"
    _study_json(studies, name="good", runs=3)
    write_study(studies, "cut", '{"study": "cut", "seeds": [0, ')  # half-written
    write_study(studies, "list", "[1, 2, 3]")
    write_study(studies, "typed", json.dumps({
        "description": "x", "seeds": [0], "models": [], "entries": "unet", "differences": [],
        "claims": [], "levels": [],
    }))  # fmt: skip
    good = json.loads((studies / "good" / "study.json").read_text())
    good["entries"] = [{"name": "unet"}]  # the right type, values missing
    write_study(studies, "hollow", json.dumps(good))
    monkeypatch.setenv("SEGDEMO_STUDIES", str(studies))
    at = AppTest.from_file(str(REPO / "pages" / "compare.py"), default_timeout=120).run()
    at.segmented_control(key="compare_view").set_value("Study").run()
    assert not at.exception and not at.error
    study = at.selectbox(key="compare_study")
    assert study.options[0] == "good"  # the most runs first; the broken ones count none
    assert len(at.get("plotly_chart")) == 3
    expected = {
        "cut": "cut/study.json cannot be read as a study report (JSONDecodeError)",
        "list": "list/study.json is not a study report (it holds no JSON object)",
        "typed": "typed/study.json is not a complete study report (no valid 'entries')",
        "hollow": "hollow/study.json holds values the Study view cannot show",
    }
    for name, sentence in expected.items():
        at.selectbox(key="compare_study").set_value(studies / name / "study.json").run()
        assert not at.exception
        assert len(at.error) == 1 and shown(at.error[0].value).startswith(sentence), name
    at.selectbox(key="compare_study").set_value(studies / "good" / "study.json").run()
    assert not at.error and len(at.get("plotly_chart")) == 3


def damaged_run(runs_dir: Path) -> Path:
    """A run folder whose run.json is not an object and whose progress.jsonl mixes good
    events with every kind of damage."""
    run = runs_dir / "20261208-000000-unet"
    run.mkdir(parents=True)
    (run / "run.json").write_text("[1, 2]")
    good_start = {"event": "start", "time": 100.0, "step": 0, "total_steps": 4,
                  "config": {"model": "unet", "epochs": 2}}  # fmt: skip
    lines = [
        json.dumps(good_start),
        json.dumps({"event": "step", "time": 101.0, "step": 1, "loss": 0.9, "total_steps": 4}),
        json.dumps({"event": "step", "step": "two", "loss": 0.8}),  # a string step
        json.dumps({"event": "step", "time": 102.0}),  # no step, no loss
        json.dumps({"event": "epoch", "time": "noon", "epoch": 1}),
        json.dumps({"event": "epoch", "time": 103.0, "epoch": 1, "val_miou": True}),
        json.dumps({"event": "start", "time": 104.0, "config": [1]}),
        "[1, 2, 3]",
        '{"event": "step", "time": 1e999, "step": 3, "loss": 0.5}',
        '{"event": "epoch", "epo',
    ]
    (run / "progress.jsonl").write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\x00junk\n")
    return run


def test_a_damaged_run_folder_keeps_its_readable_events_and_the_train_page_renders(
    no_checkpoints,
):
    from segdemo import runs
    from segdemo.train import read_progress
    from segdemo_app import common

    run = damaged_run(common.RUNS_DIR)
    events = read_progress(run)
    assert [(e["event"], e.get("step")) for e in events] == [("start", 0), ("step", 1)]
    info = runs.get_run(run)
    assert info.model == "unet" and info.summary["step"] == 1 and info.pid is None
    at = AppTest.from_file(str(REPO / "pages" / "train.py"), default_timeout=120).run()
    assert not at.exception
    assert at.selectbox(key="train_selected").value == run.name


def test_a_video_longer_than_its_header_says_and_one_over_the_budget_get_one_sentence(
    app_dirs, tmp_path
):
    from test_limits import understated_webm

    clip = understated_webm(tmp_path / "liar.webm", frames=32, fps=1.0, claimed_ms=2000.0)
    at = run_app()
    at.radio(key="segment_source").set_value("video").run()
    at.file_uploader(key="segment_video_upload").set_value(
        ("liar [x](http://e.com).webm", clip.read_bytes(), "video/webm")
    ).run()
    at.button(key="segment_video_run").click().run()
    assert not at.exception
    assert len(at.error) == 1
    assert shown(at.error[0].value).startswith(
        "liar [x](http://e.com).webm holds more than 30 s of video"
    )
    assert not at.get("video")
    # The same page with a spent budget: the clip stops at its first frame.
    at.session_state["segment_budget"] = limits.SessionBudget(limit=0.001)
    at.button(key="segment_video_run").click().run()
    assert not at.exception
    assert "This session has used its processing budget" in shown(at.error[0].value)
    assert not at.get("video")


class Upload:
    """What the page reads of an ``st.file_uploader`` file."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.file_id, self._data = name, f"test-{name}", data

    def getvalue(self) -> bytes:
        return self._data


def test_photos_past_the_pixel_limit_are_left_out_before_they_are_decoded():
    from segdemo_app import segment as ui

    uploads = [Upload(f"{k}.png", png(street(100, 200))) for k in range(3)]  # 0.02 Mpx each
    uploads.insert(1, Upload("notes.png", b"not pixels"))
    photos, problems = ui.read_uploads(uploads, max_megapixels=0.045)
    assert [p.name for p in photos] == ["0.png", "1.png"]
    assert problems == [
        "notes.png is not an image segdemo can read (JPG, PNG, WebP, ...)",
        "2.png was left out: the photos together would exceed the 0.045 megapixels a page "
        "holds at once.",
    ]


def test_a_job_waits_for_a_server_slot_and_is_refused_when_none_frees_up():
    from segdemo_app import segment as ui

    slots = ui.server_slots()
    taken = 0
    while slots.acquire(timeout=0):  # every slot held by "other sessions"
        taken += 1
    try:
        assert taken == limits.SERVER_MAX_JOBS
        try:
            with ui.job_slot("segmenting x.png", wait_s=0.05):
                raise AssertionError("ran without a free slot")
        except limits.ServerBusy as e:
            assert str(e).startswith("The server is busy with other visitors' work, so segmenting")
    finally:
        for _ in range(taken):
            slots.release()
    with ui.job_slot("segmenting x.png", wait_s=0):  # a freed slot is taken at once
        pass
