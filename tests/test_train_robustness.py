"""Training runs lose nothing: kills during checkpoint writes, two processes on one folder,
runs that end before any validation, a full disk, ranks that must agree, bad flags."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segdemo.checkpoints import read_metadata
from segdemo.cli import main
from segdemo.labels import get_label_set
from segdemo.train import TrainConfig, fit, read_progress

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def tiny(out: Path, **overrides) -> TrainConfig:
    values = dict(
        data="synthetic", data_options={"length": 8}, model="unet",
        model_kwargs={"base_width": 4}, size=(32, 32), batch_size=4, epochs=1, lr=1e-2,
        warmup_steps=0, workers=0, val_max_items=4, precision="fp32", augment=False,
        log_every=1, out=str(out),
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _claims(run: Path) -> tuple[float, float]:
    """(best mIoU that last.safetensors claims, mIoU that best.safetensors holds)."""
    last = read_metadata(run / "last.safetensors")["train_state"]["best_miou"]
    best = read_metadata(run / "best.safetensors")["metrics"]["best"]["miou"]
    return last, best


# --------------------------------------------------------------------------- kills


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The checkpoint files of a tiny run after epoch 1 and after epoch 2, as bytes."""
    run = tmp_path_factory.mktemp("kills") / "run"
    files = {}
    for epochs in (1, 2):
        fit(tiny(run, epochs=epochs), resume=epochs > 1)
        files[epochs] = {
            n: (run / n).read_bytes() for n in ("last.safetensors", "best.safetensors")
        }
    return files


