"""The Checkpoints page (AppTest) and the file operations behind it."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch
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
    assert len(at.error) == 1 and "evil.pt was refused" in at.error[0].value
    assert not marker.exists()
    assert not app_dirs["uploaded"].exists() or not any(app_dirs["uploaded"].iterdir())


def test_truncated_safetensors_is_refused(app_dirs):
    data = (app_dirs["bundled"] / "unet.safetensors").read_bytes()
    at = upload(open_page(), "cut.safetensors", data[: len(data) // 2])
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("cut.safetensors is")
    assert not app_dirs["uploaded"].exists() or not any(app_dirs["uploaded"].iterdir())


def test_good_upload_appears_and_never_overwrites(app_dirs):
    data = (app_dirs["bundled"] / "unet.safetensors").read_bytes()
    at = upload(open_page(), "mine.safetensors", data)
    assert not at.exception and not at.error
    assert "uploaded/mine.safetensors" in at.success[0].value
    at = upload(at, "mine.safetensors", data)
    assert "mine-2.safetensors" in at.success[0].value
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
    assert "Deleted first_try.safetensors" in at.success[0].value
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
