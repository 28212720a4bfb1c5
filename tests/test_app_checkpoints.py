"""The Checkpoints page (AppTest) and the file operations behind it."""

from __future__ import annotations

import io
import json
import re
import shutil

import pytest
import torch
from checkpoint_cases import CASES
from markdown_text import shown
from PIL import Image
from streamlit.testing.v1 import AppTest

from segdemo.checkpoints import CheckpointError, load_checkpoint, read_metadata
from segdemo_app import checkpoint_store

TIMEOUT = 60


def open_page() -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    return at.switch_page("pages/checkpoints.py").run()


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    uploader = at.file_uploader[-1]
    assert uploader.key.startswith("checkpoints_upload_")
    return uploader.set_value((name, data, "application/octet-stream")).run()


class RunsCode:
    """Unpickling this calls ``open(marker, "w")``: it creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_pt(marker) -> bytes:
    buffer = io.BytesIO()
    torch.save({"segdemo": "{}", "state_dict": {}, "payload": RunsCode(marker)}, buffer)
    return buffer.getvalue()


def test_lists_and_details_the_fixture_checkpoints(app_dirs):
    at = open_page()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["model"]) == ["unet", "unetpp"]
    assert list(table["input size"]) == ["32×64", "32×64"]
    assert set(table["dataset"]) == {"synthetic"}
    assert len(at.get("plotly_chart")) == 1
    assert at.get("plotly_chart")[0].key == "checkpoints_iou_chart"
    # Bundled checkpoints are read-only here: no rename, no delete.
    assert not [b for b in at.button if b.key in ("checkpoints_delete", "checkpoints_rename")]

    at.selectbox(key="checkpoints_selected").set_value(
        str(app_dirs["bundled"] / "unetpp.safetensors")
    ).run()
    levels = at.dataframe[1].value  # U-Net++: one row per pruning level
    assert list(levels["level"]) == ["L1", "L2", "L3", "L4"]
    assert levels["params fast (M)"].is_monotonic_increasing


def test_malicious_pickle_is_refused_and_never_runs(app_dirs, tmp_path):
    marker = tmp_path / "pwned.txt"
    data = malicious_pt(marker)
    # The payload is real: an unsafe load would create the marker.
    sanity = tmp_path / "sanity.txt"
    torch.load(io.BytesIO(malicious_pt(sanity)), weights_only=False)
    assert sanity.exists()

    at = upload(open_page(), "evil.pt", data)
    assert not at.exception
    assert len(at.error) == 1 and "evil.pt was refused" in shown(at.error[0].value)
    assert not marker.exists()
    assert not app_dirs["uploaded"].exists() or not any(app_dirs["uploaded"].iterdir())


def test_truncated_safetensors_is_refused(app_dirs):
    data = (app_dirs["bundled"] / "unet.safetensors").read_bytes()
    at = upload(open_page(), "cut.safetensors", data[: len(data) // 2])
    assert not at.exception
    assert len(at.error) == 1 and shown(at.error[0].value).startswith("cut.safetensors is")
    assert not app_dirs["uploaded"].exists() or not any(app_dirs["uploaded"].iterdir())


def test_good_upload_appears_and_never_overwrites(app_dirs):
    data = (app_dirs["bundled"] / "unet.safetensors").read_bytes()
    at = upload(open_page(), "mine.safetensors", data)
    assert not at.exception and not at.error
    assert "uploaded/mine.safetensors" in shown(at.success[0].value)
    at = upload(at, "mine.safetensors", data)
    assert "mine-2.safetensors" in shown(at.success[0].value)
    assert sorted(p.name for p in app_dirs["uploaded"].iterdir()) == [
        "mine-2.safetensors",
        "mine.safetensors",
    ]
    assert len(at.dataframe[0].value) == 4
    assert at.selectbox(key="checkpoints_selected").value.endswith("mine-2.safetensors")


def test_pt_upload_is_converted_to_safetensors(app_dirs):
    checkpoint = load_checkpoint(app_dirs["bundled"] / "unetpp.safetensors")
    buffer = io.BytesIO()
    torch.save(
        {"segdemo": json.dumps(checkpoint.metadata), "state_dict": checkpoint.model.state_dict()},
        buffer,
    )
    at = upload(open_page(), "legacy.pth", buffer.getvalue())
    assert not at.exception and not at.error
    converted = app_dirs["uploaded"] / "legacy.safetensors"
    assert read_metadata(converted)["model"] == "unetpp"
    assert [p.name for p in app_dirs["uploaded"].iterdir()] == ["legacy.safetensors"]


def test_rename_then_delete_with_confirmation(app_dirs):
    run = app_dirs["runs"] / "demo"
    run.mkdir()
    shutil.copyfile(app_dirs["bundled"] / "unet.safetensors", run / "best.safetensors")
    at = open_page()
    at.selectbox(key="checkpoints_selected").set_value(str(run / "best.safetensors")).run()

    at.text_input(key="checkpoints_new_name").input("first try").run()
    at.button(key="checkpoints_rename").click().run()
    assert not at.exception and not at.error
    renamed = run / "first_try.safetensors"
    assert renamed.is_file() and not (run / "best.safetensors").exists()
    assert at.selectbox(key="checkpoints_selected").value == str(renamed)

    assert at.button(key="checkpoints_delete").disabled  # not confirmed yet
    at.checkbox(key="checkpoints_confirm_delete").check().run()
    at.button(key="checkpoints_delete").click().run()
    assert not at.exception and not at.error
    assert not renamed.exists()
    assert "Deleted first_try.safetensors" in shown(at.success[0].value)
    assert len(at.dataframe[0].value) == 2


def test_store_refuses_to_overwrite_on_rename(tmp_path, tiny_checkpoints):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    shutil.copyfile(tiny_checkpoints["unet"], a)
    shutil.copyfile(tiny_checkpoints["unetpp"], b)
    with pytest.raises(CheckpointError, match="b.safetensors already exists"):
        checkpoint_store.rename_checkpoint(a, "b")
    assert read_metadata(b)["model"] == "unetpp" and a.exists()
    with pytest.raises(CheckpointError, match="not a checkpoint file"):
        checkpoint_store.import_checkpoint(b"x", "notes.txt", tmp_path)


def test_every_crafted_checkpoint_upload_is_refused_and_nothing_is_kept(app_dirs, tmp_path):
    """Each broken metadata field, size bomb and wrong shape, uploaded in one session."""
    at = open_page()
    for name, make, expected in CASES:
        path = make(tmp_path)
        at = upload(at, path.name, path.read_bytes())
        assert not at.exception, name
        assert len(at.error) == 1, name
        message = shown(at.error[0].value)
        assert re.search(expected, message), (name, message)
        assert not app_dirs["uploaded"].exists() or not any(app_dirs["uploaded"].iterdir()), name
    assert len(at.dataframe[0].value) == 2  # the two good ones, still listed
    assert not at.warning  # and no broken file: nothing was kept


def test_the_issues_checkpoint_is_refused_and_every_page_keeps_working(app_dirs, tmp_path):
    """A real U-Net checkpoint with "label_set": "cityscapes19" used to pass the upload check
    and then take down the sidebar, Segment and Checkpoints for every new session."""
    unet = load_checkpoint(app_dirs["bundled"] / "unet.safetensors")
    bad = dict(unet.metadata, label_set="cityscapes19")
    path = checkpoint_store.save_checkpoint(tmp_path / "unet.safetensors", unet.model, bad)
    at = upload(open_page(), "unet.safetensors", path.read_bytes())
    assert "label_set should be a JSON object" in shown(at.error[0].value)
    fresh = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert not fresh.exception and not fresh.error
    fresh.switch_page("pages/checkpoints.py").run()
    assert not fresh.exception and not fresh.error


def test_uploads_get_the_mode_of_trained_checkpoints(app_dirs):
    data = (app_dirs["bundled"] / "unet.safetensors").read_bytes()
    kept = checkpoint_store.import_checkpoint(data, "mine.safetensors", app_dirs["uploaded"])
    trained = app_dirs["bundled"] / "unet.safetensors"  # written by training
    assert kept.stat().st_mode & 0o777 == trained.stat().st_mode & 0o777 == 0o644


def test_the_uploader_states_and_keeps_its_limit(app_dirs):
    uploader = open_page().file_uploader[-1]
    assert uploader.proto.max_upload_size_mb == checkpoint_store.MAX_UPLOAD_MB == 500
    assert "up to 500 MB" in uploader.label


def test_upload_over_the_stated_limit_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"big.safetensors is 2.0 MB; .* at most 1 MB"):
        checkpoint_store.import_checkpoint(b"x" * 2**21, "big.safetensors", tmp_path, max_mb=1)
    assert not any(tmp_path.iterdir())


def test_broken_file_in_the_store_is_listed_with_its_reason_and_can_be_deleted(app_dirs):
    app_dirs["uploaded"].mkdir()
    by_name = {name: (make, expected) for name, make, expected in CASES}
    make, expected = by_name["label_set_is_a_string"]
    broken = make(app_dirs["uploaded"])
    at = open_page()
    assert not at.exception
    assert "1 file in the checkpoint folders fails a check" in shown(at.warning[0].value)
    table, problems = (frame.value for frame in at.dataframe)
    assert len(table) == 2  # the good ones
    assert list(problems["file"]) == ["uploaded/label_set_is_a_string (broken)"]
    assert re.search(expected, problems["problem"][0])

    at.selectbox(key="checkpoints_selected").set_value(str(broken)).run()
    assert not at.exception
    assert re.search(expected, shown(at.error[0].value))
    at.checkbox(key="checkpoints_confirm_delete").check().run()
    at.button(key="checkpoints_delete").click().run()
    assert not at.exception and not at.error and not at.warning
    assert not broken.exists()
    assert "Deleted label_set_is_a_string.safetensors" in shown(at.success[0].value)


def test_metadata_is_shown_as_text_never_as_markdown(app_dirs, tmp_path):
    """Strings a file carries (a date, a dataset path) reach the page as they are."""
    unet = load_checkpoint(app_dirs["bundled"] / "unet.safetensors")
    created = "![x](http://example.com/x.png) [click](http://example.com) <b>bold</b>"
    data = tmp_path / "cityscapes_pairs"  # a folder in the pairs layout
    (data / "train").mkdir(parents=True)
    Image.new("RGB", (8, 4)).save(data / "train" / "0.jpg")
    meta = dict(unet.metadata, created=created)
    meta.pop("dataset_format", None)  # as written before the detected format was stored
    meta["train_config"] = dict(meta["train_config"], data=str(data), data_format="auto")
    run = app_dirs["runs"] / "run"
    checkpoint_store.save_checkpoint(run / "best.safetensors", unet.model, meta)
    at = open_page()
    at.selectbox(key="checkpoints_selected").set_value(str(run / "best.safetensors")).run()
    assert not at.exception and not at.error
    details = at.text[0].value
    assert f"created: {created}" in details
    assert "trained on: pairs · cityscapes_pairs, epoch" in details
    datasets = list(at.dataframe[0].value["dataset"])
    assert "pairs · cityscapes_pairs" in datasets and not any(str(tmp_path) in d for d in datasets)
    for element in [*at.markdown, *at.caption, *at.error, *at.success, *at.warning]:
        assert "http://" not in element.value and "<b>" not in element.value


def test_a_run_stopped_before_its_first_validation_is_not_offered(app_dirs):
    from segdemo.train import TrainConfig, fit
    from segdemo_app import common

    out = app_dirs["runs"] / "early-stop"

    def stop(event):
        if event["event"] == "step":
            (out / "STOP").touch()

    fit(TrainConfig(data="synthetic", data_options={"length": 8}, model_kwargs={"base_width": 4},
                    size=(32, 32), batch_size=4, epochs=2, workers=0, precision="fp32", log_every=1,
                    out=str(out)), callbacks=[stop])  # fmt: skip
    assert (out / "last.safetensors").is_file() and not (out / "best.safetensors").exists()
    listed = [row["path"] for row in common.available_checkpoints()]
    assert listed and str(out / "last.safetensors") not in listed
    assert str(out / "last.safetensors") not in [b["path"] for b in common.broken_checkpoints()]
