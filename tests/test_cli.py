"""The command line end to end, on the built-in synthetic set."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdemo.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny U-Net++ trained for a few steps through the CLI."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main([
        "train", "--data", "synthetic", "--synthetic-length", "8", "--model", "unetpp",
        "--base-width", "4", "--size", "32x64", "--batch", "4", "--epochs", "2",
        "--workers", "0", "--val-max-items", "4", "--precision", "fp32", "--out", str(out),
        "--quiet",
    ])  # fmt: skip
    assert code == 0
    return out


def test_train_writes_last_and_best(trained):
    assert (trained / "last.safetensors").is_file() and (trained / "best.safetensors").is_file()


def test_eval_json_has_the_documented_keys(trained, capsys):
    capsys.readouterr()
    ckpt = str(trained / "best.safetensors")
    assert main(["eval", "--ckpt", ckpt, "--data", "synthetic", "--max-items", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"miou", "pixel_accuracy", "per_class_iou", "per_level"} <= result.keys()
    assert set(result["per_class_iou"]) >= {"road", "sky", "car"}
    assert set(result["per_level"]) == {"fast", "accurate"}
    assert set(result["per_level"]["fast"]) == {"1", "2", "3", "4"}
    # Accurate L4 is the default and equals the top-level numbers.
    assert result["per_level"]["accurate"]["4"]["miou"] == pytest.approx(result["miou"])


def test_eval_one_level_matches_the_per_level_table(trained, capsys):
    ckpt = str(trained / "best.safetensors")
    main(["eval", "--ckpt", ckpt, "--data", "synthetic", "--max-items", "4", "--json"])
    table = json.loads(capsys.readouterr().out)["per_level"]
    args = ["eval", "--ckpt", ckpt, "--data", "synthetic", "--max-items", "4", "--json"]
    main([*args, "--mode", "fast", "--level", "2", "--precision", "fp32"])
    one = json.loads(capsys.readouterr().out)
    # The table comes from one pass over all heads (bf16 where supported), this from the
    # pruned network in fp32: both must agree closely.
    assert one["mode"] == "fast" and one["level"] == 2
    assert one["miou"] == pytest.approx(table["fast"]["2"]["miou"], abs=0.02)


def test_predict_writes_mask_overlay_and_train_ids(trained, tmp_path, capsys):
    photo = tmp_path / "street.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (75, 250, 3), np.uint8)).save(photo)
    out = tmp_path / "pred"
    code = main([
        "predict", "--ckpt", str(trained / "best.safetensors"), str(photo), "--out", str(out),
        "--mode", "fast", "--level", "1",
    ])  # fmt: skip
    assert code == 0
    for suffix in ("mask", "overlay", "trainids", "legend"):
        assert (out / f"street_{suffix}.png").is_file()
    ids = np.asarray(Image.open(out / "street_trainids.png"))
    assert ids.shape == (75, 250) and ids.max() < 19  # scaled back to the photo


def test_predict_names_a_bad_image_and_continues(trained, tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    good = tmp_path / "ok.png"
    Image.new("RGB", (40, 20), "gray").save(good)
    code = main(["predict", "--ckpt", str(trained / "best.safetensors"), str(bad), str(good),
                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "notes.jpg" in capsys.readouterr().err
    assert (tmp_path / "o" / "ok_mask.png").is_file()


def test_export_fp16_copy_drops_optimizer_state(trained, tmp_path):
    out = tmp_path / "small.safetensors"
    assert main(["export", "--ckpt", str(trained / "last.safetensors"), "--safetensors",
                 str(out), "--fp16"]) == 0  # fmt: skip
    assert out.stat().st_size < 0.3 * (trained / "last.safetensors").stat().st_size
    from segdemo.checkpoints import load_checkpoint

    ckpt = load_checkpoint(out)
    assert "optimizer" not in ckpt.metadata and ckpt.metadata["history"]


def test_export_onnx_runs_in_onnxruntime_with_the_same_argmax(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import torch

    from segdemo.checkpoints import load_checkpoint

    out = tmp_path / "m.onnx"
    ckpt_path = str(trained / "best.safetensors")
    assert main(["export", "--ckpt", ckpt_path, "--onnx", str(out), "--mode", "fast",
                 "--level", "3"]) == 0  # fmt: skip
    x = torch.randn(2, 3, 32, 64)
    ref = load_checkpoint(ckpt_path).model(x, mode="fast", level=3).argmax(1).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0].argmax(1)
    assert (got == ref).mean() > 0.999


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "inspect", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "empty" in err and "Traceback" not in err
    assert main(["eval", "--ckpt", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_resume_refuses_other_settings(trained, capsys, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    assert main(["train", "--resume", "--out", str(run), "--model", "unet"]) == 2
    assert "--model" in capsys.readouterr().err


def test_data_inspect_json_on_the_synthetic_set(capsys):
    assert main(["data", "inspect", "synthetic", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "synthetic"


def test_every_command_has_help():
    for cmd in (["train"], ["eval"], ["predict"], ["bench"], ["export"], ["data", "inspect"]):
        done = subprocess.run(
            [sys.executable, "-m", "segdemo", *cmd, "--help"], cwd=REPO, capture_output=True,
            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0 and "usage:" in done.stdout


def test_report_writes_tables_figures_and_numbers(trained, tmp_path):
    from segdemo.checkpoints import load_checkpoint

    out = tmp_path / "results"
    code = main(["report", "--ckpt", str(trained / "best.safetensors"), "--data", "synthetic",
                 "--max-items", "4", "--repeats", "1", "--qualitative", "2", "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    (result,) = report["results"]
    assert [(s["mode"], s["level"]) for s in result["settings"]][:4] == [
        ("fast", 1), ("fast", 2), ("fast", 3), ("fast", 4)]  # fmt: skip
    flops = [s["gflops"] for s in result["settings"][:4]]
    assert flops == sorted(flops) and flops[0] < flops[-1]
    stored = load_checkpoint(trained / "best.safetensors").metadata["train_state"]["history"]
    assert result["history"] == stored
    for name in ("per_class_iou.png", "pruning_tradeoff.png", "qualitative.png",
                 "training_curves.png", "tables.md"):  # fmt: skip
        assert (out / name).stat().st_size > 0
    assert "| fast | L1 |" in (out / "tables.md").read_text()


def test_export_smp_model_in_smps_own_layout(tmp_path):
    import segmentation_models_pytorch as smp
    import torch

    from segdemo import checkpoints
    from segdemo.labels import get_label_set
    from segdemo.models import create_model

    labels = get_label_set("cityscapes19")
    model = create_model("smp_unet", 19, encoder="resnet18").eval()
    meta = checkpoints.build_metadata(model, labels, (64, 64), model.normalization)
    ckpt = checkpoints.save_checkpoint(tmp_path / "smp.safetensors", model, meta)
    out = tmp_path / "smp_layout"
    assert main(["export", "--ckpt", str(ckpt), "--pretrained-dir", str(out)]) == 0
    reloaded = smp.from_pretrained(str(out)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x))


def test_export_pretrained_dir_refuses_a_scratch_model(trained, tmp_path, capsys):
    code = main(["export", "--ckpt", str(trained / "best.safetensors"), "--pretrained-dir",
                 str(tmp_path / "x")])  # fmt: skip
    assert code == 2 and "not an smp model" in capsys.readouterr().err