@pytest.mark.parametrize(
    "killed_during",
    ["best write", "between best and last", "last write", "last written, best stale"],
)
def test_a_kill_during_any_checkpoint_write_resumes_with_best_and_last_agreeing(
    tmp_path, two_epochs, killed_during
):
    """What is on disk after a kill in each place of epoch 2's save, then ``--resume``."""
    run = tmp_path / "run"
    run.mkdir()
    last, best = two_epochs[1]["last.safetensors"], two_epochs[1]["best.safetensors"]
    if killed_during in ("between best and last", "last write"):
        best = two_epochs[2]["best.safetensors"]
    if killed_during == "last written, best stale":  # what writing last first used to leave
        last = two_epochs[2]["last.safetensors"]
    (run / "last.safetensors").write_bytes(last)
    (run / "best.safetensors").write_bytes(best)
    if killed_during.endswith("write"):  # the half-written temporary file of that write
        name = "best" if killed_during == "best write" else "last"
        (run / f".{name}.safetensors.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    result = fit(tiny(run, epochs=3), resume=True)
    assert result["status"] == "finished" and result["epoch"] == 3
    claimed, held = _claims(run)
    assert claimed == pytest.approx(held)
    assert result["best_miou"] == pytest.approx(held)
    assert not list(run.glob(".*.tmp"))  # the interrupted write's leftovers are gone


# --------------------------------------------------------------------------- one folder


@pytest.mark.slow
def test_a_second_training_into_a_busy_folder_stops_at_once(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "segdemo", "train", "--data", "synthetic",
               "--synthetic-length", "16", "--model", "unet", "--base-width", "4", "--size",
               "32x32", "--batch", "4", "--epochs", "500", "--workers", "0", "--val-max-items",
               "2", "--precision", "fp32", "--out", str(out), "--quiet"]  # fmt: skip
    first = subprocess.Popen(command, cwd=tmp_path, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not any(e["event"] == "step" for e in read_progress(out)):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        started = time.monotonic()
        second = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True)
        assert time.monotonic() - started < 60
        assert second.returncode == 2
        assert (
            second.stderr.startswith("error:") and "in use by a training process" in second.stderr
        )
        assert f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        (out / "STOP").touch()
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.kill()
    starts = [e for e in read_progress(out) if e["event"] == "start"]
    assert len(starts) == 1  # the second process never wrote into the run


# --------------------------------------------------------------------------- no validation


def test_a_run_stopped_before_its_first_validation_claims_no_best(tmp_path, capsys):
    out = tmp_path / "run"

    def stop_at_once(event):
        if event["event"] == "step":
            (out / "STOP").touch()

    result = fit(tiny(out, epochs=2), callbacks=[stop_at_once])
    assert result["status"] == "stopped" and result["step"] == 1
    assert result["validated"] is False and result["best"] is None and result["best_miou"] is None
    assert not (out / "best.safetensors").exists() and (out / "last.safetensors").exists()
    meta = read_metadata(out / "last.safetensors")
    assert meta["metrics"]["last"] is None and meta["metrics"]["best"] is None
    end = read_progress(out)[-1]
    assert end["event"] == "end" and end["best"] is None and end["validated"] is False


def test_the_cli_says_plainly_when_no_validation_ran(tmp_path, capsys):
    out = tmp_path / "run"
    (out).mkdir()
    (out / "STOP").touch()  # stops after the first step
    code = main(["train", "--data", "synthetic", "--synthetic-length", "8", "--base-width", "4",
                 "--size", "32x32", "--batch", "4", "--epochs", "2", "--workers", "0",
                 "--precision", "fp32", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "before its first validation" in printed and "None" not in printed.splitlines()[0]


# --------------------------------------------------------------------------- disk full


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_full_disk_is_one_error_line_and_the_old_checkpoint_stays_intact(tmp_path):
    out = tmp_path / "run"
    fit(tiny(out, epochs=1))
    before = hashlib.sha256((out / "last.safetensors").read_bytes()).hexdigest()
    size = (out / "last.safetensors").stat().st_size
    command = [sys.executable, "-m", "segdemo", "train", "--out", str(out), "--resume",
               "--epochs", "2", "--quiet"]  # fmt: skip
    # Files may not grow past half a checkpoint: the next checkpoint write fails as on a
    # full disk (Python ignores SIGXFSZ, so the write raises instead of killing).
    done = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          preexec_fn=_limit_file_size(size // 2), timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write"), done.stderr
    assert "intact" in lines[0]
    assert hashlib.sha256((out / "last.safetensors").read_bytes()).hexdigest() == before
    assert not list(out.glob(".*.tmp"))


# --------------------------------------------------------------------------- bad flags

TRAIN = ["train", "--data", "synthetic", "--synthetic-length", "8", "--size", "32x32",
         "--epochs", "1", "--workers", "0", "--quiet"]  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--device", "bogus"], "--device 'bogus' is not a device"),
        (["--device", "cuda"], "no CUDA GPU"),
        (["--log-every", "0"], "argument --log-every: must be at least 1"),
        (["--lr", "inf"], "argument --lr: must be a finite number"),
        (["--lr", "-1"], "argument --lr: must be greater than 0"),
        (["--max-steps", "0"], "argument --max-steps: must be at least 1"),
        (["--model-arg", "bogus=1"], "unet does not take bogus"),
        (["--model", "smp_unet", "--base-width", "8"], "smp_unet does not take --base-width"),
        (["--model", "nonexistent"], "unknown model 'nonexistent'"),
        (["--label-set", "kitti"], "unknown label set 'kitti'"),
        (["--scale-range", "2,1"], "--scale-range must be MIN,MAX"),
        (["--out", "__FILE__"], "is a file, not a folder"),
        (["--resume", "--out", "__EMPTY__"], "cannot resume"),
    ],
)
def test_bad_train_invocations_print_one_error_line(tmp_path, capsys, arguments, message):
    if "cuda" in arguments and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("")
    arguments = [
        str(a_file) if a == "__FILE__" else str(tmp_path / "empty") if a == "__EMPTY__" else a
        for a in arguments
    ]
    out = [] if "--out" in arguments else ["--out", str(tmp_path / "run")]
    try:
        code = main([*TRAIN, *out, *arguments])
    except SystemExit as e:  # refused while parsing (argparse prints the usage too)
        code = e.code
    assert code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert message in lines[0]


# --------------------------------------------------------------------------- torchrun


def _folder_dataset(root: Path, train: int, val: int, broken: list[int]) -> None:
    """A folder dataset (train/, val/ with images/ and masks/); ``broken`` train images
    are truncated JPEGs that cannot be decoded."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for k in range(count):
            mask = rng.integers(0, 3, (32, 32)).astype(np.uint8)
            photo = (get_label_set("cityscapes19").colorize(mask)).astype(np.uint8)
            Image.fromarray(photo).save(root / split / "images" / f"{k:03d}.jpg")
            Image.fromarray(mask).save(root / split / "masks" / f"{k:03d}.png")
            if split == "train" and k in broken:
                path = root / split / "images" / f"{k:03d}.jpg"
                path.write_bytes(path.read_bytes()[:40])


@pytest.mark.slow
def test_torchrun_ranks_agree_on_stop_and_on_an_unreadable_image(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    data = tmp_path / "data"
    # Batch 1 per rank: the rank that draws the broken image has an empty batch, and
    # without agreement it would skip a step the other rank takes (a hang in DDP).
    _folder_dataset(data, train=12, val=4, broken=[0, 5])
    out = tmp_path / "ddp"
    command = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "segdemo", "train",
               "--data", str(data), "--model", "unet", "--base-width", "4", "--size", "32x32",
               "--batch", "1", "--epochs", "40", "--workers", "0", "--log-every", "1",
               "--precision", "fp32", "--device", "cpu", "--no-augment", "--out", str(out),
               "--quiet"]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while sum(e["event"] == "step" for e in read_progress(out)) < 9:  # mid-epoch 2
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        (out / "STOP").touch()
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    events = read_progress(out)
    assert events[-1]["event"] == "end" and events[-1]["status"] == "stopped"
    start = events[0]
    # 12 images, 2 broken: every epoch has 6 batches per rank, one empty on some rank.
    assert start["steps_per_epoch"] == 6
    epochs = [e for e in events if e["event"] == "epoch"]
    assert epochs and all(e["step"] <= 5 * e["epoch"] for e in epochs)  # skipped steps
    stopped_at = events[-1]["step"]
    resume = [*command, "--resume", "--epochs", "3"]
    done = subprocess.run(resume, cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads([x for x in done.stdout.splitlines() if x.startswith("{")][-1])
    assert result["status"] == "finished" and result["step"] > stopped_at
