"""Studies: every (model, seed) trained as an ordinary run, resumable after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segdemo.models import create_model
from segdemo.models.registry import count_parameters
from segdemo.study import load_study, run_state
from segdemo.train import read_progress

REPO = Path(__file__).resolve().parents[1]

TINY_STUDY = """
name = "tiny"
seeds = [0, 1]
reference = "unet"

[train]
data_options = { length = 16 }
size = [32, 32]
batch_size = 4
epochs = 3
lr = 3e-3
warmup_steps = 0
workers = 0
log_every = 1
val_max_items = 4
precision = "fp32"

[[models]]
name = "unet"
model = "unet"
kwargs = { base_width = 4 }

[[models]]
name = "unetpp"
model = "unetpp"
kwargs = { base_width = 4, deep_supervision = true }
"""


def _starts(run_dir: Path) -> list[dict]:
    return [e for e in read_progress(run_dir) if e["event"] == "start"]


@pytest.mark.slow
def test_a_study_resumes_after_a_kill_without_redoing_finished_runs(tmp_path):
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(TINY_STUDY)
    out = tmp_path / "study"
    command = [sys.executable, "-m", "segdemo", "study", str(study_file), "--data", "synthetic",
               "--out", str(out), "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first, second = out / "unet" / "0", out / "unetpp" / "0"
    process = subprocess.Popen(command, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 300
        # Kill the study once the second run has a checkpoint and is training on.
        while not any(e["event"] == "epoch" for e in read_progress(second)):
            assert process.poll() is None, "the study ended before its second run trained"
            assert time.monotonic() < deadline, "the second run never reached an epoch"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert run_state(first) == "finished"
    assert run_state(second) == "started"
    subprocess.run(command, cwd=tmp_path, env=env, check=True, timeout=600)
    study = load_study(study_file)
    for model, seed in study.runs():
        assert run_state(study.run_dir(out, model.name, seed)) == "finished"
    assert len(_starts(first)) == 1  # not redone
    resumed = _starts(second)
    assert len(resumed) == 2 and resumed[1]["resumed"] and resumed[1]["step"] > 0

    # The report: its numbers are those of `eval` on the same checkpoints.
    report = tmp_path / "docs"
    command = [sys.executable, "-m", "segdemo", "study", str(study_file), "--out", str(out),
               "--report", str(report), "--max-items", "6"]  # fmt: skip
    subprocess.run(command, cwd=tmp_path, env=env, check=True, timeout=600)
    result = json.loads((report / "tiny" / "study.json").read_text())
    assert (report / "tiny.md").is_file() and (report / "tiny" / "miou.png").is_file()
    assert {(r["model"], r["seed"]) for r in result["runs"]} == {
        (m.name, s) for m, s in study.runs()
    }
    # Training time: the resumed run counts both attempts, and the total is every run's sum.
    train_s = {(r["model"], r["seed"]): r["train_s"] for r in result["runs"]}
    times = [e["time"] for e in read_progress(second)]
    assert 0 < train_s[("unetpp", 0)] < times[-1] - times[0]  # the restart's pause is left out
    assert all(t > 0 for t in train_s.values())
    assert result["training_time"]["total_s"] == pytest.approx(sum(train_s.values()))
    assert result["training_time"]["models"]["unet"]["runs"] == 2
    assert "Training time per run" in (report / "tiny.md").read_text()
    entries = {e["key"]: e for e in result["entries"]}
    assert set(entries) == {"unet", "unetpp:accurate:4", "unetpp:fast:4"}
    for key, mode in (("unet", None), ("unetpp:accurate:4", "accurate"), ("unetpp:fast:4", "fast")):
        model = key.split(":")[0]
        evals = []
        for seed in study.seeds:
            command = [sys.executable, "-m", "segdemo", "eval", "--ckpt",
                       str(out / model / str(seed) / "last.safetensors"), "--data", "synthetic",
                       "--max-items", "6", "--json", "--resamples", "0"]  # fmt: skip
            done = subprocess.run(command, cwd=tmp_path, env=env, check=True, timeout=300,
                                  capture_output=True, text=True)  # fmt: skip
            scored = json.loads(done.stdout)  # every U-Net++ setting from one pass, as the report
            evals.append(scored["per_level"][mode]["4"] if mode else scored)
        per_seed = entries[key]["seeds"]
        for seed, evaluation in zip(study.seeds, evals, strict=True):
            assert per_seed[str(seed)]["miou"] == pytest.approx(evaluation["miou"])
        assert entries[key]["miou"] == pytest.approx(np.mean([e["miou"] for e in evals]))
    (difference,) = [d for d in result["differences"] if d["a"] == "unetpp (fast L4)"]
    low, high = difference["miou_diff_ci95"]
    assert low <= difference["miou_diff"] <= high and len(difference["miou_diff_per_seed"]) == 2


def test_study_files_are_checked_and_build_one_config_per_run(tmp_path):
    study = load_study(REPO / "studies" / "unet_vs_unetpp.toml")
    configs = [study.config("DATA", tmp_path, m, s) for m, s in study.runs()]
    assert len(configs) == len(study.models) * len(study.seeds) >= 12
    shared = {(c.size, c.epochs, c.lr, c.loss, c.schedule, c.augment, c.label_set) for c in configs}
    assert len(shared) == 1  # every run trained the same way
    assert {c.seed for c in configs} == set(study.seeds)
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_STUDY.replace("epochs = 3", "epochs = 3\nseed = 5"))
    with pytest.raises(ValueError, match="cannot set seed"):
        load_study(bad)
    bad.write_text(TINY_STUDY.replace("base_width = 4 }", "bogus = 4 }", 1))
    with pytest.raises(ValueError, match="does not take"):
        load_study(bad)


def test_the_wide_unet_of_study_1_has_as_many_parameters_as_the_unetpp():
    study = load_study(REPO / "studies" / "unet_vs_unetpp.toml")
    models = {m.name: m for m in study.models}
    params = {
        name: count_parameters(create_model(models[name].model, 19, **models[name].kwargs))
        for name in ("unet", "unet_wide", "unetpp")
    }
    assert abs(params["unet_wide"] - params["unetpp"]) / params["unetpp"] < 0.05
    assert params["unet"] < 0.9 * params["unetpp"]  # the plain U-Net is the smaller one


def test_a_difference_is_clear_only_when_the_seeds_agree_on_its_sign():
    from segdemo.study_report import _sentence

    agree = {
        "miou_diff": 0.012,
        "miou_diff_ci95": [0.004, 0.02],
        "miou_diff_per_seed": [0.01, 0.02, 0.006],
    }
    assert _sentence("A", "B", agree).startswith("A is better than B by +1.2 points")
    disagree = {**agree, "miou_diff_per_seed": [0.03, 0.012, -0.006]}
    sentence = _sentence("A", "B", disagree)
    assert sentence.startswith("no clear difference between A and B")
    assert "+3.0, +1.2, -0.6" in sentence


def test_the_differences_figure_shows_each_pair_once():
    from segdemo.study_report import figure_differences

    differences = [{"a": "unetpp", "b": "unet"}, {"a": "wide", "b": "unet"}]
    claims = [{"claim": "U-Net++ beats U-Net", "a": "unetpp", "b": "unet"},
              {"claim": "L3 costs little", "a": "unetpp L3", "b": "unetpp"}]  # fmt: skip
    rows = figure_differences({"differences": differences, "claims": claims})
    assert [(r["a"], r["b"]) for r in rows] == [
        ("unetpp", "unet"), ("wide", "unet"), ("unetpp L3", "unetpp")
    ]  # fmt: skip


def test_a_report_written_while_the_study_trains_lists_the_claims_it_waits_for(tmp_path):
    """Only U-Net's runs have finished: the report covers them and names the claims that
    need a U-Net++ run, instead of failing."""
    from segdemo.study_report import write_study_report
    from segdemo.train import fit

    study_file = tmp_path / "tiny.toml"
    study_file.write_text(
        TINY_STUDY.replace("epochs = 3", "epochs = 1").replace("seeds = [0, 1]", "seeds = [0]")
        + '\n[[claims]]\nclaim = "nested skips help"\na = "unetpp:fast:4"\nb = "unet"\n'
    )
    study = load_study(study_file)
    out = tmp_path / "study"
    unet = next(m for m in study.models if m.name == "unet")
    fit(study.config("synthetic", out, unet, 0))
    result = write_study_report(study, out, tmp_path / "docs", max_items=4, repeats=1,
                                log=lambda *a: None)  # fmt: skip
    assert [r["model"] for r in result["runs"]] == ["unet"]
    assert result["claims"] == []
    assert result["pending_claims"] == [
        {"claim": "nested skips help", "a": "unetpp:fast:4", "b": "unet", "missing": ["unetpp"]}
    ]
    text = (tmp_path / "docs" / "tiny.md").read_text()
    assert "**nested skips help** (unetpp:fast:4 against unet): not measured yet (waiting for " \
           "unetpp)." in text  # fmt: skip
    assert "**Partial: 1 of 2 runs have finished** (seeds per model: unet: 0; unetpp: none " \
           "yet)" in text  # fmt: skip


def test_a_half_finished_report_counts_the_seeds_that_finished():
    from segdemo.stats import spread_over

    models = [{"name": "unet"}, {"name": "unetpp"}]
    result = {"models": models, "seeds": [0, 1, 2],
              "runs": [{"model": "unet", "seed": 0}, {"model": "unetpp", "seed": 0}]}  # fmt: skip
    assert spread_over(result) == "one seed per model so far (no spread yet)"
    result["runs"].append({"model": "unet", "seed": 1})
    assert spread_over(result) == "mean ± std over each model's finished seeds (1 to 2)"
    result["runs"].append({"model": "unetpp", "seed": 1})
    assert spread_over(result) == "mean ± std over 2 seeds"
