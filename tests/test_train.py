"""The training engine on the built-in synthetic set: learning, stopping, resuming."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segdemo.checkpoints import load_checkpoint
from segdemo.models import get_model_config, list_models
from segdemo.train import TrainConfig, fit, lr_factor, read_progress

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path, model="unet", **overrides) -> TrainConfig:
    values = dict(
        data="synthetic",
        data_options={"length": 16},
        model=model,
        model_kwargs=get_model_config(model).tiny_kwargs,
        size=(32, 64),
        batch_size=4,
        epochs=1,
        lr=3e-3,
        warmup_steps=0,
        workers=0,
        out=str(tmp_path / "run"),
        log_every=1,
        val_max_items=4,
        precision="fp32",
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 100, 10, "poly") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "poly") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "poly") == pytest.approx(0.0)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-9)
    values = [lr_factor(s, 100, 10, "poly") for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("model", list_models())
def test_loss_falls_on_a_tiny_synthetic_set(tmp_path, model):
    # Over-fit 8 images for a few dozen steps: the loss must clearly fall for every model.
    # The tiny scratch networks (base width 4) need a bolder step size than pretrained-style
    # smp encoders to move within 60 steps.
    lr = 1e-2 if model in ("unet", "unetpp") else 3e-3
    config = tiny_config(
        tmp_path,
        model,
        data_options={"length": 8},
        epochs=30,
        augment=False,
        val_max_items=2,
        lr=lr,
    )
    fit(config)
    losses = [e["loss"] for e in read_progress(config.out) if e["event"] == "step"]
    assert len(losses) == 60
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_fit_writes_checkpoints_progress_and_metadata(tmp_path):
    config = tiny_config(tmp_path, "unetpp", epochs=2)
    result = fit(config)
    assert result["status"] == "finished" and result["step"] == 8
    events = read_progress(config.out)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2
    step = next(e for e in events if e["event"] == "step")
    assert {"step", "epoch", "loss", "lr", "images_per_s", "eta_s"} <= step.keys()
    epoch = next(e for e in events if e["event"] == "epoch")
    assert set(epoch["per_level_miou"]) == {"fast", "accurate"}
    ckpt = load_checkpoint(Path(config.out) / "best.safetensors")
    meta = ckpt.metadata
    assert meta["model"] == "unetpp"
    assert meta["train_config"]["model_kwargs"] == get_model_config("unetpp").tiny_kwargs
    assert meta["label_set"]["name"] == "cityscapes19" and meta["input_size"] == [32, 64]
    assert meta["metrics"]["best"]["per_level"]["fast"]["1"]["miou"] >= 0
    assert meta["dataset_fingerprint"] and meta["versions"]["torch"]
    assert len(meta["train_state"]["history"]) >= 1


def test_stop_file_ends_the_run_after_the_current_step(tmp_path):
    config = tiny_config(tmp_path, epochs=5)
    stop_after = 3

    def stopper(event):
        if event["event"] == "step" and event["step"] == stop_after:
            (Path(config.out) / "STOP").touch()

    result = fit(config, callbacks=[stopper])
    assert result["status"] == "stopped" and result["step"] == stop_after
    ckpt = load_checkpoint(Path(config.out) / "last.safetensors", with_optimizer=True)
    assert ckpt.metadata["step"] == stop_after and ckpt.train_tensors


@pytest.mark.parametrize("encoder_lr_mult", [1.0, 0.25])
def test_resume_continues_with_the_same_data_order_and_weights(tmp_path, encoder_lr_mult):
    # One uninterrupted run ...
    straight = tiny_config(tmp_path / "a", epochs=2, augment=False, encoder_lr_mult=encoder_lr_mult)
    fit(straight)
    # ... and the same run stopped mid-epoch and resumed must end with the same weights
    # (with an encoder learning rate of its own, too: the optimizer's state is numbered in
    # its groups' order, decoder first, and the checkpoint must still load).
    config = tiny_config(tmp_path / "b", epochs=2, augment=False, encoder_lr_mult=encoder_lr_mult)

    def stopper(event):
        if event["event"] == "step" and event["step"] == 3:
            (Path(config.out) / "STOP").touch()

    assert fit(config, callbacks=[stopper])["status"] == "stopped"
    assert (Path(config.out) / "STOP").exists()  # resuming clears it
    result = fit(config, resume=True)
    assert result["status"] == "finished" and result["step"] == 8
    a = load_checkpoint(Path(straight.out) / "last.safetensors").model.state_dict()
    b = load_checkpoint(Path(config.out) / "last.safetensors").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    resumed = load_checkpoint(Path(config.out) / "last.safetensors", with_optimizer=True)
    rates = [g["initial_lr"] for g in resumed.metadata["optimizer"]["param_groups"]]
    assert rates == ([3e-3] if encoder_lr_mult == 1.0 else [3e-3, 3e-3 * encoder_lr_mult])


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        fit(tiny_config(tmp_path), resume=True)


def _long_cli_run(out: Path, workers: int) -> list[str]:
    """A tiny CLI training run long enough to be killed or signalled mid-way."""
    return [
        sys.executable, "-m", "segdemo", "train", "--data", "synthetic", "--synthetic-length",
        "16", "--model", "unet", "--base-width", "4", "--size", "32x64", "--batch", "4",
        "--epochs", "200", "--workers", str(workers), "--val-max-items", "2", "--log-every",
        "1", "--precision", "fp32", "--out", str(out), "--quiet",
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_during_training_leaves_a_loadable_checkpoint_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    cmd = _long_cli_run(out, workers=0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    deadline = time.time() + 120
    # Kill it while it is writing checkpoints every epoch (4 steps).
    while time.time() < deadline:
        epochs = [e for e in read_progress(out) if e["event"] == "epoch"]
        if len(epochs) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_checkpoint(out / "last.safetensors", with_optimizer=True)
    step_before = ckpt.metadata["step"]
    assert step_before >= 12
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert all(p.startswith(".") for p in leftovers)  # only hidden temp files, never a half file
    resume = [*cmd, "--resume", "--max-steps", str(step_before + 4)]
    done = subprocess.run(resume, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["step"] > step_before


def test_binary_road_label_set_trains_a_two_class_model(tmp_path):
    config = tiny_config(tmp_path, "unet", label_set="road", epochs=3, augment=False)
    fit(config)
    ckpt = load_checkpoint(Path(config.out) / "last.safetensors")
    assert ckpt.metadata["num_classes"] == 2 and ckpt.label_set.names[1] == "road"
    losses = [e["loss"] for e in read_progress(config.out) if e["event"] == "step"]
    assert losses[-1] < losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_process_group_stops_cleanly_with_workers(tmp_path, sig):
    # Ctrl-C in a terminal, or a scheduler stopping a job, signals every process of the
    # group, DataLoader workers included.
    out = tmp_path / "run"
    cmd = _long_cli_run(out, workers=1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_progress(out)) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    assert proc.wait(timeout=120) == 0
    events = read_progress(out)
    stopped = next(e for e in events if e["event"] == "stopped")
    assert stopped["reason"] == sig.name
    assert events[-1]["event"] == "end" and events[-1]["status"] == "stopped"
    assert load_checkpoint(out / "last.safetensors").metadata["step"] == stopped["step"]
