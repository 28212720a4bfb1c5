"""Training runs as separate processes, for the app (and anyone else): start, list, stop.

A run is a folder ``<runs_dir>/<run_id>/`` holding what ``python -m segdemo train --out``
writes there (``progress.jsonl``, ``last.safetensors``, ``best.safetensors``) plus:

- ``run.json``: how it was started (pid, command, created, the TrainConfig values);
- ``train.log``: the process's stdout and stderr.

The process is started in its own session, so closing a browser tab, reloading the page or
stopping Streamlit does not stop it; a page finds it again by listing ``runs_dir``. Its
status is read from the files and the run folder's lock (held by the trainer for its
lifetime, see ``segdemo.files.RUN_LOCK_FILE``), never from memory:

``starting``  the process runs but has not reported its first event yet;
``running``   training or evaluating;
``stopping``  a ``STOP`` file was written; the process ends after the current step;
``finished``  all epochs done;
``stopped``   ended early by ``STOP`` or a signal, ``last.safetensors`` written;
``failed``    the process reported an error, or exited before reporting anything;
``dead``      the process is gone without saying why (killed, machine restarted):
              ``resume_run`` continues from the last epoch's checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segdemo.config import TrainConfig, to_arguments
from segdemo.files import RUN_LOCK_FD_ENV, atomic_write_bytes, run_lock_holder, take_run_lock
from segdemo.train import read_progress

RUN_FILE = "run.json"
LOG_FILE = "train.log"
STOP_FILE = "STOP"
LOCK_FILE = ".start.lock"
RATE_WINDOW = 10  # step events whose images/s the shown figure is the median of
ACTIVE = ("starting", "running", "stopping")
# Where ``python -m segdemo`` is importable from, whatever the caller's working directory.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]

Event = dict[str, Any]


class RunAlreadyActive(RuntimeError):
    """Another run is still training; pass ``allow_parallel=True`` to start one anyway."""


@dataclass
class RunInfo:
    """One run folder as seen now: what was asked for and how far it got."""

    run_id: str
    path: Path
    status: str
    model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    created: float | None = None
    command: list[str] = field(default_factory=list)
    best_miou: float | None = None
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    error: str | None = None
    hint: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


# --------------------------------------------------------------------------- naming


def new_run_id(model: str, runs_dir: str | Path, now: float | None = None) -> str:
    """``20250101-120000-unet``: sortable by time, readable, unique within ``runs_dir``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', model)}"
    run_id, n = base, 1
    while (Path(runs_dir) / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


# --------------------------------------------------------------------------- command


def train_arguments(config: TrainConfig) -> list[str]:
    """``python -m segdemo train`` arguments for ``config`` (without ``--out``); see
    ``segdemo.config.to_arguments``."""
    return to_arguments(config)


def run_alive(run_dir: str | Path) -> bool:
    """Whether a process trains in ``run_dir`` now: its lock is held
    (``segdemo.files.RUN_LOCK_FILE``). The OS releases the lock when the process ends, so
    a killed run, a restarted machine or a pid reused by another program never keeps a
    run "running"; a folder from before the lock existed reads as not alive."""
    _reap_children()
    return run_lock_holder(run_dir) is not None


# Trainers this process started: polled so that a finished one does not stay a zombie.
_CHILDREN: list[subprocess.Popen] = []


def _reap_children() -> None:
    _CHILDREN[:] = [child for child in _CHILDREN if child.poll() is None]


def _write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2).encode("utf-8"))


def _read_json(path: Path) -> dict:
    """The JSON object in ``path``, or ``{}`` when it is missing, unreadable or not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _start_lock(runs_dir: Path):
    """Serialise check-then-start so two sessions clicking Start at once get one run."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with (runs_dir / LOCK_FILE).open("w") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock, the guard is best effort
            pass
        yield


