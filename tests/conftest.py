"""Shared fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# ----------------------------------------------------------------------- network fixtures


@pytest.fixture
def refused_connections(monkeypatch) -> list[str]:
    """Every socket connection attempt is recorded and refused (HF_HUB_OFFLINE left alone)."""
    import socket

    from segdemo.models import encoders

    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(encoders, "_probe_cache", {})  # no remembered hub probe
    return attempts


@pytest.fixture
def no_network(monkeypatch, refused_connections) -> list[str]:
    """HF_HUB_OFFLINE=1, and every socket connection attempt is recorded and refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return refused_connections


# --------------------------------------------------------------------------- app fixtures


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny U-Net and a tiny U-Net++ (base width 4, 32x64, one short epoch on synthetic
    scenes), trained once per test session, in a folder laid out like ``checkpoints/``.

    Returns:
        ``{"dir": folder, "unet": path, "unetpp": path}``; treat them as read-only.
    """
    from segdemo.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("tiny_checkpoints")
    folder = root / "bundled"
    folder.mkdir()
    paths = {"dir": folder}
    for model in ("unet", "unetpp"):
        config = TrainConfig(
            data="synthetic",
            data_options={"length": 8},
            model=model,
            model_kwargs={"base_width": 4},
            size=(32, 64),
            batch_size=4,
            epochs=1,
            workers=0,
            out=str(root / f"run-{model}"),
            val_max_items=2,
            precision="fp32",
        )
        fit(config)
        paths[model] = folder / f"{model}.safetensors"
        shutil.copyfile(root / f"run-{model}" / "best.safetensors", paths[model])
    return paths


@pytest.fixture
def app_dirs(tiny_checkpoints, tmp_path, monkeypatch) -> dict[str, Path]:
    """Point the app at the tiny checkpoints (as bundled) and a fresh, empty runs folder.

    ``segdemo_app.common`` reads SEGDEMO_CHECKPOINTS / SEGDEMO_RUNS when first imported,
    and AppTest runs pages in this process, so the module attributes are patched too.
    """
    from segdemo_app import common

    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("SEGDEMO_CHECKPOINTS", str(tiny_checkpoints["dir"]))
    monkeypatch.setenv("SEGDEMO_RUNS", str(runs))
    monkeypatch.setattr(common, "BUNDLED_DIR", tiny_checkpoints["dir"])
    monkeypatch.setattr(common, "RUNS_DIR", runs)
    monkeypatch.setattr(common, "UPLOADED_DIR", runs / "uploaded")
    return {"bundled": tiny_checkpoints["dir"], "runs": runs, "uploaded": runs / "uploaded"}


@pytest.fixture
def no_checkpoints(tmp_path, monkeypatch) -> None:
    """Point the app at empty checkpoint and run folders."""
    from segdemo_app import common

    empty, runs = tmp_path / "no-checkpoints", tmp_path / "runs"
    empty.mkdir()
    runs.mkdir()
    monkeypatch.setenv("SEGDEMO_CHECKPOINTS", str(empty))
    monkeypatch.setenv("SEGDEMO_RUNS", str(runs))
    monkeypatch.setattr(common, "BUNDLED_DIR", empty)
    monkeypatch.setattr(common, "RUNS_DIR", runs)
    monkeypatch.setattr(common, "UPLOADED_DIR", runs / "uploaded")


# --------------------------------------------------------------------------- training runs


@pytest.fixture
def trainer_stand_in():
    """``hold(run_dir)``: starts a process that holds ``run_dir``'s lock as a trainer does
    for its lifetime (so the run is alive, see segdemo.runs.run_alive) and returns its pid."""
    import subprocess
    import sys

    from segdemo.files import take_run_lock

    processes = []

    def hold(run_dir) -> int:
        lock = take_run_lock(run_dir)
        assert lock is not None, f"{run_dir} is already held"
        with lock:
            process = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(900)"], pass_fds=(lock.fileno(),)
            )
            lock.write(f"pid {process.pid}")  # as the trainer says who it is
            lock.flush()
        processes.append(process)
        return process.pid

    yield hold
    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture
def fill_tiny_train_form():
    """Sets the Train page's widgets (an AppTest) to a run that finishes in seconds."""

    def fill(at, epochs: int = 1) -> None:
        at.selectbox(key="train_size").set_value("32x64")
        at.number_input(key="train_base_width").set_value(4)
        at.number_input(key="train_epochs").set_value(epochs)
        at.number_input(key="train_batch").set_value(4)
        at.number_input(key="train_synthetic_length").set_value(8)
        at.number_input(key="train_val_max_items").set_value(2)

    return fill
