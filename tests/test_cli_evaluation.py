"""``eval`` and ``compare`` on the command line: intervals, per-image rows, the JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segdemo import checkpoints
from segdemo.cli import main
from segdemo.cli.evaluation import checkpoint_spec
from segdemo.labels import get_label_set
from segdemo.models import create_model, pruning_levels

ARGS = ["--data", "synthetic", "--max-items", "6", "--precision", "fp32", "--resamples", "200"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained U-Net and U-Net++ (base width 4, 32x64): numbers, not good ones."""
    folder = tmp_path_factory.mktemp("tiny")
    labels = get_label_set("cityscapes19")
    paths = {}
    for seed, name in enumerate(("unet", "unetpp")):
        torch.manual_seed(seed)
        model = create_model(name, labels.num_classes, base_width=4).eval()
        meta = checkpoints.build_metadata(model, labels, (32, 64), model.normalization)
        paths[name] = str(checkpoints.save_checkpoint(folder / f"{name}.safetensors", model, meta))
    paths["levels"] = pruning_levels(create_model("unetpp", labels.num_classes, base_width=4))
    return paths


def _intervals_and_diffs(value, key: str = "") -> tuple[int, int]:
    """Checks every interval (a two-number list, low <= high) under a key ending in ci95;
    returns how many intervals and differences were found."""
    intervals = diffs = 0
    if key.endswith("ci95"):
        found = value.values() if isinstance(value, dict) else [value]
        for interval in found:
            if interval is not None:
                low, high = interval
                assert isinstance(low, float) and low <= high, (key, interval)
                intervals += 1
        return intervals, int("diff" in key)
    if "diff" in key:
        diffs += 1
    children = value.items() if isinstance(value, dict) else []
    if isinstance(value, list):
        children = [(key, v) for v in value]
    for k, v in children:
        i, d = _intervals_and_diffs(v, k)
        intervals, diffs = intervals + i, diffs + d
    return intervals, diffs


def test_checkpoint_spec_takes_a_unetpp_setting():
    assert checkpoint_spec("a/b.safetensors") == ("a/b.safetensors", None, None)
    assert checkpoint_spec("a@b.safetensors@fast:3") == ("a@b.safetensors", "fast", 3)
    assert checkpoint_spec("b.safetensors@accurate") == ("b.safetensors", "accurate", None)
    with pytest.raises(Exception, match="FILE@fast:3"):
        checkpoint_spec("b.safetensors@quick")


def test_eval_json_has_intervals_counted_classes_and_per_image_rows(tiny, capsys):
    assert main(["eval", "--ckpt", tiny["unet"], *ARGS, "--json", "--per-image"]) == 0
    result = json.loads(capsys.readouterr().out)
    low, high = result["miou_ci95"]
    assert low <= result["miou"] <= high
    assert set(result["counted_classes"]) <= set(result["per_class_iou"])
    assert [n for n, v in result["per_class_iou"].items() if v is not None] == result[
        "counted_classes"
    ]
    assert len(result["per_image"]) == result["images"] == 6
    assert {"path", "miou", "pixel_accuracy", "index"} == set(result["per_image"][0])
    assert "confusion_matrix" not in result
    assert main(["eval", "--ckpt", tiny["unet"], *ARGS, "--json", "--confusion"]) == 0
    assert len(json.loads(capsys.readouterr().out)["confusion_matrix"]) == 19


def test_compare_json_schema(tiny, capsys):
    code = main(
        ["compare", "--ckpt", tiny["unet"], "--ckpt", tiny["unetpp"],
         "--ckpt", f"{tiny['unetpp']}@fast:2", *ARGS, "--json"]
    )  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 6 and result["dataset"]["split"] == "val"
    assert result["bootstrap"] == {"resamples": 200, "seed": 0}
    names = [m["name"] for m in result["models"]]
    deepest = tiny["levels"]
    assert names == ["unet", f"unetpp accurate L{deepest}", "unetpp fast L2"]
    assert result["reference"] == "unet"
    assert [(m["mode"], m["level"]) for m in result["models"]] == [
        (None, None), ("accurate", deepest), ("fast", 2)]  # fmt: skip
    for m in result["models"]:
        assert m["miou_ci95"][0] <= m["miou"] <= m["miou_ci95"][1]
        assert set(m["per_class_iou_ci95"]) == set(result["class_names"])
    assert [c["name"] for c in result["comparisons"]] == names[1:]
    for c in result["comparisons"]:
        assert c["reference"] == "unet"
        assert {"miou_diff", "miou_diff_ci95", "miou_diff_sign_flip", "per_class_iou_diff",
                "per_class_iou_diff_ci95", "sentence"} <= set(c)  # fmt: skip
        assert 0.0 <= c["miou_diff_sign_flip"] <= 1.0
        unet, other = result["models"][0], result["models"][names.index(c["name"])]
        assert c["miou_diff"] == pytest.approx(other["miou"] - unet["miou"])
        assert c["sentence"].startswith(("no clear difference", c["name"], "unet is better"))
    intervals, diffs = _intervals_and_diffs(result)
    assert intervals > 2 * 19 and diffs >= 4