def _launch(run_dir: Path, args: list[str]) -> subprocess.Popen:
    """Start the trainer holding ``run_dir``'s lock from its first instant: the lock is
    taken here and its file passed to the process, which keeps it for its lifetime.

    Raises:
        RunAlreadyActive: another process holds the folder's lock.
    """
    lock = take_run_lock(run_dir)
    if lock is None:
        holder = run_lock_holder(run_dir) or "another process"
        raise RunAlreadyActive(f"{run_dir.name} is in use by a training process ({holder})")
    command = [sys.executable, "-m", "segdemo", "train", *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    env[RUN_LOCK_FD_ENV] = str(lock.fileno())
    with lock, (run_dir / LOG_FILE).open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a reload or Ctrl-C of Streamlit does not reach it
            close_fds=True,
            pass_fds=(lock.fileno(),),
        )
    _CHILDREN.append(process)
    return process


def check_data(config: TrainConfig) -> None:
    """Open both splits of ``config.data`` the way training will (listing only, no decoding).

    Raises:
        ValueError: the folder is missing or not a dataset, or the train split is smaller
            than one batch (the message says which).
    """
    from segdemo.data import open_dataset

    options = dict(fmt=config.data_format, label_set=config.label_set, **config.data_options)
    train = open_dataset(config.data, "train", **options)
    open_dataset(config.data, "val", **options)
    if len(train) < config.batch_size:
        raise ValueError(
            f"the train split of {config.data} has {len(train)} images, fewer than one batch "
            f"of {config.batch_size}"
        )


def start_run(
    config: TrainConfig,
    runs_dir: str | Path,
    *,
    allow_parallel: bool = False,
    run_id: str | None = None,
    validate: bool = True,
) -> RunInfo:
    """Start training ``config`` in a new process writing to ``<runs_dir>/<run_id>/``.

    ``config.out`` is ignored: the run folder is chosen here. Returns at once.

    Args:
        allow_parallel: start even if another run in ``runs_dir`` is still active.
        validate: open the dataset first (``check_data``), so that a bad folder is an
            error here rather than a failed run.

    Raises:
        RunAlreadyActive: another run in ``runs_dir`` is active and ``allow_parallel`` is
            False (the message names it).
        ValueError: a bad dataset, or settings the command line cannot express.
    """
    runs_dir = Path(runs_dir)
    args = train_arguments(config)
    if validate:
        check_data(config)
    with _start_lock(runs_dir):
        if not allow_parallel:
            active = active_runs(runs_dir)
            if active:
                names = ", ".join(f"{r.run_id} ({r.status})" for r in active)
                raise RunAlreadyActive(
                    f"a training run is already active: {names}; stop it first or start "
                    "this one anyway"
                )
        run_id = run_id or new_run_id(config.model, runs_dir)
        run_dir = runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=False)
        args += ["--out", str(run_dir.resolve()), "--quiet"]
        created = time.time()
        process = _launch(run_dir, args)
        config_values = {**config.to_dict(), "out": str(run_dir.resolve())}
        _write_json(
            run_dir / RUN_FILE,
            {
                "run_id": run_id,
                "pid": process.pid,
                "command": [Path(sys.executable).name, "-m", "segdemo", "train", *args],
                "args": args,
                "created": created,
                "launched": created,
                "config": config_values,
            },
        )
    return get_run(run_dir)


def resume_run(run_dir: str | Path, *, allow_parallel: bool = False) -> RunInfo:
    """Continue a stopped or dead run from its ``last.safetensors`` in a new process.

    Raises:
        RunAlreadyActive: as for ``start_run`` (the run itself counts if still active).
        FileNotFoundError: the run has no ``run.json`` or no ``last.safetensors`` yet.
    """
    run_dir = Path(run_dir)
    meta = _read_json(run_dir / RUN_FILE)
    if not meta.get("args"):
        raise FileNotFoundError(f"{run_dir.name} was not started from the app (no {RUN_FILE})")
    if not (run_dir / "last.safetensors").is_file():
        raise FileNotFoundError(f"{run_dir.name} has no last.safetensors to resume from")
    with _start_lock(run_dir.parent):
        info = get_run(run_dir)
        if info.active:
            raise RunAlreadyActive(f"{info.run_id} is still {info.status}")
        if not allow_parallel:
            active = active_runs(run_dir.parent)
            if active:
                names = ", ".join(r.run_id for r in active)
                raise RunAlreadyActive(f"a training run is already active: {names}")
        (run_dir / STOP_FILE).unlink(missing_ok=True)
        args = [a for a in meta["args"] if a != "--resume"] + ["--resume"]
        process = _launch(run_dir, args)
        meta.update(pid=process.pid, launched=time.time(), args=args)
        meta["command"] = [Path(sys.executable).name, "-m", "segdemo", "train", *args]
        _write_json(run_dir / RUN_FILE, meta)
    return get_run(run_dir)


