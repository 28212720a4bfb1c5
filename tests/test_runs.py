"""Training runs as processes: command line, statuses from files and pids, stop, the guard.

No real training here (tests/test_app_train.py starts one): run folders are written by hand
and ``_launch`` is replaced where a test would otherwise start a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segdemo import runs
from segdemo.train import TrainConfig


def _write_run(run_dir: Path, pid: int | None, events: list[dict], launched: float = 1000.0):
    run_dir.mkdir(parents=True)
    meta = {"run_id": run_dir.name, "pid": pid, "created": launched, "launched": launched,
            "command": ["python", "-m", "segdemo", "train"], "args": ["--model", "unet"],
            "config": {"model": "unet", "epochs": 2}}  # fmt: skip
    (run_dir / runs.RUN_FILE).write_text(json.dumps(meta))
    with (run_dir / "progress.jsonl").open("w") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")


def _gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


START = {"event": "start", "time": 1001.0, "step": 0, "total_steps": 10, "config": {"epochs": 2},
         "device": "cpu", "train_images": 40, "val_images": 8, "pid": 1}  # fmt: skip


def _step(step, loss, t, eta=None):
    return {"event": "step", "step": step, "total_steps": 10, "epoch": (step - 1) // 5,
            "epochs": 2, "loss": loss, "lr": 1e-3, "images_per_s": 4.0,
            "eta_s": eta if eta is not None else 10.0 - step, "time": t}  # fmt: skip


def _epoch(epoch, step, miou, t):
    return {"event": "epoch", "epoch": epoch, "epochs": 2, "step": step, "train_loss": 1.0,
            "val_miou": miou, "eval_time_s": 2.0, "time": t, "per_class_iou": {"road": miou}}  # fmt: skip


# --------------------------------------------------------------------------- summary


def test_summarize_progress_running_run():
    events = [START, _step(2, 3.0, 1002.0), _step(4, 2.0, 1004.0, eta=6.0)]
    s = runs.summarize_progress(events, now=1005.0)
    assert s["phase"] == "training"
    assert s["step"] == 4 and s["total_steps"] == 10 and s["fraction"] == pytest.approx(0.4)
    assert s["last_loss"] == 2.0
    # 6 s left at the last event, 1 s since (no evaluation timed yet).
    assert s["eta_s"] == pytest.approx(5.0)
    assert s["loss_curve"] == {"step": [2, 4], "loss": [3.0, 2.0]}
    assert s["elapsed_s"] == pytest.approx(4.0)
    assert s["best_miou"] is None


def test_summarize_progress_eta_counts_remaining_evaluations():
    events = [START, _step(5, 2.0, 1005.0, eta=5.0), _epoch(1, 5, 0.2, 1007.0),
              _step(6, 1.5, 1008.0, eta=4.0)]  # fmt: skip
    s = runs.summarize_progress(events, now=1009.0)
    # 4 s at the last step event, 1 s since, one evaluation (2 s, as measured) to come.
    assert s["eta_s"] == pytest.approx(4.0 - 1.0 + 2.0)
    assert s["epoch"] == 1 and s["best_miou"] == 0.2 and s["checkpoint_step"] == 5


def test_summarize_progress_finished_and_resumed():
    events = [
        START,
        _step(5, 2.0, 1005.0),
        _epoch(1, 5, 0.2, 1006.0),
        _step(7, 1.9, 1007.0),  # lost: the process died, the run resumed from step 5
        {**START, "step": 5, "time": 1100.0, "resumed": True},
        _step(7, 1.5, 1102.0),
        _step(10, 1.0, 1104.0),
        _epoch(2, 10, 0.4, 1105.0),
        {"event": "end", "status": "finished", "time": 1105.5},
    ]
    s = runs.summarize_progress(events, now=2000.0)
    assert s["phase"] == "done" and s["eta_s"] == 0.0 and s["fraction"] == 1.0
    assert s["elapsed_s"] == pytest.approx(104.5)  # until the end, not until now
    assert s["loss_curve"] == {"step": [5, 7, 10], "loss": [2.0, 1.5, 1.0]}
    assert s["val_curve"]["epoch"] == [1, 2] and s["val_curve"]["val_miou"] == [0.2, 0.4]
    assert s["best_miou"] == 0.4 and s["last_miou"] == 0.4


def test_summarize_progress_empty_and_failed():
    assert runs.summarize_progress([])["phase"] == "waiting"
    s = runs.summarize_progress([START, {"event": "failed", "error": "ValueError: bad"}])
    assert s["phase"] == "failed" and s["error"] == "ValueError: bad"


def test_training_time_counts_each_attempt_and_not_the_pause_before_a_resume():
    events = [
        {"event": "start", "step": 0, "time": 1000.0},
        {"event": "step", "step": 10, "loss": 2.0, "time": 1060.0},
        {"event": "epoch", "epoch": 1, "step": 20, "time": 1100.0},
        {"event": "stopped", "step": 20, "time": 1101.0},
        {"event": "end", "status": "stopped", "time": 1102.0},
        # resumed a day later; then killed after one step event, resumed again
        {"event": "start", "step": 20, "time": 90000.0},
        {"event": "step", "step": 30, "loss": 1.5, "time": 90030.0},
        {"event": "start", "step": 20, "time": 95000.0},
        {"event": "step", "step": 30, "loss": 1.5},  # no time: ignored
        {"event": "epoch", "epoch": 2, "step": 40, "time": 95050.0},
        {"event": "end", "status": "finished", "time": 95051.0},
    ]
    assert runs.training_seconds(events) == pytest.approx(102.0 + 30.0 + 51.0)
    assert runs.training_seconds([]) == 0.0


def test_format_duration():
    assert runs.format_duration(None) == "?"
    assert runs.format_duration(42.4) == "42 s"
    assert runs.format_duration(75) == "1 min 15 s"
    assert runs.format_duration(3 * 3600 + 60) == "3 h 01 min"


# --------------------------------------------------------------------------- statuses


def test_list_runs_statuses(tmp_path, trainer_stand_in):
    alive, gone = trainer_stand_in, _gone_pid()
    finished = [START, _step(10, 1.0, 1002.0), _epoch(2, 10, 0.5, 1003.0),
                {"event": "end", "status": "finished", "time": 1004.0}]  # fmt: skip
    _write_run(tmp_path / "a-finished", gone, finished, launched=1000.0)
    _write_run(tmp_path / "b-running", alive, [START, _step(2, 3.0, 1002.0)], launched=1000.5)
    _write_run(tmp_path / "c-starting", alive, [], launched=1001.0)
    _write_run(tmp_path / "d-dead", gone, [START, _step(5, 2.0, 1005.0),
                                           _epoch(1, 5, 0.3, 1006.0)], launched=1001.5)  # fmt: skip
    (tmp_path / "d-dead" / "last.safetensors").write_bytes(b"")
    _write_run(tmp_path / "e-failed", gone, [START, {"event": "failed", "error": "E: x",
                                                     "time": 1002.0}], launched=1002.0)  # fmt: skip
    _write_run(tmp_path / "f-never-started", gone, [], launched=1002.5)
    (tmp_path / "f-never-started" / runs.LOG_FILE).write_text(
        "Traceback...\nerror: dataset folder /nope does not exist\n"
    )
    stopped = [{**START, "time": 1003.5}, _step(3, 2.0, 1004.0), {"event": "stopped", "reason": "STOP file",
               "step": 3}, {"event": "end", "status": "stopped", "time": 1005.0}]  # fmt: skip
    _write_run(tmp_path / "g-stopped", gone, stopped, launched=1003.0)
    (tmp_path / "g-stopped" / "last.safetensors").write_bytes(b"")
    (tmp_path / "not-a-run").mkdir()

    listed = runs.list_runs(tmp_path)
    status = {run.run_id: run.status for run in listed}
    assert status == {
        "a-finished": "finished",
        "b-running": "running",
        "c-starting": "starting",
        "d-dead": "dead",
        "e-failed": "failed",
        "f-never-started": "failed",
        "g-stopped": "stopped",
    }
    assert [run.run_id for run in listed][0] == "g-stopped"  # newest first
    by_id = {run.run_id: run for run in listed}
    assert by_id["a-finished"].best_miou == 0.5 and by_id["a-finished"].model == "unet"
    assert "resume" in by_id["d-dead"].hint and "step 5" in by_id["d-dead"].hint
    assert by_id["e-failed"].error == "E: x"
    assert by_id["f-never-started"].error == "dataset folder /nope does not exist"
    assert "resume" in by_id["g-stopped"].hint
    assert {run.run_id for run in runs.active_runs(tmp_path)} == {"b-running", "c-starting"}


def test_resumed_run_is_starting_until_its_new_start_event(tmp_path, trainer_stand_in):
    events = [START, _step(3, 2.0, 1003.0), {"event": "end", "status": "stopped", "time": 1004.0}]
    _write_run(tmp_path / "r", trainer_stand_in, events, launched=2000.0)  # relaunched later
    assert runs.get_run(tmp_path / "r").status == "starting"


def test_zombie_child_and_reused_pid_count_as_gone(trainer_stand_in):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 60
    while time.time() < deadline and Path(f"/proc/{process.pid}").exists():
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.05)
    assert not runs._pid_alive(process.pid)
    assert runs._pid_alive(trainer_stand_in)
    # A live process that is not segdemo (the pid was given to another program since).
    assert not runs._pid_alive(os.getpid())


def test_stop_run_writes_stop_and_status_is_stopping(tmp_path, trainer_stand_in):
    _write_run(tmp_path / "r", trainer_stand_in, [START, _step(2, 3.0, 1002.0)])
    runs.stop_run(tmp_path / "r")
    assert (tmp_path / "r" / "STOP").is_file()
    assert runs.get_run(tmp_path / "r").status == "stopping"


# --------------------------------------------------------------------------- starting


def test_single_run_guard(tmp_path, monkeypatch, trainer_stand_in):
    class FakeProcess:
        pid = trainer_stand_in

    launched = []
    monkeypatch.setattr(runs, "_launch", lambda run_dir, args: launched.append(args) or FakeProcess)
    config = TrainConfig(data="synthetic", model="unet", model_kwargs={"base_width": 4})
    first = runs.start_run(config, tmp_path)
    assert first.status == "starting" and first.active
    meta = json.loads((first.path / runs.RUN_FILE).read_text())
    assert meta["pid"] == trainer_stand_in and meta["command"][1:4] == ["-m", "segdemo", "train"]
    assert meta["args"][-3:] == ["--out", str(first.path.resolve()), "--quiet"]

    with pytest.raises(runs.RunAlreadyActive, match=first.run_id):
        runs.start_run(config, tmp_path)
    assert len(launched) == 1
    second = runs.start_run(config, tmp_path, allow_parallel=True)
    assert second.run_id != first.run_id and len(launched) == 2
    assert len(runs.active_runs(tmp_path)) == 2


def test_start_run_rejects_a_bad_folder_before_launching(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "_launch", lambda run_dir, args: pytest.fail("launched"))
    with pytest.raises(ValueError, match="does not exist"):
        runs.start_run(TrainConfig(data=str(tmp_path / "nope")), tmp_path / "runs")
    assert not list((tmp_path / "runs").glob("*/"))


def test_new_run_id_is_unique(tmp_path):
    first = runs.new_run_id("unet", tmp_path, now=0)
    (tmp_path / first).mkdir()
    assert runs.new_run_id("unet", tmp_path, now=0) == f"{first}-2"
    assert first.endswith("-unet")


def test_train_arguments_round_trip_through_the_cli():
    from segdemo.cli import build_parser
    from segdemo.config import values_from_arguments

    config = TrainConfig(
        data="synthetic",
        label_set="road",
        data_options={"length": 8},
        model="unetpp",
        model_kwargs={"base_width": 4, "deep_supervision": False, "dropout": 0.1},
        size=(32, 64),
        batch_size=4,
        epochs=3,
        max_steps=7,
        lr=5e-3,
        val_max_items=2,
        augment=False,
        scale_range=(0.5, 2.0),
        photometric="strong",
        loss="ohem_ce_dice",
        class_weighting="sqrt_inverse_frequency",
        encoder_lr_mult=0.1,
    )
    args = build_parser().parse_args(["train", *runs.train_arguments(config), "--out", "x"])
    parsed = TrainConfig.from_dict(values_from_arguments(vars(args)))
    assert parsed.to_dict() == {**config.to_dict(), "out": "x"}


def test_resume_run_relaunches_with_resume(tmp_path, monkeypatch, trainer_stand_in):
    class FakeProcess:
        pid = trainer_stand_in

    launched = []
    monkeypatch.setattr(runs, "_launch", lambda run_dir, args: launched.append(args) or FakeProcess)
    stopped = [START, _step(3, 2.0, 1003.0), {"event": "end", "status": "stopped", "time": 1004.0}]
    _write_run(tmp_path / "r", _gone_pid(), stopped)
    with pytest.raises(FileNotFoundError, match="last.safetensors"):
        runs.resume_run(tmp_path / "r")
    (tmp_path / "r" / "last.safetensors").write_bytes(b"")
    (tmp_path / "r" / runs.STOP_FILE).write_text("")
    info = runs.resume_run(tmp_path / "r")
    assert launched == [["--model", "unet", "--resume"]]
    assert info.status == "starting" and info.pid == trainer_stand_in
    assert not (tmp_path / "r" / runs.STOP_FILE).exists()
    with pytest.raises(runs.RunAlreadyActive):
        runs.resume_run(tmp_path / "r")


def test_summarize_progress_figures_agree_after_a_stop_and_a_fast_last_step():
    events = [START, *(
        {**_step(step, 2.0, 1000.0 + step), "images_per_s": rate}
        for step, rate in ((2, 4.0), (4, 5.0), (6, 3.0), (7, 101.0))  # the last: one short step
    ), {"event": "stopped", "reason": "stop file", "step": 8, "time": 1009.0}]  # fmt: skip
    s = runs.summarize_progress(events, now=1010.0)
    # The bar shows the step the checkpoint holds, as the resume hint says...
    assert s["step"] == s["checkpoint_step"] == 8 and s["fraction"] == pytest.approx(0.8)
    # ...and one step's odd rate does not become the run's speed.
    assert s["images_per_s"] == pytest.approx(4.5)