def test_compare_text_names_every_model_and_the_sentence(tiny, capsys):
    code = main(["compare", "--ckpt", tiny["unetpp"], "--ckpt", f"{tiny['unetpp']}@fast", *ARGS])
    assert code == 0
    out = capsys.readouterr().out
    accurate, fast = (f"unetpp {mode} L{tiny['levels']}" for mode in ("accurate", "fast"))
    assert accurate in out and fast in out
    assert "95% CI" in out and "sign flips" in out
    assert f"{fast} against {accurate}" in out


def test_compare_refuses_a_level_the_model_does_not_have_before_scoring(tiny, tmp_path, capsys):
    # the data folder does not exist: the setting is refused before any data is read
    args = [*ARGS[2:], "--data", str(tmp_path / "no_data")]
    code = main(["compare", "--ckpt", tiny["unet"], "--ckpt", f"{tiny['unetpp']}@fast:9", *args])
    err = capsys.readouterr().err
    assert code == 2 and f"{Path(tiny['unetpp']).name} has no fast L9 (available: fast L1" in err
    code = main(["compare", "--ckpt", tiny["unetpp"], "--ckpt", f"{tiny['unet']}@fast:1", *args])
    err = capsys.readouterr().err
    assert code == 2 and f"{Path(tiny['unet']).name} has no pruning levels" in err
    code = main(["compare", "--ckpt", tiny["unet"], "--ckpt", f"{tiny['unetpp']}@fast:2", *args])
    assert code == 2 and "no_data" in capsys.readouterr().err  # a real setting gets to the data


def test_compare_checks_every_file_before_scoring_any(tiny, tmp_path, capsys):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(Path(tiny["unet"]).read_bytes()[:200])
    code = main(["compare", "--ckpt", tiny["unet"], "--ckpt", str(broken), *ARGS])
    err = capsys.readouterr().err
    assert code == 2 and "broken.safetensors" in err
    assert "eval:" not in err  # refused before the first model was scored


def test_report_carries_intervals_and_the_paired_comparison(tiny, tmp_path):
    out = tmp_path / "results"
    code = main(["report", "--ckpt", tiny["unet"], "--ckpt", tiny["unetpp"], "--data", "synthetic",
                 "--max-items", "4", "--repeats", "1", "--qualitative", "0", "--resamples", "100",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    unet, unetpp = report["results"]
    assert (
        unet["metrics"]["miou_ci95"][0]
        <= unet["metrics"]["miou"]
        <= unet["metrics"]["miou_ci95"][1]
    )
    deepest = tiny["levels"]
    top = next(s for s in unetpp["settings"] if s == {**s, "mode": "fast", "level": deepest})
    assert "miou_diff_vs_fast_deepest" not in top  # the reference of the level table
    assert all("miou_diff_vs_fast_deepest_ci95" in s for s in unetpp["settings"] if s is not top)
    comparison = report["comparison"]
    assert comparison["reference"] == "unet"
    assert [c["name"] for c in comparison["comparisons"]] == [
        f"unetpp accurate L{deepest}", f"unetpp fast L{deepest}"]  # fmt: skip
    tables = (out / "tables.md").read_text()
    assert "Against unet, on the same images" in tables
    assert comparison["comparisons"][0]["sentence"] in tables


def _data_section(path: Path) -> bytes:
    """A .safetensors file's bytes after its header: every weight."""
    import struct

    data = Path(path).read_bytes()
    return data[8 + struct.unpack("<Q", data[:8])[0] :]


def test_eval_store_writes_the_figure_into_the_metadata_and_keeps_every_weight_byte(
    tiny, tmp_path, capsys
):
    from segdemo_app.common import measured_on, stored_metrics

    original = Path(tiny["unetpp"])
    copy = tmp_path / "copy.safetensors"
    before = original.read_bytes()
    assert main(["eval", "--ckpt", str(original), *ARGS, "--store-into", str(copy)]) == 0
    assert original.read_bytes() == before  # a copy: the original is untouched
    assert _data_section(copy) == _data_section(original)
    meta = checkpoints.read_metadata(copy)
    evaluated = meta["metrics"]["evaluated"]
    assert evaluated["split"] == "val" and evaluated["images"] == 6 and evaluated["max_items"] == 6
    assert set(evaluated["per_level"]) == {"fast", "accurate"}
    checkpoints.load_checkpoint(copy)  # still a complete checkpoint
    # The app shows this figure, with what it was measured on.
    listed, mode = stored_metrics(meta)
    assert listed["miou"] == evaluated["per_level"][mode][str(tiny["levels"])]["miou"]
    assert measured_on(meta) == "the first 6 val images"
    # In place (a bundled checkpoint): the header changes, not one weight byte.
    in_place = tmp_path / "in_place.safetensors"
    in_place.write_bytes(before)
    assert main(["eval", "--ckpt", str(in_place), *ARGS, "--store"]) == 0
    assert _data_section(in_place) == _data_section(original)
    assert checkpoints.read_metadata(in_place)["metrics"]["evaluated"]["images"] == 6


def test_eval_store_refuses_a_setting_before_scoring(tiny, tmp_path, capsys):
    copy = tmp_path / "copy.safetensors"
    code = main(
        ["eval", "--ckpt", tiny["unetpp"], *ARGS, "--mode", "fast", "--store-into", str(copy)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --store keeps the checkpoint's plain figure")
    assert not copy.exists()
