"""Checkpoint metadata is untrusted input: every crafted file is refused with one sentence
naming the file and the field, by the library and by the command line, before anything
large is built."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_cases import CASE_IDS, CASES, tiny_parts, valid_checkpoint, write
from PIL import Image

from segdemo import checkpoint_schema, checkpoints
from segdemo.checkpoints import (
    CheckpointError,
    check_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metadata,
    scan_checkpoints,
)
from segdemo.cli import main
from segdemo.models import get_model_config, list_models, model_arguments

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- library


@pytest.mark.parametrize(("name", "make", "expected"), CASES, ids=CASE_IDS)
def test_crafted_checkpoint_is_refused_in_one_sentence(name, make, expected, tmp_path):
    path = make(tmp_path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert re.search(expected, message), message
    assert message.startswith(path.name) and "\n" not in message and len(message) < 400
    # The listing never raises: the file is broken, with the same reason.
    (listed,) = scan_checkpoints(tmp_path) if path.suffix == ".safetensors" else [None]
    if listed is not None:
        assert listed.broken and listed.error == message and listed.metadata is None
        assert list_checkpoints(tmp_path) == []


def test_the_valid_twin_of_the_crafted_files_loads(tmp_path):
    """The cases change one thing of this file: it must load, or they prove nothing."""
    path = valid_checkpoint(tmp_path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.metadata["model"] == "unet" and checkpoint.input_size == (32, 32)
    assert check_checkpoint(path) == read_metadata(path) == checkpoint.metadata
    (listed,) = scan_checkpoints(tmp_path)
    assert not listed.broken and listed.metadata == checkpoint.metadata


def test_read_metadata_applies_the_schema_without_building_the_model(tmp_path):
    tensors, meta = tiny_parts()
    meta["label_set"] = "cityscapes19"
    path = write(tmp_path / "a.safetensors", meta, tensors)
    with pytest.raises(CheckpointError, match="label_set should be a JSON object"):
        read_metadata(path)
    # A size bomb passes the schema (every argument in range) and is caught by the size.
    _, meta = tiny_parts()
    meta.update(model_kwargs={"base_width": 128}, input_size=[4096, 4096])
    del meta["train_config"]
    path = write(tmp_path / "b.safetensors", meta, tensors)
    assert read_metadata(path)["input_size"] == [4096, 4096]
    with pytest.raises(CheckpointError, match="TFLOPs"):
        check_checkpoint(path)


def test_the_issues_bomb_is_refused_before_anything_is_built(tmp_path):
    """base_width 1024 describes a 7.9 G-parameter U-Net (32 GB in fp32)."""
    from segdemo.models import create_model

    with torch.device("meta"):  # what the refusal spares the loader from building
        model = create_model("unet", 19, base_width=1024)
    assert sum(p.numel() for p in model.parameters()) > 7.9e9
    tensors, meta = tiny_parts()
    meta["model_kwargs"] = {"base_width": 1024}
    del meta["train_config"]
    with pytest.raises(CheckpointError, match="at most 128"):
        load_checkpoint(write(tmp_path / "a.safetensors", meta, tensors))


def test_metadata_over_the_size_limit_is_refused(tmp_path):
    tensors, meta = tiny_parts()
    meta["notes"] = "x" * checkpoint_schema.MAX_METADATA_BYTES
    with pytest.raises(CheckpointError, match=r"metadata is 16 MB, more than the 16 MB"):
        load_checkpoint(write(tmp_path / "a.safetensors", meta, tensors))


@pytest.mark.parametrize("model", list_models())
def test_every_model_argument_has_a_rule_and_the_defaults_pass(model):
    """A new model, or a new argument, is checked by being registered: its arguments need a
    rule, and its default and tiny builds must pass them and the size limits."""
    assert set(model_arguments(model)) <= set(checkpoint_schema.argument_rules())
    schema = checkpoint_schema.model_arguments_schema(model)
    config = get_model_config(model)
    for kwargs in (config.default_kwargs, config.tiny_kwargs):
        schema.model_validate_json(json.dumps(kwargs), strict=True)


@pytest.mark.parametrize("model", list_models())
def test_every_model_is_sized_on_the_meta_device(model, tmp_path):
    """The registered builders work on the meta device, and their tiny builds pass."""
    from segdemo.labels import get_label_set
    from segdemo.models import create_model

    config = get_model_config(model)
    built = create_model(model, 19, **config.tiny_kwargs)
    meta = checkpoints.build_metadata(
        built, get_label_set("cityscapes19"), config.tiny_input_size, built.normalization
    )
    path = checkpoints.save_checkpoint(tmp_path / f"{model}.safetensors", built, meta)
    assert check_checkpoint(path)["model"] == model
    with torch.device("meta"):
        sized = create_model(model, 19, **config.tiny_kwargs)
    assert {p.device.type for p in sized.parameters()} == {"meta"}


def test_training_state_of_a_real_run_passes(tmp_path):
    """A training checkpoint (optimizer and RNG state under train/) passes the tensor checks."""
    from segdemo.labels import get_label_set
    from segdemo.models import create_model

    model = create_model("unet", 19, base_width=4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    optimizer.step()
    opt_tensors, rest = checkpoints.flatten_optimizer_state(optimizer)
    train = {f"optimizer/{k}": v for k, v in opt_tensors.items()}
    train["rng/torch"] = torch.get_rng_state()
    meta = checkpoints.build_metadata(
        model, get_label_set("cityscapes19"), (32, 32), model.normalization, optimizer=rest
    )
    path = checkpoints.save_checkpoint(tmp_path / "last.safetensors", model, meta, train)
    loaded = load_checkpoint(path, with_optimizer=True)
    assert set(loaded.train_tensors) == set(train)
    # ... and an optimizer whose groups name parameters the model lacks does not.
    meta["optimizer"]["param_groups"][0]["params"][-1] = 10_000
    checkpoints.save_checkpoint(tmp_path / "bad.safetensors", model, meta, train)
    with pytest.raises(CheckpointError, match="optimizer.param_groups names a parameter"):
        load_checkpoint(tmp_path / "bad.safetensors")
    # Groups that do not split the model the way training does are refused, too.
    group = meta["optimizer"]["param_groups"][0]
    group["params"] = group["params"][:3]
    checkpoints.save_checkpoint(tmp_path / "short.safetensors", model, meta, train)
    with pytest.raises(CheckpointError, match="group 0 has 3 parameters"):
        load_checkpoint(tmp_path / "short.safetensors")
    meta["optimizer"]["param_groups"] *= 3
    checkpoints.save_checkpoint(tmp_path / "three.safetensors", model, meta, train)
    with pytest.raises(CheckpointError, match="3 optimizer parameter groups"):
        load_checkpoint(tmp_path / "three.safetensors")


def test_paths_that_are_not_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.safetensors does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_checkpoint(tmp_path)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty or cut short"):
        read_metadata(tmp_path / "empty.safetensors")


def test_checkpoint_error_is_importable_from_both_modules():
    assert checkpoints.CheckpointError is checkpoint_schema.CheckpointError


# ------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    photos = folder / "photos"
    photos.mkdir()
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(photos / "street.png")
    (folder / "no_photos").mkdir()
    files = {"folder": folder, "photo": photos / "street.png", "good": valid_checkpoint(folder)}
    for name, make, _ in CASES:
        files[name] = make(folder)
    return files


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.err.splitlines()


# (id, argv with {placeholders} from cli_files, expected error)
BAD_INVOCATIONS = [
    ("eval_missing_checkpoint", "eval --ckpt {folder}/missing.safetensors", "does not exist"),
    ("predict_missing_checkpoint", "predict --ckpt {folder}/missing.pt {photo} --out {out}",
     "does not exist"),
    ("export_missing_checkpoint", "export --ckpt {folder}/missing.safetensors --safetensors {out}/x",
     "does not exist"),
    ("report_missing_checkpoint", "report --ckpt {folder}/missing.safetensors --out {out}",
     "missing.safetensors does not exist"),
    ("eval_directory_as_checkpoint", "eval --ckpt {folder}", "is a directory, not a checkpoint file"),
    ("predict_directory_as_checkpoint", "predict --ckpt {folder} {photo} --out {out}",
     "is a directory, not a checkpoint file"),
    ("export_directory_as_checkpoint", "export --ckpt {folder} --safetensors {out}/x",
     "is a directory, not a checkpoint file"),
    ("report_directory_as_checkpoint", "report --ckpt {folder} --out {out}",
     "is a directory, not a checkpoint file"),
    ("predict_random_bytes_pt", "predict --ckpt {random_bytes_pt} {photo} --out {out}",
     r"random\.pt is not a PyTorch file"),
    ("eval_random_bytes_pt", "eval --ckpt {random_bytes_pt}", r"random\.pt is not a PyTorch file"),
    ("predict_missing_photo", "predict --ckpt {good} {folder}/nowhere.jpg --out {out}",
     "nowhere.jpg does not exist"),
    ("predict_folder_without_photos", "predict --ckpt {good} {folder}/no_photos --out {out}",
     "no_photos holds no photos"),
    ("predict_label_set_as_text", "predict --ckpt {label_set_is_a_string} {photo} --out {out}",
     "label_set should be a JSON object"),
    ("export_base_width_bomb", "export --ckpt {base_width_bomb} --safetensors {out}/x",
     "base_width should be at most 128"),
    ("report_input_size_bomb", "report --ckpt {input_size_bomb} --out {out}",
     "input_size.0. should be at most 4096"),
    ("predict_parameter_bomb", "predict --ckpt {parameter_bomb} {photo} --out {out}",
     "836 M parameters"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "expected"),
    [case[1:] for case in BAD_INVOCATIONS],
    ids=[case[0] for case in BAD_INVOCATIONS],
)
def test_bad_invocation_is_one_error_line(argv, expected, cli_files, tmp_path, capsys):
    values = {k: str(v) for k, v in cli_files.items()} | {"out": str(tmp_path / "out")}
    code, lines = run_cli(argv.format(**values).split(), capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


@pytest.mark.parametrize(("name", "expected"), [(n, e) for n, _, e in CASES], ids=CASE_IDS)
def test_eval_refuses_every_crafted_checkpoint_in_one_line(name, expected, cli_files, capsys):
    code, lines = run_cli(["eval", "--ckpt", str(cli_files[name])], capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(expected, lines[0]), lines[0]


class _PrintsWhenLoaded:
    def __reduce__(self):
        return (print, ("segdemo-test: this pickle ran",))


@pytest.mark.slow
def test_the_real_command_prints_one_line_and_no_warning(cli_files, tmp_path):
    """In a real process (warnings reach stderr there): a plain pickle that would run code
    (torch warns about its protocol) and a crafted checkpoint."""
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"segdemo": "{}", "state_dict": _PrintsWhenLoaded()}))
    for path, expected in [
        (evil, "evil.pt was refused: it contains Python objects that would run code"),
        (cli_files["label_set_is_a_string"], "label_set should be a JSON object"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "segdemo", "eval", "--ckpt", str(path)],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 2 and done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
