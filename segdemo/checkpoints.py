"""Checkpoints: ``.safetensors`` weights with the metadata that rebuilds the model.

One file is one unit: the tensors, and in the safetensors header under the key
``"segdemo"`` a JSON document with the model name and kwargs, the label set, input size
and normalisation, the full TrainConfig, epoch/step, metrics, dataset fingerprint,
library versions and creation time. A training checkpoint (``last.safetensors``) also
carries the optimizer and random-generator state under ``train/`` so ``--resume`` needs
nothing else.

Writes are atomic (temporary file, fsync, ``os.replace``). Loading never unpickles a file
that could run code: ``.pt``/``.pth`` files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _safetensors_bytes
from torch import nn

FORMAT_VERSION = 1
METADATA_KEY = "segdemo"
TRAIN_PREFIX = "train/"
MODEL_PREFIX = "model/"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one sentence for the user."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode, fp32) and its metadata."""

    model: nn.Module
    metadata: dict[str, Any]
    path: Path
    train_tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def label_set(self):
        from segdemo.labels import LabelSet

        return LabelSet.from_dict(self.metadata["label_set"])

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.metadata["input_size"])

    @property
    def normalization(self) -> dict:
        return self.metadata["normalization"]


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("segdemo", "torch", "segmentation-models-pytorch", "timm", "albumentations"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    import segdemo

    versions["segdemo"] = segdemo.__version__
    return versions


def build_metadata(model: nn.Module, label_set, input_size, normalization, **extra) -> dict:
    """The metadata every checkpoint carries; ``extra`` adds train_config, metrics, ..."""
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model.model_name,
        "model_kwargs": dict(model.model_kwargs),
        "num_classes": label_set.num_classes,
        "label_set": label_set.to_dict(),
        "input_size": list(input_size),
        "normalization": {k: list(v) for k, v in normalization.items()},
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    meta.update(extra)
    return meta


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp creates 0600; a checkpoint is shareable
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    metadata: dict[str, Any],
    train_tensors: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model``'s weights and ``metadata`` atomically to ``path``.

    Args:
        dtype: store floating-point weights in this dtype (e.g. ``torch.float16`` for
            bundled checkpoints); loading casts them back to fp32.
        train_tensors: resume state of a training checkpoint (optimizer, RNG), stored
            under ``train/`` and returned by ``load_checkpoint(..., with_optimizer=True)``.
    """
    path = Path(path)
    model = getattr(model, "module", model)  # DistributedDataParallel
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[MODEL_PREFIX + name] = t.contiguous()
    for name, t in (train_tensors or {}).items():
        tensors[TRAIN_PREFIX + name] = t.detach().to("cpu").contiguous()
    meta = dict(metadata)
    meta["storage_dtype"] = str(dtype or torch.float32).removeprefix("torch.")
    header = {METADATA_KEY: json.dumps(meta)}
    _atomic_write_bytes(path, _safetensors_bytes(tensors, metadata=header))
    return path


def flatten_optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state dict into flat tensors and a JSON-able rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}/{key}"] = value
            else:
                plain.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        param_id, key = name.split("/", 1)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, values in rest.get("plain", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read only the metadata of a ``.safetensors`` checkpoint (fast: no tensors)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{path.name} is not a readable .safetensors checkpoint (truncated or corrupt: {e})"
        ) from e
    if METADATA_KEY not in header:
        raise CheckpointError(
            f"{path.name} has no segdemo metadata, so segdemo cannot tell which model it holds"
        )
    try:
        return json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path.name} has corrupt segdemo metadata ({e})") from e


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    metadata = read_metadata(path)
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path.name} is truncated or corrupt ({e})") from e
    return tensors, metadata


def _read_torch_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a ``.pt``/``.pth`` file without running any code it may contain."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path.name} was refused: it contains Python objects that would run code when "
            "loaded, and segdemo only loads plain tensors"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable PyTorch file ({e})") from e
    if not isinstance(obj, dict) or not isinstance(obj.get(METADATA_KEY), (str, dict)):
        raise CheckpointError(
            f"{path.name} is a plain PyTorch file without segdemo metadata; save it with "
            "segdemo (a dict with 'segdemo' metadata and 'state_dict') or as .safetensors"
        )
    metadata = obj[METADATA_KEY]
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    state = obj.get("state_dict", {})
    tensors = {MODEL_PREFIX + k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return tensors, metadata


def _describe(meta: dict) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(meta.get("model_kwargs", {}).items()))
    return f"{meta.get('model')}({kwargs})"


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    expected_model: str | None = None,
    expected_num_classes: int | None = None,
    with_optimizer: bool = False,
) -> Checkpoint:
    """Rebuild the model of a checkpoint from the file alone.

    Raises:
        CheckpointError: one sentence naming what is wrong: unreadable/truncated file, a
            pickle that would run code, missing metadata, another architecture or class
            count than expected, or weights that do not fit the architecture.
    """
    from segdemo.models import create_model

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        tensors, meta = _read_torch_file(path)
    else:
        tensors, meta = _read_safetensors(path)
    name = path.name
    for key in ("model", "num_classes", "label_set", "input_size", "normalization"):
        if key not in meta:
            raise CheckpointError(f"{name} metadata lacks {key!r}")
    if expected_model is not None and meta["model"] != expected_model:
        raise CheckpointError(f"{name} holds a {meta['model']} model, not {expected_model}")
    if expected_num_classes is not None and meta["num_classes"] != expected_num_classes:
        raise CheckpointError(
            f"{name} predicts {meta['num_classes']} classes but {expected_num_classes} are expected"
        )
    model_kwargs = dict(meta.get("model_kwargs", {}))
    # The file holds every weight, the fine-tuned encoder included: build the encoder without
    # its ImageNet weights (no package, cache or network needed), then restore what the
    # metadata says about them, and the input normalisation they were trained with.
    build_kwargs = dict(model_kwargs)
    if build_kwargs.get("encoder_weights") is not None:
        build_kwargs["encoder_weights"] = None
    try:
        model = create_model(meta["model"], meta["num_classes"], **build_kwargs)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{name} describes a model segdemo cannot build: {e}") from e
    model.model_kwargs = model_kwargs
    model.normalization = {k: tuple(v) for k, v in meta["normalization"].items()}

    weights = {
        k.removeprefix(MODEL_PREFIX): v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)
    }
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"{name}'s weights do not fit {_describe(meta)}: {' and '.join(detail)} tensors"
        )
    for key, tensor in expected.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{name}'s tensor {key} has shape {tuple(weights[key].shape)} but "
                f"{_describe(meta)} with {meta['num_classes']} classes needs {tuple(tensor.shape)}"
            )
        if weights[key].is_floating_point():
            weights[key] = weights[key].to(tensor.dtype)
    model.load_state_dict(weights)
    model.to(device).eval()
    train_tensors = {}
    if with_optimizer:
        train_tensors = {
            k.removeprefix(TRAIN_PREFIX): v
            for k, v in tensors.items()
            if k.startswith(TRAIN_PREFIX)
        }
    return Checkpoint(model=model, metadata=meta, path=path, train_tensors=train_tensors)


def list_checkpoints(folder: str | Path) -> list[tuple[Path, dict]]:
    """``(path, metadata)`` for every readable checkpoint in ``folder`` (not recursive)."""
    folder = Path(folder)
    found = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            try:
                found.append((path, read_metadata(path)))
            except CheckpointError:
                continue
    return found
