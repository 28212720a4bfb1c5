"""Checkpoints: ``.safetensors`` weights with the metadata that rebuilds the model.

One file is one unit: the tensors, and in the safetensors header under the key
``"segdemo"`` a JSON document with the model name and kwargs, the label set, input size
and normalisation, the full TrainConfig, epoch/step, metrics, dataset fingerprint,
library versions and creation time. A training checkpoint (``last.safetensors``) also
carries the optimizer and random-generator state under ``train/`` so ``--resume`` needs
nothing else.

Writes are atomic (temporary file, fsync, ``os.replace``) and give the file mode
:data:`CHECKPOINT_FILE_MODE`.

Reading treats the file as untrusted, in this order, and stops at the first problem with
one sentence naming the file and the field (:class:`CheckpointError`):

1. the path is a file, a ``.safetensors`` header is of sane size, a ``.pt``/``.pth`` is a
   PyTorch file read with ``torch.load(weights_only=True)`` (never unpickled otherwise);
2. the metadata passes the schema of :mod:`segdemo.checkpoint_schema`;
3. the model it describes is built on the ``meta`` device (no memory) and must stay within
   ``MAX_PARAMETERS`` and, at its input size, ``MAX_GFLOPS``;
4. every tensor name, shape and dtype in the header fits that model (and the optimizer
   state, its parameters);
5. only then is the model built and are the weights read.

:func:`read_metadata` does 1-2, :func:`check_checkpoint` 1-4 (what listings use),
:func:`load_checkpoint` all five.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import pickle
import pickletools
import re
import shutil
import struct
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _safetensors_bytes
from torch import nn

from segdemo import limits
from segdemo.checkpoint_schema import (
    FORMAT_VERSION,
    MAX_GFLOPS,
    MAX_PARAMETERS,
    CheckpointError,
    validate_metadata,
)
from segdemo.files import atomic_write_bytes, atomic_writer

METADATA_KEY = "segdemo"
TRAIN_PREFIX = "train/"
MODEL_PREFIX = "model/"
#: Mode of every checkpoint file segdemo writes or keeps (trained, exported, uploaded).
CHECKPOINT_FILE_MODE = 0o644
#: The JSON header of a ``.safetensors`` file (segdemo.limits).
MAX_HEADER_BYTES = limits.CHECKPOINT_HEADER_MAX_MB * limits.MB
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

__all__ = [
    "CHECKPOINT_FILE_MODE",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "MODEL_PREFIX",
    "TRAIN_PREFIX",
    "Checkpoint",
    "CheckpointError",
    "ListedCheckpoint",
    "build_metadata",
    "check_checkpoint",
    "checkpoint_settings",
    "flatten_optimizer_state",
    "library_versions",
    "list_checkpoints",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
    "scan_checkpoints",
    "unflatten_optimizer_state",
]


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
    atomic_write_bytes(
        path, _safetensors_bytes(tensors, metadata=header), mode=CHECKPOINT_FILE_MODE
    )
    return path


def rewrite_metadata(
    path: str | Path, metadata: dict[str, Any], out: str | Path | None = None
) -> Path:
    """Replace a ``.safetensors`` checkpoint's metadata, leaving every weight byte as it is.

    Only the header is rewritten (the tensor table is kept, the data after it copied as
    is), and the file is replaced atomically: ``path`` itself, or ``out`` (a copy) when
    given. The new metadata must pass the same checks as any checkpoint's.

    Raises:
        CheckpointError: ``path`` is not a readable ``.safetensors`` checkpoint, or the new
            metadata breaks the schema.
    """
    path = Path(path)
    name = path.name
    validate_metadata(json.dumps(metadata), name)
    _open_safetensors(path)  # the file is one, with a sane header
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        header["__metadata__"] = {**header.get("__metadata__", {}),
                                  METADATA_KEY: json.dumps(metadata)}  # fmt: skip
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
        target = Path(out) if out is not None else path
        with atomic_writer(target, mode=CHECKPOINT_FILE_MODE, durable=True) as dst:
            dst.write(struct.pack("<Q", len(text)) + text)
            shutil.copyfileobj(f, dst)
    return target


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


# --------------------------------------------------------------------------- reading

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype | str  # a str when torch has no such dtype


@dataclass
class _CheckpointFile:
    """What a checkpoint file holds, known before any weight is read."""

    path: Path
    metadata_text: str
    specs: dict[str, _TensorSpec]
    _tensors: dict[str, torch.Tensor] | None = None  # .pt files: loaded (memory-mapped)

    def tensors(self, names: list[str]) -> dict[str, torch.Tensor]:
        if self._tensors is not None:
            return {k: self._tensors[k] for k in names}
        try:
            with safe_open(str(self.path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in names}
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{self.path.name} is truncated or corrupt ({e})") from None


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file, so not a checkpoint")
    return path


def _open_safetensors(path: Path) -> _CheckpointFile:
    name = path.name
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
    except OSError as e:
        raise CheckpointError(f"{name} cannot be read ({e.strerror or e})") from None
    if len(prefix) < 8:
        raise CheckpointError(f"{name} is not a .safetensors checkpoint (it is empty or cut short)")
    (header_bytes,) = struct.unpack("<Q", prefix)  # the format's first 8 bytes
    if header_bytes + 8 > path.stat().st_size:
        raise CheckpointError(
            f"{name} is not a .safetensors checkpoint (cut short, or another kind of file)"
        )
    if header_bytes > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{name}'s .safetensors header is {header_bytes / 2**20:.0f} MB, more than the "
            f"{MAX_HEADER_BYTES // 2**20} MB segdemo reads"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            specs = {}
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensor = f.get_slice(key)
                dtype = tensor.get_dtype()
                specs[key] = _TensorSpec(
                    tuple(tensor.get_shape()), _SAFETENSORS_DTYPES.get(dtype, dtype)
                )
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{name} is not a readable .safetensors checkpoint (truncated or corrupt: {e})"
        ) from None
    if METADATA_KEY not in header:
        raise CheckpointError(
            f"{name} has no segdemo metadata, so segdemo cannot tell which model it holds"
        )
    return _CheckpointFile(path, header[METADATA_KEY], specs)


_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def _pickle_would_run_code(path: Path) -> bool:
    """Whether a file ``torch.load(weights_only=True)`` refused is a well-formed pickle
    that names Python objects (as opposed to no pickle at all). Reads opcodes only."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not members:
                    return False
                data = archive.read(members[0])
        else:
            data = path.read_bytes()
        return any(op.name in _CODE_OPCODES for op, _, _ in pickletools.genops(data))
    except Exception:  # any parse failure means: not a pickle
        return False


