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
    alive, gone = 12345, _gone_pid()
    finished = [START, _step(10, 1.0, 1002.0), _epoch(2, 10, 0.5, 1003.0),
                {"event": "end", "status": "finished", "time": 1004.0}]  # fmt: skip
    _write_run(tmp_path / "a-finished", gone, finished, launched=1000.0)
    _write_run(tmp_path / "b-running", alive, [START, _step(2, 3.0, 1002.0)], launched=1000.5)
    _write_run(tmp_path / "c-starting", alive, [], launched=1001.0)
    trainer_stand_in(tmp_path / "b-running")
    trainer_stand_in(tmp_path / "c-starting")
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
    _write_run(tmp_path / "r", 12345, events, launched=2000.0)  # relaunched later
    trainer_stand_in(tmp_path / "r")
    assert runs.get_run(tmp_path / "r").status == "starting"


def test_a_run_is_alive_while_its_lock_is_held_whatever_runs_under_its_pid(
    tmp_path, trainer_stand_in
):
    run_dir = tmp_path / "segdemo" / "r"
    _write_run(run_dir, os.getpid(), [START, _step(2, 3.0, 1002.0)])
    # A live process under the recorded pid, started from a folder named segdemo with
    # "segdemo train" in its command line (a venv inside a checkout named segdemo): the
    # run is still not alive, since nothing holds its lock.
    venv_python = tmp_path / "segdemo" / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    impostor = subprocess.Popen(
        [str(venv_python), "-c", "import time; time.sleep(60)", "-m", "segdemo", "train"],
        cwd=tmp_path / "segdemo",
    )
    try:
        meta = json.loads((run_dir / runs.RUN_FILE).read_text())
        (run_dir / runs.RUN_FILE).write_text(json.dumps({**meta, "pid": impostor.pid}))
        assert not runs.run_alive(run_dir)
        assert runs.get_run(run_dir).status == "dead"
    finally:
        impostor.kill()
        impostor.wait()
    holder = trainer_stand_in(run_dir)
    assert runs.run_alive(run_dir)
    assert runs.get_run(run_dir).status == "running"
    os.kill(holder, 9)  # the OS releases the lock of a killed process
    deadline = time.time() + 30
    while runs.run_alive(run_dir) and time.time() < deadline:
        time.sleep(0.05)
    assert runs.get_run(run_dir).status == "dead"


def test_a_folder_without_a_lock_file_reads_from_its_events(tmp_path):
    """Run folders from before the lock: finished, stopped, dead, as their files say."""
    _write_run(tmp_path / "old", _gone_pid(), [START, _step(2, 3.0, 1002.0)])
    assert not (tmp_path / "old" / ".train.lock").exists()
    assert runs.get_run(tmp_path / "old").status == "dead"
    assert not (tmp_path / "old" / ".train.lock").exists()  # looking creates nothing


def test_a_passed_lock_is_adopted_by_the_process_it_was_passed_to(tmp_path):
    from segdemo import files

    run_dir = tmp_path / "r"
    lock = files.take_run_lock(run_dir)
    with lock:
        child = subprocess.Popen(
            [sys.executable, "-c",
             "import os, sys, time\n"
             "from segdemo.files import take_run_lock\n"
             "lock = take_run_lock(sys.argv[1], wait_s=0)\n"
             "print('adopted' if lock is not None else 'refused', flush=True)\n"
             "time.sleep(60)", str(run_dir)],
            env={**os.environ, files.RUN_LOCK_FD_ENV: str(lock.fileno())},
            pass_fds=(lock.fileno(),), stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "adopted"
        assert runs.run_alive(run_dir)
        # A second trainer is refused: the lock is the child's.
        assert files.take_run_lock(run_dir, wait_s=0) is None
    finally:
        child.kill()
        child.wait()
    assert not runs.run_alive(run_dir)


@pytest.mark.slow
def test_a_launched_trainer_is_alive_from_its_first_instant_and_keeps_its_lock(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    process = runs._launch(run_dir, ["--data", str(tmp_path / "nope"), "--out", str(run_dir)])
    assert runs.run_alive(run_dir)  # before the trainer has even imported torch
    assert process.wait(timeout=300) == 2
    assert not runs.run_alive(run_dir)
    log = (run_dir / runs.LOG_FILE).read_text()
    # It adopted the lock it was given: refused for the data, not as a busy folder.
    assert "error: dataset folder" in log and "in use" not in log, log


def test_stop_run_writes_stop_and_status_is_stopping(tmp_path, trainer_stand_in):
    _write_run(tmp_path / "r", 12345, [START, _step(2, 3.0, 1002.0)])
    trainer_stand_in(tmp_path / "r")
    runs.stop_run(tmp_path / "r")
    assert (tmp_path / "r" / "STOP").is_file()
    assert runs.get_run(tmp_path / "r").status == "stopping"


# --------------------------------------------------------------------------- starting


class _FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid


@pytest.fixture
def stand_in_launches(monkeypatch, trainer_stand_in):
    """Runs started by ``runs`` launch a stand-in that holds the run's lock; returns the
    argument lists launched and the stand-ins' pids."""
    launched, pids = [], []

    def launch(run_dir, args):
        launched.append(args)
        pids.append(trainer_stand_in(run_dir))
        return _FakeProcess(pids[-1])

    monkeypatch.setattr(runs, "_launch", launch)
    return launched, pids


def test_single_run_guard(tmp_path, stand_in_launches):
    launched, pids = stand_in_launches
    config = TrainConfig(data="synthetic", model="unet", model_kwargs={"base_width": 4})
    first = runs.start_run(config, tmp_path)
    assert first.status == "starting" and first.active
    meta = json.loads((first.path / runs.RUN_FILE).read_text())
    assert meta["pid"] == pids[0] and meta["command"][1:4] == ["-m", "segdemo", "train"]
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


def test_resume_run_relaunches_with_resume(tmp_path, stand_in_launches):
    launched, pids = stand_in_launches
    stopped = [START, _step(3, 2.0, 1003.0), {"event": "end", "status": "stopped", "time": 1004.0}]
    _write_run(tmp_path / "r", _gone_pid(), stopped)
    with pytest.raises(FileNotFoundError, match="last.safetensors"):
        runs.resume_run(tmp_path / "r")
    (tmp_path / "r" / "last.safetensors").write_bytes(b"")
    (tmp_path / "r" / runs.STOP_FILE).write_text("")
    info = runs.resume_run(tmp_path / "r")
    assert launched == [["--model", "unet", "--resume"]]
    assert info.status == "starting" and info.pid == pids[0]
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
