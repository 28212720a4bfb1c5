"""The command line's corpus of bad inputs: every subcommand, every study field.

Each case runs ``python -m segdemo`` in-process (``segdemo.cli.main`` with its argv) and
expects what the project promises for a mistake a user can fix: exit status 2, exactly one
line with ``error:`` naming what was wrong, and no traceback. A few cases run in a
subprocess, where only the real interpreter can tell (imports, the process's output).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdemo.cli import main

REPO = Path(__file__).resolve().parents[1]
CKPT = str(REPO / "checkpoints" / "unet.safetensors")  # a model without levels
HUGE = str(2**70)

STUDY = """\
name = "tiny"
seeds = [0, 1]
reference = "unet"

[train]
size = [32, 32]
epochs = 1
batch_size = 2

[[models]]
name = "unet"
model = "unet"
kwargs = { base_width = 4 }

[[models]]
name = "unetpp"
model = "unetpp"
kwargs = { base_width = 4, deep_supervision = true }

[[claims]]
claim = "U-Net++ beats U-Net"
a = "unetpp:fast:4"
b = "unet"
"""


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> dict[str, str]:
    """Files the cases name: a photo, a plain file, a folder without photos, a non-photo."""
    root = tmp_path_factory.mktemp("bad_inputs")
    photo = root / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)).save(photo)
    (root / "afile").write_text("not a folder")
    (root / "not_a_photo.png").write_text("not a PNG")
    (root / "empty").mkdir()
    (root / "broken.toml").write_text("name = [unclosed")
    return {
        "tmp": str(root),
        "photo": str(photo),
        "file": str(root / "afile"),
        "not_a_photo": str(root / "not_a_photo.png"),
        "empty": str(root / "empty"),
        "broken_toml": str(root / "broken.toml"),
        "ckpt": CKPT,
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``python -m segdemo ARGV`` in this process: (exit status, stderr)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's errors
        code = e.code
    return code, capsys.readouterr().err


def assert_one_error(code: int, err: str, *expected: str) -> None:
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]


def _fill(argv: list[str], place: dict[str, str]) -> list[str]:
    return [a.format(**place) for a in argv]


# (argv, what the error line must name); {name} is a file of the ``place`` fixture.
CASES = {
    # data inspect
    "data-file": (["data", "inspect", "{file}"], ["is a file, not a dataset folder"]),
    "data-missing": (["data", "inspect", "{tmp}/nope"], ["{tmp}/nope", "does not exist"]),
    "data-empty": (["data", "inspect", "{empty}"], ["{empty}"]),
    "data-format": (["data", "inspect", "synthetic", "--format", "bogus"], ["bogus"]),
    "data-no-root": (["data", "inspect"], ["root"]),
    # train: each setting's type and range, checked before anything loads
    "train-size-huge": (["train", "--size", "5000x5000"], ["--size", "at most 4096"]),
    "train-size-tiny": (["train", "--size", "1x1"], ["--size", "at least 16"]),
    "train-size-text": (["train", "--size", "big"], ["--size", "'big'"]),
    "train-size-three": (["train", "--size", "32x32x32"], ["--size"]),
    "train-base-width-huge": (["train", "--base-width", "100000"], ["--base-width", "128"]),
    "train-base-width-zero": (["train", "--base-width", "0"], ["--base-width"]),
    "train-base-width-text": (["train", "--base-width", "wide"], ["--base-width", "'wide'"]),
    "train-seed-huge": (["train", "--seed", HUGE], ["--seed", HUGE]),
    "train-seed-negative": (["train", "--seed", "-1"], ["--seed"]),
    "train-epochs-zero": (["train", "--epochs", "0"], ["--epochs", "at least 1"]),
    "train-epochs-float": (["train", "--epochs", "1.5"], ["--epochs", "'1.5'"]),
    "train-batch-zero": (["train", "--batch", "0"], ["--batch"]),
    "train-batch-huge": (["train", "--batch", "1000000"], ["--batch"]),
    "train-lr-nan": (["train", "--lr", "nan"], ["--lr", "finite"]),
    "train-lr-inf": (["train", "--lr", "inf"], ["--lr", "finite"]),
    "train-lr-negative": (["train", "--lr", "-1"], ["--lr", "greater than 0"]),
    "train-lr-zero": (["train", "--lr", "0"], ["--lr", "greater than 0"]),
    "train-weight-decay": (["train", "--weight-decay", "-0.1"], ["--weight-decay"]),
    "train-encoder-lr-mult": (["train", "--encoder-lr-mult", "0"], ["--encoder-lr-mult"]),
    "train-warmup": (["train", "--warmup-steps", "-5"], ["--warmup-steps"]),
    "train-workers": (["train", "--workers", "-1"], ["--workers"]),
    "train-log-every": (["train", "--log-every", "0"], ["--log-every"]),
    "train-val-max-items": (["train", "--val-max-items", "0"], ["--val-max-items"]),
    "train-max-steps": (["train", "--max-steps", "0"], ["--max-steps"]),
    "train-scale-range-zero": (["train", "--scale-range", "0,1"], ["--scale-range"]),
    "train-scale-range-text": (["train", "--scale-range", "a,b"], ["--scale-range"]),
    "train-synthetic-length": (["train", "--synthetic-length", "0"], ["--synthetic-length"]),
    "train-schedule": (["train", "--schedule", "bogus"], ["--schedule"]),
    "train-loss": (["train", "--loss", "bogus"], ["--loss"]),
    "train-photometric": (["train", "--photometric", "bogus"], ["--photometric"]),
    "train-precision": (["train", "--precision", "fp8"], ["--precision"]),
    "train-encoder-weights": (["train", "--encoder-weights", "web"], ["--encoder-weights"]),
    "train-model-arg-no-equals": (["train", "--model-arg", "base_width"], ["--model-arg"]),
    "train-unknown-flag": (["train", "--epoks", "3"], ["--epoks"]),
    "train-out-file": (["train", "--out", "{file}"], ["--out", "is a file"]),
    "train-out-under-file": (["train", "--out", "{file}/run"], ["--out", "{file} is a file"]),
    # train: checks that need the registries (after parsing)
    "train-model-arg-text": (
        ["train", "--model-arg", 'base_width="x"', "--out", "{tmp}/runs/a"],
        ["--base-width", "whole number"],
    ),
    "train-model-arg-unknown": (
        ["train", "--model-arg", "bogus=1", "--out", "{tmp}/runs/b"],
        ["does not take", "bogus"],
    ),
    "train-scale-range-reversed": (
        ["train", "--scale-range", "2,1", "--out", "{tmp}/runs/c"],
        ["--scale-range", "MIN <= MAX"],
    ),
    "train-model": (["train", "--model", "bogus", "--out", "{tmp}/runs/d"], ["unknown model"]),
    "train-label-set": (
        ["train", "--label-set", "bogus", "--out", "{tmp}/runs/e"],
        ["unknown label set"],
    ),
    "train-device": (["train", "--device", "tpu", "--out", "{tmp}/runs/f"], ["--device"]),
    "train-data-file": (
        ["train", "--data", "{file}", "--base-width", "4", "--out", "{tmp}/runs/g"],
        ["{file} is a file, not a dataset folder"],
    ),
    "train-data-missing": (
        ["train", "--data", "{tmp}/nope", "--base-width", "4", "--out", "{tmp}/runs/h"],
        ["{tmp}/nope", "does not exist"],
    ),
    "train-resume-nothing": (
        ["train", "--resume", "--out", "{tmp}/runs/i"],
        ["cannot resume", "last.safetensors"],
    ),
    "train-init-from-missing": (
        [
            "train",
            "--init-from",
            "{tmp}/nope.safetensors",
            "--base-width",
            "4",
            "--out",
            "{tmp}/runs/j",
        ],
        ["nope.safetensors"],
    ),  # fmt: skip
    # eval
    "eval-ckpt-missing": (["eval", "--ckpt", "{tmp}/nope.safetensors"], ["nope.safetensors"]),
    "eval-ckpt-folder": (["eval", "--ckpt", "{tmp}"], ["{tmp}", "directory"]),
    "eval-ckpt-not-a-checkpoint": (["eval", "--ckpt", "{file}"], ["afile"]),
    "eval-data-file": (["eval", "--ckpt", "{ckpt}", "--data", "{file}"], ["is a file, not a"]),
    "eval-batch": (["eval", "--ckpt", "{ckpt}", "--batch", "0"], ["--batch"]),
    "eval-level": (["eval", "--ckpt", "{ckpt}", "--level", "0"], ["--level"]),
    "eval-resamples": (["eval", "--ckpt", "{ckpt}", "--resamples", "-1"], ["--resamples"]),
    "eval-seed": (["eval", "--ckpt", "{ckpt}", "--seed", HUGE], ["--seed"]),
    "eval-max-items": (["eval", "--ckpt", "{ckpt}", "--max-items", "0"], ["--max-items"]),
    "eval-shift": (["eval", "--ckpt", "{ckpt}", "--shift", "fog"], ["--shift"]),
    "eval-split": (["eval", "--ckpt", "{ckpt}", "--split", "test"], ["--split"]),
    "eval-tta": (
        ["eval", "--ckpt", "{ckpt}", "--tta", "sideways", "--max-items", "1"],
        ["sideways"],
    ),  # fmt: skip
    "eval-no-ckpt": (["eval"], ["--ckpt"]),
    # compare
    "compare-bad-setting": (["compare", "--ckpt", "{ckpt}@fst"], ["fst", "FILE@fast:3"]),
    "compare-level-zero": (["compare", "--ckpt", "{ckpt}@fast:0"], ["fast:0"]),
    "compare-at-in-missing-path": (["compare", "--ckpt", "{tmp}/a@b/x.safetensors"], ["a@b"]),
    "compare-missing": (
        ["compare", "--ckpt", "{ckpt}", "--ckpt", "{tmp}/nope.safetensors"],
        ["nope.safetensors"],
    ),  # fmt: skip
    "compare-levels-of-unet": (
        ["compare", "--ckpt", "{ckpt}", "--ckpt", "{ckpt}@fast:3", "--max-items", "1"],
        ["unet"],
    ),  # fmt: skip
    "compare-resamples": (["compare", "--ckpt", "{ckpt}", "--resamples", "0"], ["--resamples"]),
    "compare-batch": (["compare", "--ckpt", "{ckpt}", "--batch", "-3"], ["--batch"]),
    # report
    "report-out-file": (["report", "--ckpt", "{ckpt}", "--out", "{file}"], ["--out", "a file"]),
    "report-out-under-file": (["report", "--ckpt", "{ckpt}", "--out", "{file}/x"], ["--out"]),
    "report-repeats": (["report", "--ckpt", "{ckpt}", "--repeats", "0"], ["--repeats"]),
    "report-qualitative": (
        ["report", "--ckpt", "{ckpt}", "--qualitative", "-1"],
        ["--qualitative"],
    ),  # fmt: skip
    # predict
    "predict-out-file": (
        ["predict", "--ckpt", "{ckpt}", "{photo}", "--out", "{file}"],
        ["--out", "is a file, not a folder"],
    ),  # fmt: skip
    "predict-out-under-file": (
        ["predict", "--ckpt", "{ckpt}", "{photo}", "--out", "{file}/o"],
        ["--out", "{file} is a file"],
    ),  # fmt: skip
    "predict-alpha-7": (
        ["predict", "--ckpt", "{ckpt}", "{photo}", "--out", "{tmp}/o", "--alpha", "7"],
        ["--alpha", "0 to 1"],
    ),  # fmt: skip
    "predict-alpha-negative": (
        ["predict", "--ckpt", "{ckpt}", "{photo}", "--out", "{tmp}/o", "--alpha", "-1"],
        ["--alpha"],
    ),  # fmt: skip
    "predict-alpha-nan": (
        ["predict", "--ckpt", "{ckpt}", "{photo}", "--out", "{tmp}/o", "--alpha", "nan"],
        ["--alpha", "nan"],
    ),  # fmt: skip
    "predict-level": (
        ["predict", "--ckpt", "{ckpt}", "{photo}", "--out", "{tmp}/o", "--level", "0"],
        ["--level"],
    ),  # fmt: skip
    "predict-missing-photo": (
        ["predict", "--ckpt", "{ckpt}", "{tmp}/nope.png", "--out", "{tmp}/o"],
        ["nope.png", "does not exist"],
    ),  # fmt: skip
    "predict-no-photos": (
        ["predict", "--ckpt", "{ckpt}", "{empty}", "--out", "{tmp}/o"],
        ["{empty} holds no photos"],
    ),  # fmt: skip
    "predict-not-a-photo": (
        ["predict", "--ckpt", "{ckpt}", "{not_a_photo}", "--out", "{tmp}/o"],
        ["not_a_photo.png"],
    ),  # fmt: skip
    "predict-ckpt-missing": (
        ["predict", "--ckpt", "{tmp}/nope.safetensors", "{photo}", "--out", "{tmp}/o"],
        ["nope.safetensors"],
    ),  # fmt: skip
    "predict-levels-of-unet": (
        ["predict", "--ckpt", "{ckpt}", "{photo}", "--out", "{tmp}/o", "--mode", "fast"],
        ["without levels"],
    ),  # fmt: skip
    "predict-no-out": (["predict", "--ckpt", "{ckpt}", "{photo}"], ["--out"]),
    # export
    "export-safetensors-folder": (
        ["export", "--ckpt", "{ckpt}", "--safetensors", "{tmp}"],
        ["--safetensors", "is a folder"],
    ),  # fmt: skip
    "export-onnx-under-file": (
        ["export", "--ckpt", "{ckpt}", "--onnx", "{file}/m.onnx"],
        ["--onnx", "{file}"],
    ),  # fmt: skip
    "export-pretrained-file": (
        ["export", "--ckpt", "{ckpt}", "--pretrained-dir", "{file}"],
        ["--pretrained-dir"],
    ),  # fmt: skip
    "export-nothing": (["export", "--ckpt", "{ckpt}"], ["--onnx", "--safetensors"]),
    "export-level": (
        ["export", "--ckpt", "{ckpt}", "--onnx", "{tmp}/m.onnx", "--level", "-2"],
        ["--level"],
    ),  # fmt: skip
    "export-ckpt-missing": (
        ["export", "--ckpt", "{tmp}/nope.safetensors", "--safetensors", "{tmp}/x.safetensors"],
        ["nope.safetensors"],
    ),  # fmt: skip
    # bench
    "bench-batch": (["bench", "--batch", "0"], ["--batch"]),
    "bench-repeats": (["bench", "--repeats", "0"], ["--repeats"]),
    "bench-seconds": (["bench", "--video", "{ckpt}", "--seconds", "0"], ["--seconds"]),
    "bench-size": (["bench", "--size", "0x0"], ["--size"]),
    "bench-model": (["bench", "--models", "bogus", "--repeats", "1"], ["bogus"]),
    "bench-train-spec-text": (
        ["bench", "--train", "--model", "unet:base_width=x"],
        ["--model unet:base_width=x", "base_width"],
    ),
    "bench-train-spec-huge": (
        ["bench", "--train", "--model", "unet:base_width=100000"],
        ["base_width", "at most 128"],
    ),
    "bench-train-spec-unknown": (
        ["bench", "--train", "--model", "unet:bogus=1"],
        ["does not take", "bogus"],
    ),
    "bench-train-spec-model": (["bench", "--train", "--model", "vit"], ["vit"]),
    "bench-train-spec-too-big": (
        ["bench", "--train", "--model", "unet:base_width=128", "--size", "4096x4096"],
        ["TFLOPs"],
    ),
    "bench-video-missing": (
        ["bench", "--video", "{tmp}/nope.safetensors", "--seconds", "0.2"],
        ["nope.safetensors"],
    ),  # fmt: skip
    # study: the command's own arguments
    "study-missing": (["study", "{tmp}/nope.toml", "--out", "{tmp}/s"], ["nope.toml"]),
    "study-folder": (["study", "{tmp}", "--out", "{tmp}/s"], ["is a folder"]),
    "study-broken-toml": (["study", "{broken_toml}", "--out", "{tmp}/s"], ["broken.toml"]),
    "study-out-file": (["study", "{broken_toml}", "--out", "{file}"], ["--out", "is a file"]),
    "study-report-file": (
        ["study", "{broken_toml}", "--out", "{tmp}/s", "--report", "{file}"],
        ["--report", "is a file"],
    ),  # fmt: skip
    "study-max-items": (
        ["study", "{broken_toml}", "--out", "{tmp}/s", "--max-items", "0"],
        ["--max-items"],
    ),  # fmt: skip
    "no-command": ([], ["command"]),
    "unknown-command": (["fly"], ["fly"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_argument_is_one_error_line(name, place, capsys):
    argv, expected = CASES[name]
    code, err = run_cli(_fill(argv, place), capsys)
    assert_one_error(code, err, *_fill(expected, place))


# Every field of a study file, wrong: (text replaced, replacement, what the error names);
# None replaced: the replacement is the whole file.
STUDY_CASES = {
    "epochs-text": ("epochs = 1", 'epochs = "10"', "[train] epochs must be a whole number"),
    "epochs-zero": ("epochs = 1", "epochs = 0", "[train] epochs must be at least 1"),
    "epochs-float": ("epochs = 1", "epochs = 1.5", "[train] epochs"),
    "seeds-int": ("seeds = [0, 1]", "seeds = 5", "seeds must be a non-empty list"),
    "seeds-empty": ("seeds = [0, 1]", "seeds = []", "seeds must be a non-empty list"),
    "seeds-text": ("seeds = [0, 1]", 'seeds = ["0"]', "seeds[0] must be a whole number"),
    "seeds-negative": ("seeds = [0, 1]", "seeds = [0, -1]", "seeds[1] must be at least 0"),
    "seeds-huge": ("seeds = [0, 1]", "seeds = [9223372036854775807]", "seeds[0] must be at most"),
    "seeds-repeated": ("seeds = [0, 1]", "seeds = [1, 1]", "seeds must be different"),
    "models-text": (
        None,
        STUDY.split("[[models]]")[0].replace('name = "tiny"', 'name = "tiny"\nmodels = "unet"'),
        "models must be a list of tables",
    ),
    "models-empty": (
        None,
        STUDY.split("[[models]]")[0].replace('name = "tiny"', 'name = "tiny"\nmodels = []'),
        "models must list at least one model",
    ),
    "model-name-climbs": ('name = "unet"', 'name = "../../x"', "models[0].name must be"),
    "model-name-absolute": ('name = "unet"', 'name = "/tmp/x"', "models[0].name must be"),
    "model-name-dot": ('name = "unet"', 'name = ".hidden"', "models[0].name must be"),
    "model-name-slash": ('name = "unet"', 'name = "a/b"', "models[0].name must be"),
    "model-name-number": ('name = "unet"', "name = 5", "models[0].name must be a text"),
    "model-name-missing": ('name = "unet"\n', "", "models[0] needs a name"),
    "model-model-unknown": ('model = "unet"', 'model = "vit"', "models[0].model must be one of"),
    "model-model-number": ('model = "unet"', "model = 1", "models[0].model must be a text"),
    "model-kwargs-text": (
        "kwargs = { base_width = 4 }",
        'kwargs = { base_width = "x" }',
        "models[0].kwargs.base_width should be a whole number",
    ),  # fmt: skip
    "model-kwargs-huge": (
        "kwargs = { base_width = 4 }",
        "kwargs = { base_width = 100000 }",
        "models[0].kwargs.base_width should be at most 128",
    ),  # fmt: skip
    "model-kwargs-unknown": (
        "kwargs = { base_width = 4 }",
        "kwargs = { bogus = 4 }",
        "does not take",
    ),  # fmt: skip
    "model-kwargs-not-table": (
        "kwargs = { base_width = 4 }",
        "kwargs = 4",
        "models[0].kwargs must be a table",
    ),  # fmt: skip
    "model-unknown-key": ('model = "unet"', 'model = "unet"\ncolour = "red"', "colour"),
    "model-duplicate": ('name = "unetpp"', 'name = "unet"', "models must have different names"),
    "study-name-climbs": ('name = "tiny"', 'name = "../tiny"', "name must be"),
    "study-name-number": ('name = "tiny"', "name = 3", "name must be a text"),
    "study-name-missing": ('name = "tiny"\n', "", "needs a 'name'"),
    "description-number": ('name = "tiny"', 'name = "tiny"\ndescription = 3', "description"),
    "reference-unknown": ('reference = "unet"', 'reference = "vit"', "reference must be one of"),
    "unknown-key": ('name = "tiny"', 'name = "tiny"\nauthor = "x"', "author"),
    "train-not-table": (
        "[train]\nsize = [32, 32]\nepochs = 1\nbatch_size = 2\n",
        "train = 3\n",
        "[train] must be a table",
    ),  # fmt: skip
    "train-unknown": ("epochs = 1", "epochs = 1\nepoch = 2", "epoch"),
    "train-per-run": ("epochs = 1", "epochs = 1\nseed = 3", "[train] cannot set seed"),
    "train-model": ("epochs = 1", 'epochs = 1\nmodel = "unet"', "[train] cannot set model"),
    "train-size-int": ("size = [32, 32]", "size = 5", "[train] size must be HxW"),
    "train-size-tiny": ("size = [32, 32]", "size = [1, 1]", "[train] size each value"),
    "train-size-text": ("size = [32, 32]", 'size = ["32", "32"]', "[train] size must be HxW"),
    "train-batch-text": ("batch_size = 2", 'batch_size = "2"', "[train] batch_size"),
    "train-lr-nan": ("epochs = 1", "epochs = 1\nlr = nan", "[train] lr must be a finite"),
    "train-lr-bool": ("epochs = 1", "epochs = 1\nlr = true", "[train] lr must be a number"),
    "train-augment-text": ("epochs = 1", 'epochs = 1\naugment = "no"', "[train] augment"),
    "train-loss": ("epochs = 1", 'epochs = 1\nloss = "l2"', "[train] loss must be one of"),
    "train-schedule": ("epochs = 1", "epochs = 1\nschedule = 3", "[train] schedule"),
    "train-scale-range": ("epochs = 1", "epochs = 1\nscale_range = [2.0, 1.0]", "MIN <= MAX"),
    "train-scale-range-one": ("epochs = 1", "epochs = 1\nscale_range = [2.0]", "scale_range"),
    "train-data-options": ("epochs = 1", "epochs = 1\ndata_options = 5", "[train] data_options"),
    "train-workers": ("epochs = 1", "epochs = 1\nworkers = -2", "[train] workers"),
    "train-label-set": ("epochs = 1", 'epochs = 1\nlabel_set = "x"', "unknown label set"),
    "train-device": ("epochs = 1", 'epochs = 1\ndevice = "tpu"', "--device"),
    "train-max-steps": ("epochs = 1", "epochs = 1\nmax_steps = 0", "[train] max_steps"),
    "train-init-from": ("epochs = 1", "epochs = 1\ninit_from = 5", "[train] init_from"),
    "claim-unknown-model": ('a = "unetpp:fast:4"', 'a = "vit"', "claims[0].a must be one of"),
    "claim-bad-level": ('a = "unetpp:fast:4"', 'a = "unetpp:fast:x"', "claims[0].a"),
    "claim-bad-mode": ('a = "unetpp:fast:4"', 'a = "unetpp:quick"', "claims[0].a"),
    "claim-missing-side": ('b = "unet"\n', "", "claims[0] needs claim, a and b"),
    "claim-number": ('b = "unet"', "b = 1", "claims[0].b must be a text"),
    "claims-not-tables": ("[[claims]]", "claims = 1\n[[ignored]]", "claims"),
}


@pytest.mark.parametrize("name", list(STUDY_CASES))
def test_a_bad_study_field_is_one_error_naming_the_file_and_field(name, tmp_path, capsys):
    old, new, expected = STUDY_CASES[name]
    assert old is None or old in STUDY, f"{name}: {old!r} is not in the study"
    study = tmp_path / "bad.toml"
    study.write_text(new if old is None else STUDY.replace(old, new, 1))
    code, err = run_cli(["study", str(study), "--out", str(tmp_path / "runs")], capsys)
    assert_one_error(code, err, str(study), expected)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_study_corpus_starts_from_a_valid_study(tmp_path):
    from segdemo.study import load_study

    (tmp_path / "ok.toml").write_text(STUDY)
    assert [m.name for m in load_study(tmp_path / "ok.toml").models] == ["unet", "unetpp"]


def test_a_busy_out_is_refused_before_anything_heavy(tmp_path, capsys, trainer_stand_in):
    holder = trainer_stand_in(tmp_path / "run")
    code, err = run_cli(["train", "--out", str(tmp_path / "run")], capsys)
    assert_one_error(code, err, "in use by a training process", f"pid {holder}")


def test_a_checkpoint_path_with_at_signs_compares(tmp_path):
    from segdemo.cli.evaluation import checkpoint_spec

    odd = tmp_path / "runs@night" / "best@fast.safetensors"
    odd.parent.mkdir()
    odd.write_bytes(b"")
    assert checkpoint_spec(str(odd)) == (str(odd), None, None)  # the file, as it exists
    assert checkpoint_spec(f"{odd}@fast:3") == (str(odd), "fast", 3)
    assert checkpoint_spec(f"{odd}@accurate") == (str(odd), "accurate", None)


# --------------------------------------------------------------------------- processes


def _segdemo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "segdemo", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)  # fmt: skip


_IMPORTS = """
import runpy, sys
sys.argv = ["segdemo", *sys.argv[1:]]
try:
    runpy.run_module("segdemo", run_name="__main__")
except SystemExit:
    pass
heavy = ("torch", "numpy", "segmentation_models_pytorch", "streamlit", "cv2", "PIL",
         "albumentations", "pydantic", "matplotlib", "timm")
print("imported:" + ",".join(m for m in heavy if m in sys.modules))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["eval", "--help"], ["study", "--help"],
     ["predict", "--help"], ["bench", "--help"], ["train", "--size", "5000x5000"],
     ["predict", "--ckpt", "x.safetensors", "p.png", "--out", "o", "--alpha", "7"]],
)  # fmt: skip
def test_help_and_argument_errors_import_nothing_heavy(argv):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", _IMPORTS, *argv], capture_output=True,
                            text=True, timeout=120, cwd=REPO, env=env)  # fmt: skip
    (imported,) = [line for line in result.stdout.splitlines() if line.startswith("imported:")]
    assert imported == "imported:", f"{argv} {imported}"


@pytest.mark.slow
def test_in_a_real_process_a_mistake_is_one_line_and_no_traceback(place):
    result = _segdemo("predict", "--ckpt", CKPT, place["photo"], "--out", place["file"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: --out {place['file']} is a file, not a folder"