def _open_torch_file(path: Path) -> _CheckpointFile:
    """Read a ``.pt``/``.pth`` file without running any code it may contain."""
    name = path.name
    try:
        is_zip = zipfile.is_zipfile(path)
        with path.open("rb") as f:
            first = f.read(1)
    except OSError as e:
        raise CheckpointError(f"{name} cannot be read ({e.strerror or e})") from None
    # torch.save writes a zip archive (or, before PyTorch 1.6, a pickle: PROTO opcode 0x80).
    if not is_zip and first != b"\x80":
        raise CheckpointError(
            f"{name} is not a PyTorch file (neither torch.save's zip archive nor a pickle)"
        )
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal says it
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as e:  # any bytes may reach the parser: every failure is a refusal
        if isinstance(e, pickle.UnpicklingError) and _pickle_would_run_code(path):
            raise CheckpointError(
                f"{name} was refused: it contains Python objects that would run code when "
                "loaded, and segdemo only loads plain tensors"
            ) from None
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{name} is not a readable PyTorch file ({reason})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(METADATA_KEY), (str, dict)):
        raise CheckpointError(
            f"{name} is a plain PyTorch file without segdemo metadata; save it with "
            "segdemo (a dict with 'segdemo' metadata and 'state_dict') or as .safetensors"
        )
    metadata = obj[METADATA_KEY]
    if isinstance(metadata, dict):
        try:
            metadata = json.dumps(metadata)
        except (TypeError, ValueError):
            raise CheckpointError(
                f"{name}'s segdemo metadata holds values that are not JSON"
            ) from None
    state = obj.get("state_dict", {})
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}'s state_dict is not a dict of tensors")
    tensors = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{name}'s state_dict entry {key!r} is not a named tensor")
        tensors[MODEL_PREFIX + key] = value
    specs = {k: _TensorSpec(tuple(v.shape), v.dtype) for k, v in tensors.items()}
    return _CheckpointFile(path, metadata, specs, tensors)


