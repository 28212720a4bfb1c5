"""Crafted checkpoints: a real tiny U-Net whose file is broken in one way per case.

Shared by the library, command-line and app tests (``from checkpoint_cases import ...``).
Each case is ``(id, make, expected)``: ``make(folder)`` writes the file and returns its
path, ``expected`` is a regular expression the one-sentence refusal must match.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from segdemo import checkpoints
from segdemo.labels import get_label_set
from segdemo.models import create_model, get_model_config
from segdemo.train import TrainConfig

MODEL = "unet"
SIZE = (32, 32)
DELETE = object()  # with_field: remove the field


def tiny_parts() -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of a valid tiny U-Net checkpoint (as training writes it)."""
    kwargs = dict(get_model_config(MODEL).tiny_kwargs)
    torch.manual_seed(0)
    model = create_model(MODEL, 19, **kwargs)
    config = TrainConfig(model=MODEL, model_kwargs=kwargs, size=SIZE, data="synthetic")
    meta = checkpoints.build_metadata(
        model,
        get_label_set("cityscapes19"),
        SIZE,
        model.normalization,
        train_config=config.to_dict(),
        epoch=1,
        step=2,
        metrics={"best": {"miou": 0.5, "per_class_iou": {"road": 0.9, "sky": None}}},
    )
    tensors = {checkpoints.MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    return tensors, json.loads(json.dumps(meta))


def write(path: Path, meta: dict | str, tensors: dict[str, torch.Tensor]) -> Path:
    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(tensors, path, metadata={checkpoints.METADATA_KEY: text})
    return path


def with_field(meta: dict, dotted: str, value) -> dict:
    """A copy of ``meta`` with ``dotted`` (``"model_kwargs.base_width"``) set or deleted."""
    meta = copy.deepcopy(meta)
    *parents, last = dotted.split(".")
    node = meta
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return meta


def metadata_case(name: str, changes: dict) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        tensors, meta = tiny_parts()
        for dotted, value in changes.items():
            meta = with_field(meta, dotted, value)
        return write(folder / f"{name}.safetensors", meta, tensors)

    return make


def text_case(name: str, text: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        return write(folder / f"{name}.safetensors", text, tiny_parts()[0])

    return make


def tensor_case(name: str, change: Callable[[dict], None]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        tensors, meta = tiny_parts()
        change(tensors)
        return write(folder / f"{name}.safetensors", meta, tensors)

    return make


def _other_classes(tensors: dict) -> None:
    # The head of a 2-class model under metadata that says 19 classes.
    tensors["model/head.weight"] = torch.zeros(2, *tensors["model/head.weight"].shape[1:])


def _int_weights(tensors: dict) -> None:
    tensors["model/head.weight"] = tensors["model/head.weight"].to(torch.int64)


def _stray_tensor(tensors: dict) -> None:
    tensors["payload"] = torch.zeros(4)


def _missing_tensor(tensors: dict) -> None:
    del tensors["model/head.bias"]


def _optimizer_state_of_another_shape(tensors: dict) -> None:
    tensors["train/optimizer/0/exp_avg"] = torch.zeros(3, 3)


def _optimizer_state_of_no_parameter(tensors: dict) -> None:
    tensors["train/optimizer/100000/exp_avg"] = torch.zeros(1)


NO_RUN = {"train_config": DELETE}  # size cases: a model that no training config matches

# (id, make, expected refusal)
METADATA_CASES = [
    ("label_set_is_a_string", {"label_set": "cityscapes19"},
     r'label_set should be a JSON object, got "cityscapes19"'),
    ("base_width_bomb", {"model_kwargs.base_width": 1024},
     r"model_kwargs\.base_width should be at most 128, got 1024"),
    ("input_size_bomb", {"input_size": [100000, 100000]},
     r"input_size\[0\] should be at most 4096, got 100000"),
    ("input_size_zero", {"input_size": [0, 0]}, r"input_size\[0\] should be at least 16, got 0"),
    ("input_size_three_sides", {"input_size": [32, 32, 32]},
     r"input_size should have at most 2 items"),
    ("model_kwargs_is_a_list", {"model_kwargs": [4]},
     r"model_kwargs should be a JSON object, got \[4\]"),
    ("unknown_model", {"model": "resnet"}, r"model is not a segdemo model \(valid: .*unet"),
    ("unknown_model_argument", {"model_kwargs.width": 4},
     r"gives unet an argument it does not take: model_kwargs\.width \(unet takes base_width"),
    ("argument_as_text", {"model_kwargs.base_width": "4"},
     r'model_kwargs\.base_width should be a whole number, got "4"'),
    ("argument_of_another_type", {"model_kwargs.upsampling": "nearest"},
     r"model_kwargs\.upsampling should be 'transpose' or 'bilinear'"),
    ("dropout_out_of_range", {"model_kwargs.dropout": 3.0},
     r"model_kwargs\.dropout should be at most 1"),
    ("four_input_channels", {"model_kwargs.in_channels": 4},
     r"model_kwargs\.in_channels should be 3, got 4"),
    ("unknown_encoder", {"model": "unetpp_ds", "model_kwargs": {"encoder": "nope"}, **NO_RUN},
     r"model_kwargs\.encoder is not an encoder segdemo knows"),
    ("num_classes_as_bool", {"num_classes": True}, r"num_classes should be a whole number, got true"),
    ("num_classes_of_another_label_set", {"num_classes": 5},
     r"num_classes is 5 but label_set names 19 classes"),
    ("no_label_set", {"label_set": DELETE}, r"metadata lacks label_set"),
    ("fewer_colours_than_classes", {"label_set.colors": [[0, 0, 0]] * 18},
     r"label_set has 19 names but 18 colours"),
    ("colour_out_of_range", {"label_set.colors": [[0, 0, 256]] * 19},
     r"label_set\.colors\[0\]\[2\] should be at most 255"),
    ("class_name_with_markup", {"label_set.names": ["![x](http://example.com/x.png)"] * 19},
     r"label_set\.names\[0\] should be 1 to 64 letters, digits, spaces"),
    ("ignore_index_is_a_class", {"label_set.ignore_index": 3},
     r"label_set has ignore_index 3, which is one of its 19 class ids"),
    ("zero_std", {"normalization.std": [0, 0.2, 0.2]},
     r"normalization\.std\[0\] should be at least 0\.001, got 0"),
    ("mean_not_finite", {"normalization.mean": [float("nan"), 0.4, 0.4]},
     r"normalization\.mean\[0\] should be a finite number, got NaN"),
    ("no_std", {"normalization.std": DELETE}, r"metadata lacks normalization\.std"),
    ("metrics_as_text", {"metrics": "great"}, r'metrics should be a JSON object, got "great"'),
    ("level_that_is_not_a_number", {"metrics.best.per_level": {"fast": {"x": {"miou": 0.5}}}},
     r"metrics\.best\.per_level\.fast has a key that should be a pruning level"),
    ("negative_epoch", {"epoch": -1}, r"epoch should be at least 0, got -1"),
    ("null_training_state", {"train_state": None},
     r"train_state should be a JSON object, got null"),
    ("huge_creation_date", {"created": "x" * 1000}, r"created should have at most 200 characters"),
    ("newer_format", {"format_version": 2}, r"format_version is 2: .* newer segdemo"),
    ("train_config_of_another_model", {"train_config.model_kwargs": {"base_width": 64}},
     r"train_config\.model_kwargs is \{\"base_width\": 64\} but model_kwargs is"),
    ("train_config_that_cannot_train", {"train_config.batch_size": 0},
     r"train_config is not a valid training setup"),
    ("train_config_with_text_for_a_number", {"train_config.epochs": "10"},
     r'train_config\.epochs should be a whole number, got "10"'),
]  # fmt: skip
SIZE_CASES = [
    ("parameter_bomb",
     {"model": "smp_unet", "model_kwargs": {"encoder": "resnext101_32x48d"}, **NO_RUN},
     r"with 836 M parameters \(model_kwargs\), more than the 200 M segdemo loads"),
    ("compute_bomb",
     {"model_kwargs.base_width": 128, "input_size": [4096, 4096], **NO_RUN},
     r"needs 98\.6 TFLOPs per image at input_size 4096x4096, more than the 4 TFLOPs"),
]  # fmt: skip
TEXT_CASES = [
    ("metadata_not_json", "{not json", r"has corrupt segdemo metadata \(not JSON"),
    ("metadata_nested_too_deep", "[" * 100_000 + "]" * 100_000,
     r"has corrupt segdemo metadata \(not JSON"),
    ("metadata_a_list", "[1, 2]", r"segdemo metadata should be a JSON object, got \[1, 2\]"),
]  # fmt: skip
TENSOR_CASES = [
    ("weights_of_another_class_count", _other_classes,
     r"tensor head\.weight has shape \(2, 4, 1, 1\) but unet\(base_width=4\) with 19 classes "
     r"needs \(19, 4, 1, 1\)"),
    ("integer_weights", _int_weights,
     r"tensor head\.weight is stored as torch\.int64 but .* needs a floating-point type"),
    ("stray_tensor", _stray_tensor, r"tensor 'payload' that is neither a model weight"),
    ("missing_tensor", _missing_tensor, r"weights do not fit unet\(base_width=4\): 1 missing"),
    ("optimizer_state_of_another_shape", _optimizer_state_of_another_shape,
     r"optimizer state train/optimizer/0/exp_avg has shape \(3, 3\) but its parameter has"),
    ("optimizer_state_of_no_parameter", _optimizer_state_of_no_parameter,
     r"optimizer state train/optimizer/100000/exp_avg is for parameter 100000"),
]  # fmt: skip


def _random_pt(folder: Path) -> Path:
    path = folder / "random.pt"
    # Neither a zip archive nor a pickle (which would start with 0x80).
    path.write_bytes(b"\x00" + random.Random(0).randbytes(11_000))
    return path


def _huge_header(folder: Path) -> Path:
    path = folder / "huge_header.safetensors"
    size = checkpoints.MAX_HEADER_BYTES + 2**20
    path.write_bytes(size.to_bytes(8, "little") + b" " * size)
    return path


def _header_beyond_the_file(folder: Path) -> Path:
    path = folder / "cut.safetensors"
    path.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    return path


def _not_a_checkpoint(folder: Path) -> Path:
    path = folder / "notes.safetensors"
    path.write_text("these are my notes")
    return path


FILE_CASES = [
    ("random_bytes_pt", _random_pt, r"random\.pt is not a PyTorch file"),
    ("huge_header", _huge_header, r"header is 33 MB, more than the 32 MB segdemo reads"),
    (
        "header_beyond_the_file",
        _header_beyond_the_file,
        r"cut\.safetensors is not a \.safetensors checkpoint \(cut short, or another kind",
    ),
    (
        "text_as_safetensors",
        _not_a_checkpoint,
        r"notes\.safetensors is not a \.safetensors checkpoint \(cut short, or another kind",
    ),
]

CASES: list[tuple[str, Callable[[Path], Path], str]] = (
    [(name, metadata_case(name, changes), expected) for name, changes, expected in METADATA_CASES]
    + [(name, metadata_case(name, changes), expected) for name, changes, expected in SIZE_CASES]
    + [(name, text_case(name, text), expected) for name, text, expected in TEXT_CASES]
    + [(name, tensor_case(name, change), expected) for name, change, expected in TENSOR_CASES]
    + FILE_CASES
)
CASE_IDS = [name for name, _, _ in CASES]


def valid_checkpoint(folder: Path, name: str = "good") -> Path:
    tensors, meta = tiny_parts()
    return write(folder / f"{name}.safetensors", meta, tensors)
