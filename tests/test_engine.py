"""The OpenVINO engine: agreement with torch fp32, the IR cache, the fallback, telemetry."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from segdemo import engine
from segdemo.inference import Segmenter, predict_logits, prepare_model
from segdemo.models import create_model, get_model_config, list_models
from segdemo.models.registry import forward_kwargs, inference_settings

openvino = pytest.importorskip("openvino")


def _tiny(name: str, classes: int = 5) -> tuple[torch.nn.Module, torch.Tensor]:
    config = get_model_config(name)
    torch.manual_seed(0)
    model = create_model(name, classes, **config.tiny_kwargs).eval()
    x = torch.randn(2, 3, *config.tiny_input_size, generator=torch.Generator().manual_seed(1))
    return model, x


def _agree(model, compiled, x, **kwargs) -> None:
    expected = predict_logits(model, x, "cpu", "fp32", **kwargs)
    got = predict_logits(compiled, x, "cpu", "fp32", **kwargs)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.999


def test_openvino_fp32_matches_torch_fp32_at_a_pruned_level(tmp_path):
    model, x = _tiny("unetpp")
    compiled = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)
    _agree(model, compiled, x, mode="fast", level=2)
    _agree(model, compiled, x, mode="accurate", level=3)  # log-mean-softmax of three heads
    heads = compiled.forward_heads(x)
    for got, expected in zip(heads, model.forward_heads(x), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_pruned_level_is_a_smaller_graph(tmp_path):
    model, x = _tiny("unetpp")
    compiled = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)
    compiled(x, mode="fast", level=1)
    compiled(x, mode="fast", level=4)
    sizes = sorted(
        (entry / "model.bin").stat().st_size for entry in tmp_path.iterdir() if entry.is_dir()
    )
    assert len(sizes) == 2 and sizes[0] < sizes[1] / 4  # L1 holds a fraction of the weights


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_model_and_setting_agrees_with_torch(name, tmp_path):
    model, x = _tiny(name)
    compiled = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)
    for mode, level in inference_settings(model):
        _agree(model, compiled, x, **forward_kwargs(mode, level))


def test_prepare_model_and_segmenter_run_through_openvino(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDEMO_CACHE", str(tmp_path))
    model, _ = _tiny("unet")
    compiled, device, precision = prepare_model(model, "cpu", "fp32", engine="openvino")
    assert engine.engine_of(compiled) == "openvino" and device.type == "cpu"
    assert precision == "fp32" and compiled.normalization == model.normalization
    photo = torch.randint(0, 256, (20, 30, 3), dtype=torch.uint8).numpy()
    fast = Segmenter("m", compiled, (32, 32), None, device, precision)
    reference = Segmenter("m", model, (32, 32), None, device, "fp32")
    assert fast.engine == "openvino" and reference.engine == "torch"
    assert (fast(photo) == reference(photo)).mean() >= 0.999
    assert any((tmp_path / "openvino").iterdir())  # the cache lives under $SEGDEMO_CACHE


# ------------------------------------------------------------------------------ the cache


def test_second_use_reads_the_cache_instead_of_converting(tmp_path):
    model, x = _tiny("unetpp")
    first = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)
    expected = first(x, mode="fast", level=2)
    assert list(first.cache_events.values()) == ["converted"]
    second = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)  # a new process, say
    torch.testing.assert_close(second(x, mode="fast", level=2), expected)
    assert list(second.cache_events.values()) == ["cached"]


def test_a_corrupt_entry_is_rebuilt_with_one_warning(tmp_path, caplog):
    model, x = _tiny("unetpp")
    first = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)
    expected = first(x, mode="fast", level=2)
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (entry / "model.xml").write_text("<net><broken")
    with caplog.at_level(logging.WARNING, logger="segdemo.engine"):
        second = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)
        torch.testing.assert_close(second(x, mode="fast", level=2), expected)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unreadable" in warnings[0].getMessage()
    assert list(second.cache_events.values()) == ["rebuilt"]
    third = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)
    third(x, mode="fast", level=2)
    assert list(third.cache_events.values()) == ["cached"]


@pytest.mark.slow
def test_a_truncated_weights_file_is_rebuilt(tmp_path, caplog):
    model, x = _tiny("unet")
    engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)(x)
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    weights = entry / "model.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="segdemo.engine"):
        again = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)
        again(x)
    assert list(again.cache_events.values()) == ["rebuilt"]
    assert "model.bin" in caplog.text


def test_another_runtime_version_or_other_weights_miss_the_cache(tmp_path):
    model, x = _tiny("unet")
    engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)(x)
    # an injected "openvino" that reports another version: the real one otherwise
    newer = types.SimpleNamespace(
        **{k: getattr(openvino, k) for k in ("Core", "save_model")},
        get_version=lambda: "2099.1.0-0-test",
    )
    other = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path, importer=lambda _: newer)
    other(x)
    assert list(other.cache_events.values()) == ["converted"]
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    changed = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path)
    changed(x)
    assert list(changed.cache_events.values()) == ["converted"]
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3


def test_eviction_keeps_the_cache_under_its_limit_oldest_first(tmp_path):
    for age, name in enumerate(["newest", "middle", "oldest"]):
        entry = tmp_path / name
        entry.mkdir()
        (entry / "model.bin").write_bytes(b"x" * 1000)
        os.utime(entry, (1_000_000 - age * 100, 1_000_000 - age * 100))
    deleted = engine.evict(tmp_path, limit_bytes=2000, keep=tmp_path / "oldest")
    assert deleted == [tmp_path / "middle"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newest", "oldest"]


@pytest.mark.slow
def test_the_cache_limit_applies_after_each_conversion(tmp_path):
    model, x = _tiny("unetpp")
    compiled = engine.OpenVINOModel(model, "fp32", cache_dir=tmp_path, cache_limit_bytes=1)
    compiled(x, mode="fast", level=1)
    compiled(x, mode="fast", level=2)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1  # only the newest stays


# ------------------------------------------------------------------------ choice, fallback


def _missing(name: str):
    raise ImportError(f"No module named {name!r}")


def test_a_missing_runtime_falls_back_to_torch_with_one_sentence():
    chosen, note = engine.resolve_engine("openvino", "cpu", importer=_missing)
    assert chosen == "torch"
    assert note.startswith("OpenVINO unavailable: OpenVINO is not installed")
    assert "\n" not in note and note.endswith("running on torch")
    assert engine.resolve_engine("auto", "cpu", importer=_missing)[0] == "torch"
    with pytest.raises(engine.EngineUnavailable, match="not installed"):
        engine.OpenVINOModel(torch.nn.Conv2d(3, 2, 1), importer=_missing)


def test_auto_takes_openvino_on_the_cpu_and_torch_is_left_alone():
    assert engine.resolve_engine("auto", "cpu") == ("openvino", None)
    assert engine.resolve_engine("torch", "cpu") == ("torch", None)
    with pytest.raises(ValueError, match="one of auto, torch, openvino"):
        engine.resolve_engine("tensorrt", "cpu")


def test_the_pinned_runtime_and_the_consent_file_adapter():
    import openvino_telemetry
    from openvino_telemetry.utils.opt_in_checker import OptInChecker

    assert openvino.get_version().startswith(engine.CHECKED_OPENVINO_VERSION)
    assert openvino_telemetry.__version__ == engine.CHECKED_TELEMETRY_VERSION
    assert Path(OptInChecker().consent_file()) == engine.telemetry_consent_file()


@pytest.mark.slow
def test_nothing_is_reported_and_the_users_choice_is_kept(tmp_path):
    """A fresh home: segdemo writes the opt-out before importing OpenVINO, and converting
    and running a model leaves no client id (what a consenting import writes first)."""
    script = (
        "import torch\n"
        "from segdemo.inference import prepare_model\n"
        "from segdemo.models import create_model\n"
        "m = create_model('unet', 3, base_width=4)\n"
        "ov, _, _ = prepare_model(m, 'cpu', 'fp32', engine='openvino')\n"
        "ov(torch.zeros(1, 3, 32, 32))\n"
        "import openvino_telemetry\n"
        "print('consent', openvino_telemetry.Telemetry().consent)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(tmp_path), SEGDEMO_CACHE=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).parent.parent)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "consent False" in run.stdout
    assert (tmp_path / "intel" / "openvino_telemetry").read_text() == "0"
    assert sorted(p.name for p in (tmp_path / "intel").iterdir()) == ["openvino_telemetry"]


def test_an_unwritable_opt_out_means_openvino_is_not_imported(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("a file where the home folder should be")
    monkeypatch.setenv("HOME", str(home))
    imported = []
    chosen, note = engine.resolve_engine("openvino", "cpu", importer=imported.append)
    assert chosen == "torch" and "telemetry opt-out" in note and imported == []


# ---------------------------------------------------------------------------------- export


@pytest.mark.slow
def test_export_openvino_writes_ir_that_openvino_runs_alone(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from checkpoint_cases import tiny_parts, write

    from segdemo.checkpoints import load_checkpoint
    from segdemo.cli import main

    tensors, meta = tiny_parts()
    ckpt_path = write(tmp_path / "tiny.safetensors", meta, tensors)
    assert main(["export", "--ckpt", str(ckpt_path), "--openvino", str(tmp_path / "ir")]) == 0
    xml = tmp_path / "ir" / "tiny.xml"
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    x = torch.randn(2, 3, 32, 32)
    compiled = openvino.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = torch.from_numpy(compiled(x.numpy())[0])
    expected = load_checkpoint(ckpt_path).model.eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_bench_times_openvino_beside_torch(tmp_path, monkeypatch):
    from segdemo.bench import format_bench_table, run_bench

    monkeypatch.setenv("SEGDEMO_CACHE", str(tmp_path))
    tiny = dict(get_model_config("unet").tiny_kwargs)
    rows = run_bench(["unet"], size=(32, 32), batch=1, repeats=1, warmup=1,
                     engines=("torch", "openvino"), model_kwargs={"unet": tiny})  # fmt: skip
    (row,) = rows
    assert row["ms_openvino"] > 0 and row["fast_over_openvino"] > 0
    assert row["openvino"].startswith("OpenVINO 2026.4")
    table = format_bench_table(rows)
    assert "fast/openvino (paired)" in table and f"{row['fast_over_openvino']:.2f} |" in table


@pytest.mark.slow
def test_predict_with_openvino_writes_the_same_masks_as_torch(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).parent))
    from checkpoint_cases import tiny_parts, write

    from segdemo.cli import main

    monkeypatch.setenv("SEGDEMO_CACHE", str(tmp_path / "cache"))
    tensors, meta = tiny_parts()
    ckpt = write(tmp_path / "tiny.safetensors", meta, tensors)
    photo = tmp_path / "street.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(photo)
    masks = {}
    for name in ("torch", "openvino"):
        out = tmp_path / name
        assert main(["predict", "--ckpt", str(ckpt), str(photo), "--out", str(out),
                     "--engine", name, "--precision", "fp32"]) == 0  # fmt: skip
        (train_ids,) = out.glob("*_trainids.png")
        masks[name] = np.asarray(Image.open(train_ids))
    assert (masks["torch"] == masks["openvino"]).mean() >= 0.999