def _open(path: str | Path) -> _CheckpointFile:
    path = _existing_file(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        return _open_torch_file(path)
    return _open_safetensors(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The validated metadata of a checkpoint, without building its model or reading weights.

    Raises:
        CheckpointError: the file is missing, unreadable, or its metadata breaks the schema.
    """
    source = _open(path)
    return validate_metadata(source.metadata_text, source.path.name)


# ----------------------------------------------------------------------------- checking


def _describe(meta: dict) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(meta.get("model_kwargs", {}).items()))
    return f"{meta.get('model')}({kwargs})"


def _build_kwargs(meta: dict) -> dict[str, Any]:
    # The file holds every weight, the fine-tuned encoder included: build the encoder
    # without its ImageNet weights (no package, cache or network needed).
    kwargs = dict(meta.get("model_kwargs", {}))
    if kwargs.get("encoder_weights") is not None:
        kwargs["encoder_weights"] = None
    return kwargs


def _build(meta: dict, name: str) -> nn.Module:
    from segdemo.models import create_model

    try:
        return create_model(meta["model"], meta["num_classes"], **_build_kwargs(meta))
    except (ValueError, TypeError) as e:
        raise CheckpointError(
            f"{name} describes a model segdemo cannot build (model_kwargs): {e}"
        ) from None


def _sized_model(meta: dict, name: str) -> nn.Module:
    """The model ``meta`` describes, built on the ``meta`` device (shapes, no memory),
    refused when it exceeds ``MAX_PARAMETERS`` or, at the input size, ``MAX_GFLOPS``."""
    from segdemo.models.registry import count_flops

    try:
        with torch.device("meta"):
            model = _build(meta, name)
    except CheckpointError:
        raise
    except (RuntimeError, NotImplementedError, AssertionError, KeyError, IndexError) as e:
        raise CheckpointError(
            f"{name} describes a {_describe(meta)} that segdemo cannot size before building "
            f"it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    size = sum(t.numel() for t in model.state_dict().values())
    if size > MAX_PARAMETERS:
        raise CheckpointError(
            f"{name} describes a {_describe(meta)} with {size / 1e6:,.0f} M parameters "
            f"(model_kwargs), more than the {MAX_PARAMETERS / 1e6:.0f} M segdemo loads"
        )
    height, width = meta["input_size"]
    try:
        flops = count_flops(model, (height, width))
    except (RuntimeError, NotImplementedError, ValueError) as e:
        raise CheckpointError(
            f"{name} describes a {_describe(meta)} that cannot run at input_size "
            f"{height}x{width} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    if flops > MAX_GFLOPS * 1e9:
        raise CheckpointError(
            f"{name} describes a {_describe(meta)} that needs {flops / 1e12:,.1f} TFLOPs per "
            f"image at input_size {height}x{width}, more than the {MAX_GFLOPS / 1e3:g} "
            "TFLOPs segdemo runs"
        )
    return model


def _accurate_weights(meta: dict, model: nn.Module, name: str) -> dict[int, list[float]] | None:
    """The checked accurate-mode head weights of ``meta`` for ``model``, or None."""
    from segdemo.models.unetpp import check_accurate_weights

    weights = meta.get("accurate_weights")
    if weights is None:
        return None
    if not getattr(model, "supports_pruning", False):
        raise CheckpointError(
            f"{name} has invalid metadata: accurate_weights, but {_describe(meta)} has no "
            "deep-supervision heads to weigh"
        )
    try:
        return check_accurate_weights(weights, model.num_levels)
    except ValueError as e:
        raise CheckpointError(f"{name} has invalid metadata: {e}") from None


def check_model_size(
    model: str, num_classes: int, model_kwargs: dict, input_size, name: str
) -> None:
    """Refuse, before building it, a model that a checkpoint could not describe: more than
    ``MAX_PARAMETERS`` or, at ``input_size``, ``MAX_GFLOPS`` (training checks this, so
    what training accepts, loading accepts).

    Raises:
        CheckpointError: one sentence starting with ``name``.
    """
    meta = {"model": model, "num_classes": num_classes, "model_kwargs": dict(model_kwargs),
            "input_size": list(input_size)}  # fmt: skip
    _sized_model(meta, name)


_OPTIMIZER_TENSOR = re.compile(r"^optimizer/([0-9]{1,9})/([A-Za-z_][A-Za-z0-9_]{0,63})$")
_RNG_TENSOR = re.compile(r"^rng/[A-Za-z0-9_]{1,32}$")
#: The weight average (``--ema``) and, when ``model/`` holds the average, the trained
#: weights: one tensor per model weight.
WEIGHT_STATE_PREFIXES = ("ema/", "trained/")
_MAX_RNG_STATE = 2**20


def _optimizer_order(name: str, model: nn.Module, meta) -> list[tuple[int, ...]]:
    """The parameter shapes in the order the run's optimizer numbered its state: one group,
    or two (``encoder_lr_mult``: decoder and heads, then the encoder)."""
    from segdemo.models import parameter_groups

    groups = (meta.get("optimizer") or {}).get("param_groups") or [{}]
    if len(groups) > 2:
        raise CheckpointError(
            f"{name} has invalid metadata: {len(groups)} optimizer parameter groups, "
            "segdemo makes one or two"
        )
    try:
        ordered = parameter_groups(model, split_encoder=len(groups) == 2)
    except ValueError:
        raise CheckpointError(
            f"{name} has invalid metadata: two optimizer parameter groups, but "
            f"{_describe(meta)} has no encoder to give its own learning rate"
        ) from None
    for k, (group, params) in enumerate(zip(groups, ordered, strict=True)):
        if "params" in group and len(group["params"]) != len(params):
            raise CheckpointError(
                f"{name} has invalid metadata: optimizer parameter group {k} has "
                f"{len(group['params'])} parameters, but {_describe(meta)} puts {len(params)} there"
            )
    return [tuple(p.shape) for group in ordered for p in group]


def _check_tensors(name: str, specs: dict[str, _TensorSpec], model: nn.Module, meta) -> None:
    """Every tensor of the file is a weight of ``model`` with its shape and a fitting dtype,
    or training state that fits its parameters."""
    for key in specs:
        if not key.startswith((MODEL_PREFIX, TRAIN_PREFIX)):
            raise CheckpointError(
                f"{name} holds a tensor {key[:80]!r} that is neither a model weight "
                f"({MODEL_PREFIX}...) nor training state ({TRAIN_PREFIX}...)"
            )
    weights = {
        k.removeprefix(MODEL_PREFIX): spec
        for k, spec in specs.items()
        if k.startswith(MODEL_PREFIX)
    }
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0][:80]!r})")
        raise CheckpointError(
            f"{name}'s weights do not fit {_describe(meta)}: {' and '.join(detail)} tensors"
        )
    for key, tensor in expected.items():
        spec = weights[key]
        if spec.shape != tuple(tensor.shape):
            raise CheckpointError(
                f"{name}'s tensor {key} has shape {spec.shape} but {_describe(meta)} with "
                f"{meta['num_classes']} classes needs {tuple(tensor.shape)}"
            )
        fits = (
            isinstance(spec.dtype, torch.dtype) and spec.dtype.is_floating_point
            if tensor.is_floating_point()
            else spec.dtype == tensor.dtype
        )
        if not fits:
            raise CheckpointError(
                f"{name}'s tensor {key} is stored as {spec.dtype} but {_describe(meta)} needs "
                f"{'a floating-point type' if tensor.is_floating_point() else tensor.dtype}"
            )

    parameters = _optimizer_order(name, model, meta)
    for key, spec in specs.items():
        if not key.startswith(TRAIN_PREFIX):
            continue
        short = key.removeprefix(TRAIN_PREFIX)
        if short.startswith(WEIGHT_STATE_PREFIXES):
            weight = expected.get(short.split("/", 1)[1])
            if weight is None or spec.shape != tuple(weight.shape):
                raise CheckpointError(
                    f"{name}'s training state {key[:80]!r} is not a weight of "
                    f"{_describe(meta)} with its shape"
                )
            continue
        if _RNG_TENSOR.match(short):
            if spec.dtype != torch.uint8 or len(spec.shape) != 1 or spec.shape[0] > _MAX_RNG_STATE:
                raise CheckpointError(f"{name}'s random-generator state {key} is not a byte string")
            continue
        match = _OPTIMIZER_TENSOR.match(short)
        if match is None:
            raise CheckpointError(
                f"{name} holds training state segdemo does not know: {key[:80]!r}"
            )
        index = int(match.group(1))
        if index >= len(parameters):
            raise CheckpointError(
                f"{name}'s optimizer state {key} is for parameter {index}, but the model has "
                f"{len(parameters)}"
            )
        if spec.shape not in ((), parameters[index]):
            raise CheckpointError(
                f"{name}'s optimizer state {key} has shape {spec.shape} but its parameter has "
                f"{parameters[index]}"
            )
    optimizer = meta.get("optimizer")
    if optimizer is not None:
        for group in optimizer["param_groups"]:
            if any(index >= len(parameters) for index in group["params"]):
                raise CheckpointError(
                    f"{name} has invalid metadata: optimizer.param_groups names a parameter "
                    f"the model does not have (it has {len(parameters)})"
                )


def _check_expected(meta: dict, name: str, model: str | None, num_classes: int | None) -> None:
    if model is not None and meta["model"] != model:
        raise CheckpointError(f"{name} holds a {meta['model']} model, not {model}")
    if num_classes is not None and meta["num_classes"] != num_classes:
        raise CheckpointError(
            f"{name} predicts {meta['num_classes']} classes but {num_classes} are expected"
        )


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check a checkpoint completely without reading its weights: the file, the metadata
    schema, the size of the model it describes (built on the ``meta`` device) and every
    tensor name, shape and dtype. Returns the validated metadata.

    Raises:
        CheckpointError: one sentence naming the file and what is wrong.
    """
    return _checked(path)[0]


def checkpoint_settings(path: str | Path) -> list[tuple[str | None, int | None]]:
    """Every ``(mode, level)`` the checkpoint's model runs (``inference_settings``), after
    the whole of :func:`check_checkpoint`, still without reading the weights.

    Raises:
        CheckpointError: as :func:`check_checkpoint`.
    """
    from segdemo.models.registry import inference_settings

    return inference_settings(_checked(path)[1])


def _checked(path: str | Path) -> tuple[dict[str, Any], nn.Module]:
    """:func:`check_checkpoint`'s checks; the metadata and the model built on ``meta``."""
    source = _open(path)
    name = source.path.name
    meta = validate_metadata(source.metadata_text, name)
    model = _sized_model(meta, name)
    _check_tensors(name, source.specs, model, meta)
    _accurate_weights(meta, model, name)
    return meta, model


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    expected_model: str | None = None,
    expected_num_classes: int | None = None,
    with_optimizer: bool = False,
) -> Checkpoint:
    """Rebuild the model of a checkpoint from the file alone (see the module docstring for
    the checks, all done before the model is built).

    Raises:
        CheckpointError: one sentence naming the file and what is wrong: missing file or a
            directory, unreadable/truncated file, a pickle that would run code, metadata
            that breaks the schema, a model over the size limits, another architecture or
            class count than expected, or weights that do not fit the architecture.
    """
    source = _open(path)
    path, name = source.path, source.path.name
    meta = validate_metadata(source.metadata_text, name)
    _check_expected(meta, name, expected_model, expected_num_classes)
    sized = _sized_model(meta, name)
    _check_tensors(name, source.specs, sized, meta)
    accurate_weights = _accurate_weights(meta, sized, name)

    model = _build(meta, name)
    if accurate_weights is not None:
        model.accurate_weights = accurate_weights
    # The metadata's own kwargs (encoder_weights as trained) and input normalisation.
    model.model_kwargs = dict(meta.get("model_kwargs", {}))
    model.normalization = {k: tuple(v) for k, v in meta["normalization"].items()}
    expected = model.state_dict()
    weights = {
        k.removeprefix(MODEL_PREFIX): t
        for k, t in source.tensors([MODEL_PREFIX + k for k in expected]).items()
    }
    for key, tensor in expected.items():
        if weights[key].is_floating_point():
            weights[key] = weights[key].to(tensor.dtype)
    model.load_state_dict(weights)
    model.to(device).eval()
    train_tensors = {}
    if with_optimizer:
        train_names = [k for k in source.specs if k.startswith(TRAIN_PREFIX)]
        train_tensors = {
            k.removeprefix(TRAIN_PREFIX): t for k, t in source.tensors(train_names).items()
        }
    return Checkpoint(model=model, metadata=meta, path=path, train_tensors=train_tensors)


# ---------------------------------------------------------------------------- listings


@dataclass(frozen=True)
class ListedCheckpoint:
    """A file found in a checkpoint folder: its validated metadata, or why it is broken."""

    path: Path
    metadata: dict[str, Any] | None
    error: str | None = None

    @property
    def broken(self) -> bool:
        return self.error is not None


def scan_checkpoints(folder: str | Path) -> list[ListedCheckpoint]:
    """Every ``*.safetensors`` file in ``folder`` (not recursive), checked with
    :func:`check_checkpoint`; a file that fails is listed with the reason, never raised."""
    folder = Path(folder)
    found = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            try:
                found.append(ListedCheckpoint(path, check_checkpoint(path)))
            except CheckpointError as e:
                found.append(ListedCheckpoint(path, None, str(e)))
            except Exception as e:  # a file must never take a listing down; say why
                found.append(
                    ListedCheckpoint(
                        path, None, f"{path.name} could not be checked ({type(e).__name__}: {e})"
                    )
                )
    return found


def list_checkpoints(folder: str | Path) -> list[tuple[Path, dict]]:
    """``(path, metadata)`` for every checkpoint in ``folder`` that passes every check."""
    return [(c.path, c.metadata) for c in scan_checkpoints(folder) if not c.broken]


# ------------------------------------------------------------------------- display names

# Stems a training run gives every checkpoint: its run folder is what tells them apart.
RUN_STEMS = ("best", "last")


def checkpoint_names(paths: Sequence[str | Path]) -> list[str]:
    """The name each checkpoint is shown and saved under: its file stem
    (``unetpp_lite0_cw``), all different.

    A run's ``best``/``last`` checkpoint takes its run folder (``run-3/best``); stems that
    clash take their folders too (``bundled/unet``, ``uploaded/unet``), then their suffix,
    then a number (the rules of :func:`segdemo.batch.output_stems`).
    """
    from segdemo.batch import output_stems

    resolved = [Path(p).resolve() for p in paths]
    keep = [2 if p.stem in RUN_STEMS else 1 for p in resolved]
    return output_stems(resolved, keep)
