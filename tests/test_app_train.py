"""The Train page: start a tiny run in its own process, follow it, stop, and the guard.

AppTest does not fire ``st.fragment(run_every=...)`` timers, so the test polls what the
fragment polls, ``segdemo.runs.get_run``, and re-runs the page once the run has finished.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest
from markdown_text import shown
from streamlit.testing.v1 import AppTest

from segdemo import runs

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "train.py")
TIMEOUT = 180


@pytest.mark.slow
def test_start_follow_and_finish_a_tiny_run(no_checkpoints, fill_tiny_train_form):
    from segdemo_app import common

    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert "No runs yet" in at.info[0].value
    fill_tiny_train_form(at)
    at.button(key="train_start").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]

    (run,) = runs.list_runs(common.RUNS_DIR)
    assert run.active and run.model == "unet" and run.config["size"] == [32, 64]
    command = " ".join(run.command)
    assert "--synthetic-length 8" in command and "--no-augment" in command  # synthetic default
    # The command shown can be pasted: quoted, and no flag without its value.
    shown = next(c.value for c in at.code if "segdemo train" in c.value)
    assert shown == shlex.join(run.command) and "--init-from" not in shown
    from segdemo.cli import build_parser

    build_parser().parse_args(shlex.split(shown)[3:])  # exits on a flag without its value
    assert at.selectbox(key="train_selected").value == run.run_id
    assert at.get("progress")  # "starting…" or steps
    assert at.button(key=f"train_stop_{run.run_id}")

    seen_progress, deadline = False, time.time() + 600
    while (info := runs.get_run(run.path)).active and time.time() < deadline:
        seen_progress |= info.summary["total_steps"] is not None
        time.sleep(1)
    log = (run.path / runs.LOG_FILE).read_text()
    assert info.status == "finished", f"{info.status}: {info.error}\n{log}"
    assert info.best_checkpoint is not None and info.best_miou is not None
    assert info.summary["fraction"] == 1.0 and info.summary["val_curve"]["epoch"] == [1]

    at.run()  # the page found again from the runs folder alone
    assert not at.exception
    assert any("Best checkpoint" in s.value for s in at.success)
    assert len(at.get("plotly_chart")) == 1  # loss and mIoU curves
    table = at.dataframe[-1].value
    assert table.loc[0, "status"] == "finished" and table.loc[0, "best checkpoint"]
    paths = [row["path"] for row in common.available_checkpoints()]
    assert str(info.best_checkpoint) in paths


def _fake_active_run(runs_dir: Path, pid: int, run_id: str = "20250101-000000-unet") -> Path:
    """A run folder midway through its first epoch (alive once a process holds its lock)."""
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    now = time.time()
    (run_dir / runs.RUN_FILE).write_text(json.dumps({
        "run_id": run_id, "pid": pid, "created": now - 5, "launched": now - 5,
        "command": ["python", "-m", "segdemo", "train"], "config": {"model": "unet"},
    }))  # fmt: skip
    events = [
        {"event": "start", "time": now - 4, "step": 0, "total_steps": 20, "config": {"epochs": 2}},
        {"event": "step", "time": now - 1, "step": 5, "total_steps": 20, "epoch": 0,
         "epochs": 2, "loss": 2.5, "lr": 1e-3, "images_per_s": 8.0, "eta_s": 12.0},
    ]  # fmt: skip
    (run_dir / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run_dir


def test_stop_button_and_single_run_guard(no_checkpoints, trainer_stand_in):
    from segdemo_app import common

    run_dir = _fake_active_run(common.RUNS_DIR, 12345)
    trainer_stand_in(run_dir)
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert at.button(key="train_start").disabled  # one run at a time...
    assert "already training" in at.warning[0].value
    at.checkbox(key="train_start_anyway").check().run()
    assert not at.button(key="train_start").disabled  # ...unless the user insists

    (bar,) = at.get("progress")
    assert "step 5/20" in bar.proto.text and "ETA" in bar.proto.text
    at.button(key=f"train_stop_{run_dir.name}").click().run()
    assert not at.exception
    assert (run_dir / runs.STOP_FILE).is_file()
    assert runs.get_run(run_dir).status == "stopping"


def test_pages_render_through_the_router(no_checkpoints):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    for page in ("pages/train.py", "pages/compare.py", "pages/data.py"):
        at.switch_page(page).run()
        assert not at.exception, page
    assert at.metric  # the Data page drew its counts


def test_the_form_has_a_widget_for_every_training_setting(no_checkpoints, fill_tiny_train_form):
    import dataclasses

    from segdemo import runs as runs_module
    from segdemo.config import TrainConfig
    from segdemo_app import common, train_form

    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    keys = {w.key for w in at.get("selectbox") + at.get("number_input") + at.get("text_input")}
    keys |= {w.key for w in at.checkbox}
    for f in dataclasses.fields(TrainConfig):
        if f.metadata.get("cli") and f.name not in train_form.SET_BY_THE_PAGE:
            if f.name == "augment":
                assert "train_augment_synthetic" in keys
            else:
                assert train_form.form_key(f.name) in keys, f.name
    # A new setting's values reach the run's command line.
    fill_tiny_train_form(at)
    at.selectbox(key="train_photometric").set_value("strong")
    at.text_input(key="train_scale_range").set_value("0.5,2")
    at.text_input(key="train_scale_range").set_value("2,1")
    at.button(key="train_start").click().run()
    assert "--scale-range must be MIN,MAX" in shown(at.error[0].value)  # refused, nothing started
    assert not runs_module.list_runs(common.RUNS_DIR)