def stop_run(run_dir: str | Path) -> None:
    """Ask a run to stop: it ends after the current step and writes ``last.safetensors``."""
    path = Path(run_dir) / STOP_FILE
    text = f"requested at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
    atomic_write_bytes(path, text.encode("utf-8"), durable=False)  # like every file the app writes


# --------------------------------------------------------------------------- listing


def _last_log_error(run_dir: Path) -> str | None:
    """The ``error: ...`` line of the CLI, else the last line of a traceback, from the log."""
    try:
        lines = (run_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    lines = [line.strip() for line in lines if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    return lines[-1] if lines else None


def _current_attempt(events: list[Event], launched: float | None) -> list[Event]:
    """Events of the newest launch (a resumed run appends to the same progress file)."""
    starts = [i for i, e in enumerate(events) if e.get("event") == "start"]
    if not starts:
        return []
    last = starts[-1]
    if launched is not None and events[last].get("time", launched) < launched - 1.0:
        return []  # the newest process has not written its start event yet
    return events[last:]


def get_run(run_dir: str | Path) -> RunInfo:
    """The state of one run folder now (what the Train page polls every few seconds)."""
    run_dir = Path(run_dir)
    meta = _read_json(run_dir / RUN_FILE)
    events = read_progress(run_dir)
    start = next((e for e in reversed(events) if e.get("event") == "start"), {})
    # run.json is read as untrusted as progress.jsonl: a field of the wrong type is unknown.
    config = next(
        (c for c in (meta.get("config"), start.get("config")) if isinstance(c, dict) and c), {}
    )
    pid = next((p for p in (meta.get("pid"), start.get("pid")) if type(p) is int and p > 0), None)
    for key, kind in (("launched", (int, float)), ("created", (int, float)), ("command", list)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            meta.pop(key, None)
    attempt = _current_attempt(events, meta.get("launched"))
    summary = summarize_progress(events, now=time.time())
    kinds = {e.get("event"): e for e in attempt}
    last_ckpt = run_dir / "last.safetensors"
    best_ckpt = run_dir / "best.safetensors"
    error = hint = None
    if "end" in kinds:
        status = "stopped" if kinds["end"].get("status") == "stopped" else "finished"
    elif "failed" in kinds:
        status, error = "failed", kinds["failed"].get("error")
    elif run_alive(run_dir):
        status = "starting" if not attempt else "running"
        if (run_dir / STOP_FILE).exists():
            status = "stopping"
    elif not attempt:
        status = "failed"
        error = _last_log_error(run_dir) or "the training process exited before it started"
    else:
        status = "dead"
    if status == "dead" or status == "stopped":
        if last_ckpt.is_file():
            hint = (
                f"resume it from step {summary.get('checkpoint_step', '?')}: Resume, or "
                f"python -m segdemo train --out {run_dir} --resume (same settings)"
            )
        else:
            hint = "no checkpoint was written before it ended: start it again"
        if status == "dead":
            hint = f"interrupted (process {pid} is gone); {hint}"
    return RunInfo(
        run_id=run_dir.name,
        path=run_dir,
        status=status,
        model=config.get("model"),
        config=config,
        pid=pid,
        created=meta.get("created") or (events[0].get("time") if events else None),
        command=meta.get("command", []),
        best_miou=summary.get("best_miou"),
        best_checkpoint=best_ckpt if best_ckpt.is_file() else None,
        last_checkpoint=last_ckpt if last_ckpt.is_file() else None,
        error=error,
        hint=hint,
        summary=summary,
    )


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Every run folder in ``runs_dir`` (with ``run.json`` or ``progress.jsonl``), newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = [
        get_run(p)
        for p in runs_dir.iterdir()
        if p.is_dir() and ((p / RUN_FILE).is_file() or (p / "progress.jsonl").is_file())
    ]
    return sorted(found, key=lambda r: (r.created or 0.0, r.run_id), reverse=True)


def active_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Runs in ``runs_dir`` whose process is still training (starting, running, stopping)."""
    return [run for run in list_runs(runs_dir) if run.active]


# --------------------------------------------------------------------------- progress


_EMPTY_SUMMARY: dict[str, Any] = {
    "phase": "waiting", "step": 0, "total_steps": None, "fraction": 0.0, "epoch": 0,
    "epochs": None, "eta_s": None, "last_loss": None, "lr": None, "images_per_s": None,
    "best_miou": None, "last_miou": None, "checkpoint_step": None, "per_level_miou": None,
    "per_class_iou": None, "device": None, "train_images": None, "val_images": None,
    "error": None, "stop_reason": None, "elapsed_s": None,
}  # fmt: skip


@dataclass
class _Reading:
    """What ``summarize_progress`` carries from one event to the next."""

    summary: dict[str, Any]
    losses: dict[int, float] = field(default_factory=dict)  # step -> loss
    vals: dict[int, Event] = field(default_factory=dict)  # epoch -> epoch event
    rates: list[float] = field(default_factory=list)  # images/s of the recent step events
    first_time: float | None = None
    last_time: float | None = None
    last_step_time: float | None = None
    last_step_eta: float | None = None
    eval_s: float | None = None

    def start(self, event: Event) -> None:
        step = int(event.get("step", 0))
        # A resumed run repeats the steps after its checkpoint: keep the newest values.
        self.losses = {s: v for s, v in self.losses.items() if s <= step}
        self.vals = {e: v for e, v in self.vals.items() if v["step"] <= step}
        self.summary.update(
            phase="training", step=step, total_steps=event.get("total_steps"),
            epochs=(event.get("config") or {}).get("epochs"), device=event.get("device"),
            train_images=event.get("train_images"), val_images=event.get("val_images"),
            error=None, stop_reason=None, eta_s=None,
        )  # fmt: skip
        self.last_step_time = self.last_step_eta = None

    def step(self, event: Event) -> None:
        s = self.summary
        self.losses[int(event["step"])] = float(event["loss"])
        s.update(
            step=int(event["step"]), total_steps=event.get("total_steps", s["total_steps"]),
            epochs=event.get("epochs", s["epochs"]), last_loss=float(event["loss"]),
            lr=event.get("lr"),
        )  # fmt: skip
        # One step event's rate can be far off (a window of one short step, a step right
        # after the loader prefetched during validation): the median of the recent ones.
        if event.get("images_per_s"):
            self.rates = [*self.rates[-(RATE_WINDOW - 1) :], float(event["images_per_s"])]
            s["images_per_s"] = statistics.median(self.rates)
        self.last_step_time, self.last_step_eta = event.get("time"), event.get("eta_s")

    def epoch(self, event: Event) -> None:
        self.vals[int(event["epoch"])] = event
        self.eval_s = event.get("eval_time_s", self.eval_s)
        step = int(event.get("step", self.summary["step"]))
        self.summary.update(
            epoch=int(event["epoch"]), step=step, last_miou=event.get("val_miou"),
            per_level_miou=event.get("per_level_miou"),
            per_class_iou=event.get("per_class_iou"), checkpoint_step=step,
        )  # fmt: skip

    def stopped(self, event: Event) -> None:
        self.summary.update(phase="stopped", stop_reason=event.get("reason"))
        # The run got to the step its checkpoint holds, which the progress bar shows too
        # (step events come only every log_every steps).
        step = int(event.get("step", self.summary["step"]))
        self.summary.update(checkpoint_step=step, step=max(step, self.summary["step"]))

    def failed(self, event: Event) -> None:
        self.summary.update(phase="failed", error=event.get("error"))

    def end(self, event: Event) -> None:
        self.summary["phase"] = "stopped" if event.get("status") == "stopped" else "done"
        if self.summary["phase"] == "done":
            self.summary["eta_s"] = 0.0

    def curves(self) -> None:
        s = self.summary
        s["loss_curve"] = {
            "step": sorted(self.losses),
            "loss": [self.losses[k] for k in sorted(self.losses)],
        }
        epochs = sorted(self.vals)
        s["val_curve"] = {
            "epoch": epochs,
            "step": [int(self.vals[e].get("step", 0)) for e in epochs],
            "val_miou": [self.vals[e].get("val_miou") for e in epochs],
            "train_loss": [self.vals[e].get("train_loss") for e in epochs],
        }
        mious = [m for m in s["val_curve"]["val_miou"] if m is not None]
        s["best_miou"] = max(mious) if mious else None

    def timing(self, now: float | None) -> None:
        s = self.summary
        if s["total_steps"]:
            s["fraction"] = min(max(s["step"] / s["total_steps"], 0.0), 1.0)
        if s["phase"] == "training" and self.last_step_eta is not None:
            eta = float(self.last_step_eta)
            if now is not None and self.last_step_time is not None:
                eta = max(eta - (now - self.last_step_time), 0.0)
            if self.eval_s is not None and s["epochs"] is not None:
                eta += self.eval_s * max(s["epochs"] - s["epoch"], 0)  # evaluations to come
            s["eta_s"] = eta
        if self.first_time is not None:
            until = now if s["phase"] in ("waiting", "training") else self.last_time
            if until is not None:
                s["elapsed_s"] = max(until - self.first_time, 0.0)


def summarize_progress(events: list[Event], now: float | None = None) -> dict[str, Any]:
    """What a progress display needs from ``progress.jsonl`` events (pure function).

    Args:
        events: as from ``segdemo.train.read_progress``; a resumed run's events follow the
            earlier ones in the same list.
        now: wall-clock time (``time.time()``); with it the ETA counts down between events
            and ``elapsed_s`` of a run still training is filled (an ended run's elapsed
            time runs to its last event).

    Returns:
        ``phase`` (waiting, training, done, stopped, failed), ``step``, ``total_steps``,
        ``fraction`` (0..1), ``epoch`` (completed), ``epochs``, ``eta_s`` (None until
        known), ``last_loss``, ``lr``, ``images_per_s``, ``best_miou``, ``last_miou``,
        ``checkpoint_step``, ``loss_curve`` {"step", "loss"}, ``val_curve`` {"epoch",
        "step", "val_miou", "train_loss"}, ``per_level_miou`` (U-Net++, newest epoch),
        ``per_class_iou`` (newest epoch), ``device``, ``train_images``, ``val_images``,
        ``error``, ``stop_reason``, ``elapsed_s``.
    """
    reading = _Reading(dict(_EMPTY_SUMMARY))
    for event in events:
        if reading.first_time is None:
            reading.first_time = event.get("time")
        reading.last_time = event.get("time", reading.last_time)
        kind = event.get("event")
        if kind in ("start", "step", "epoch", "stopped", "failed", "end"):
            getattr(reading, kind)(event)
    reading.curves()
    reading.timing(now)
    return reading.summary


def training_seconds(events: list[Event]) -> float:
    """The time a run spent, from its ``progress.jsonl`` events: each attempt from its
    ``start`` to its last event, so the pauses between a stop and its resume do not count
    (the steps a killed attempt repeats after its checkpoint do: they cost time too)."""
    total, previous = 0.0, None
    for event in events:
        moment = event.get("time")
        if moment is None:
            continue
        if event.get("event") != "start" and previous is not None:
            total += max(moment - previous, 0.0)
        previous = moment
    return total


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``"1 min 15 s"``; None -> ``"?"``."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
