"""torchrun with two CPU processes (gloo): DistributedDataParallel end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segdemo.checkpoints import load_checkpoint
from segdemo.models import create_model
from segdemo.train import read_progress

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_trains_and_rank0_writes(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    cmd = [
        torchrun, "--standalone", "--nproc_per_node=2", "-m", "segdemo", "train",
        "--data", "synthetic", "--synthetic-length", "16", "--model", "unet", "--base-width",
        "4", "--size", "32x64", "--batch", "4", "--epochs", "6", "--lr", "3e-3",
        "--warmup-steps", "0", "--workers", "0", "--val-max-items", "4", "--log-every", "1",
        "--precision", "fp32", "--device", "cpu", "--no-augment", "--out", str(out), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    events = read_progress(out)
    start = events[0]
    assert start["event"] == "start" and start["world_size"] == 2
    # 16 images / (2 processes x batch 4) = 2 steps per epoch; only rank 0 logs.
    assert start["steps_per_epoch"] == 2
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 13))
    assert steps[-1]["loss"] < steps[0]["loss"]
    ckpt = load_checkpoint(out / "last.safetensors")
    reference = create_model("unet", 19, base_width=4).state_dict()
    got = ckpt.model.state_dict()
    assert got.keys() == reference.keys()
    assert all(got[k].shape == reference[k].shape for k in reference)
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("{")]  # rank 0 only
    assert json.loads(line)["status"] == "finished"
