"""Inference engines: eager PyTorch, or the same network compiled by OpenVINO for the CPU.

``inference.prepare_model(model, device, precision, engine)`` is the one way in; with
``engine="openvino"`` it returns an :class:`OpenVINOModel`, which is called like the torch
model (``model(x, mode="fast", level=2)``, ``model.forward_heads(x)``) and so runs through
``predict_logits``, ``Segmenter``, video, batch and evaluation unchanged.

- Every ``(mode, level)`` of a U-Net++ is its own graph: the network is traced with that
  setting fixed, so the nodes a pruned level skips are not in it.
- A graph is converted once (torch -> ONNX -> OpenVINO IR, weights kept in fp32) and kept
  in ``<segdemo cache>/openvino/`` (``$SEGDEMO_CACHE``, else ``~/.cache/segdemo``), keyed
  by the weights' hash, the model, the setting, the input size and the torch and OpenVINO
  versions; the folder is held under a size limit (oldest entries go first) and an
  unreadable entry is rebuilt with one warning. Compiling the IR takes about half a
  second, once per process and setting.
- Precision: ``"fp32"`` asks OpenVINO for f32 kernels, ``"bf16"`` for bf16 (what it picks
  by itself on AVX512-BF16/AMX CPUs); ``"auto"`` is ``runtime.resolve_precision``.
- ``"auto"`` takes OpenVINO on the CPU when it is installed (measured faster on every
  bundled model, docs/benchmarks.md), torch on a GPU.
- Offline and quiet: ``import openvino`` reports a usage event to Intel unless the user
  declined in OpenVINO's consent file (``~/intel/openvino_telemetry``, the file its
  ``opt_in_out --opt_out`` writes). segdemo writes that opt-out before the first import
  when the user has made no choice; where it cannot, it does not import OpenVINO and runs
  on torch. Conversion goes through ONNX and ``Core.read_model``, which send nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import platform
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor, nn

from segdemo import runtime

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "openvino")

#: The OpenVINO and openvino-telemetry releases the engine and the consent-file adapter
#: were checked against (tests/test_engine.py fails when the installed ones differ).
CHECKED_OPENVINO_VERSION = "2026.4.1"
CHECKED_TELEMETRY_VERSION = "2025.2.0"

#: Bump when the way a graph is exported changes, so old cache entries are not reused.
CACHE_FORMAT = 1
#: Default size limit of the IR cache (the flagship's eight settings take about 65 MB).
CACHE_LIMIT_BYTES = 1 << 30

Importer = Callable[[str], ModuleType]


class EngineUnavailable(RuntimeError):
    """OpenVINO cannot be used here; the message says why in one sentence."""


# ----------------------------------------------------------------------- runtime and choice


def telemetry_consent_file() -> Path:
    """OpenVINO's telemetry consent file (openvino-telemetry's ``OptInChecker.consent_file``,
    checked against ``CHECKED_TELEMETRY_VERSION``): ``0`` in it means 'declined'."""
    if platform.system() == "Windows":
        return (
            Path(os.path.expandvars("$LOCALAPPDATA")) / "Intel Corporation" / "openvino_telemetry"
        )
    return Path.home() / "intel" / "openvino_telemetry"


def decline_openvino_telemetry() -> None:
    """Write OpenVINO's documented opt-out (``0`` in its consent file) when the user has
    not decided either way; a file that exists is the user's choice and stays as it is.

    Raises:
        EngineUnavailable: the opt-out cannot be written (then importing OpenVINO would
            report its usage, so segdemo does not import it).
    """
    path = telemetry_consent_file()
    if path.exists():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("0")
    except OSError as exc:
        raise EngineUnavailable(
            f"could not write OpenVINO's telemetry opt-out {path} ({exc.strerror or exc})"
        ) from None


_runtime_lock = threading.Lock()
_runtimes: dict[Importer, ModuleType] = {}


def load_openvino(importer: Importer | None = None) -> ModuleType:
    """The ``openvino`` module, ready to use on this CPU (imported once per importer).

    Args:
        importer: how to import a module by name (default ``importlib.import_module``);
            tests pass one that raises ImportError to see the fallback.

    Raises:
        EngineUnavailable: not installed, telemetry opt-out not writable, or its CPU
            plugin cannot run on this processor.
    """
    importer = importer or importlib.import_module
    with _runtime_lock:
        if importer in _runtimes:
            return _runtimes[importer]
        decline_openvino_telemetry()
        try:
            ov = importer("openvino")
        except ImportError as exc:
            raise EngineUnavailable(
                f"OpenVINO is not installed ({exc}); pip install openvino=={CHECKED_OPENVINO_VERSION}"
            ) from None
        try:
            devices = ov.Core().available_devices
        except RuntimeError as exc:
            raise EngineUnavailable(f"OpenVINO cannot start on this machine: {exc}") from None
        if "CPU" not in devices:
            raise EngineUnavailable(
                "OpenVINO's CPU plugin cannot run on this processor (it needs SSE4.2 or newer)"
            )
        _runtimes[importer] = ov
        return ov


def resolve_engine(
    engine: str, device: str | torch.device = "cpu", importer: Importer | None = None
) -> tuple[str, str | None]:
    """The engine that will run: ``("torch" | "openvino", note)``.

    ``note`` is one sentence when the answer is not what was asked for (OpenVINO missing
    or unusable: torch runs instead), else None. ``"auto"`` is OpenVINO on the CPU when it
    loads, torch otherwise (on a GPU, torch without a note).

    Raises:
        ValueError: an unknown engine, or ``"openvino"`` on a GPU.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "torch":
        return "torch", None
    if runtime.resolve_device(device).type != "cpu":
        if engine == "openvino":
            raise ValueError("the openvino engine runs on the CPU: use --device cpu")
        return "torch", None
    try:
        load_openvino(importer)
    except EngineUnavailable as exc:
        return "torch", f"OpenVINO unavailable: {exc}; running on torch"
    return "openvino", None


def engine_of(model: nn.Module) -> str:
    """``"openvino"`` for an :class:`OpenVINOModel`, else ``"torch"``."""
    return "openvino" if isinstance(model, OpenVINOModel) else "torch"


# ------------------------------------------------------------------------------ the cache


def cache_root() -> Path:
    """Where converted graphs are kept: ``<segdemo cache>/openvino``."""
    from segdemo.labels import cache_dir

    return cache_dir() / "openvino"


def state_hash(model: nn.Module) -> str:
    """SHA-256 of the model's class, build arguments and every tensor of its state (names,
    dtypes, shapes, values; memory layout does not count)."""
    digest = hashlib.sha256()
    identity = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "name": getattr(model, "model_name", None),
        "kwargs": getattr(model, "model_kwargs", None),
    }
    digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _entry_size(entry: Path) -> int:
    return sum(f.stat().st_size for f in entry.iterdir() if f.is_file())


def evict(root: Path, limit_bytes: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used entries of ``root`` until it holds ``limit_bytes``
    or less (``keep`` stays); returns the deleted entries."""
    if not root.is_dir():
        return []
    entries = []
    for entry in root.iterdir():
        if entry.is_dir() and not entry.name.startswith("."):
            try:
                entries.append((entry.stat().st_mtime, _entry_size(entry), entry))
            except OSError:
                continue
    total = sum(size for _, size, _ in entries)
    deleted = []
    for _, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= limit_bytes:
            break
        if keep is not None and entry == keep:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        deleted.append(entry)
    return deleted


class _Fixed(nn.Module):
    """The model with its forward arguments fixed, so the traced graph has one input and
    holds only what that setting computes (a pruned level's skipped nodes are left out)."""

    def __init__(self, model: nn.Module, forward_kwargs: dict, heads: bool = False) -> None:
        super().__init__()
        self.model = model
        self.forward_kwargs = dict(forward_kwargs)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if self.heads:
            return tuple(self.model.forward_heads(x))
        return self.model(x, **self.forward_kwargs)


def write_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int],
    forward_kwargs: dict | None = None,
    heads: bool = False,
) -> Path:
    """Trace ``model`` at one setting (or, with ``heads``, all its heads as outputs) into
    an ONNX file with a dynamic batch; needs the ``onnx`` package (torch's exporter does)."""
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ValueError("ONNX export needs the 'onnx' package: pip install onnx") from e
    module = _Fixed(model, forward_kwargs or {}, heads).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # no_grad: plain torch.cat in the decoder, not its training Function. The tracer's
    # warnings about shapes read as Python numbers do not apply: the input size is fixed.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        count = len(model.forward_heads(_probe(input_size))) if heads else 0
        outputs = [f"head{k}" for k in range(1, count + 1)] if heads else ["logits"]
        torch.onnx.export(
            module,
            (_probe(input_size),),
            str(path),
            input_names=["image"],
            output_names=outputs,
            dynamo=False,
            # 17 drops the axes of ReduceLogSumExp (accurate mode), which OpenVINO reads as
            # "all axes"; from 18 on they are an input and kept.
            opset_version=18,
            dynamic_axes={name: {0: "batch"} for name in ["image", *outputs]},
        )
    return path


def _probe(input_size: tuple[int, int]) -> Tensor:
    return torch.zeros(1, 3, *input_size)


def write_ir(
    model: nn.Module,
    xml_path: str | Path,
    input_size: tuple[int, int],
    forward_kwargs: dict | None = None,
    heads: bool = False,
    importer: Importer | None = None,
) -> Path:
    """OpenVINO IR (``.xml`` + ``.bin`` beside it, fp32 weights) of ``model`` at one
    setting, for OpenVINO alone: ``openvino.Core().read_model(xml)`` runs it."""
    return _write_ir(load_openvino(importer), model, xml_path, input_size, forward_kwargs, heads)


def _write_ir(ov, model, xml_path, input_size, forward_kwargs, heads) -> Path:
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml_path.parent, prefix=".onnx-") as tmp:
        onnx_path = write_onnx(model, Path(tmp) / "model.onnx", input_size, forward_kwargs, heads)
        graph = ov.Core().read_model(str(onnx_path))
        ov.save_model(graph, str(xml_path), compress_to_fp16=False)
    return xml_path


# -------------------------------------------------------------------------- the wrapper


class OpenVINOModel(nn.Module):
    """A segdemo model run by OpenVINO on the CPU, called as the model itself.

    The torch model stays inside (``.model``): its attributes (``normalization``,
    ``num_levels``, ...) read through, and its parameters are what ``parameters()`` yields.
    Graphs are converted (or read from the cache) on first use of a setting and input size;
    calls are serialised per graph, so one instance may be shared between threads.

    Args:
        model: a segdemo model in eval mode.
        precision: ``"fp32"`` or ``"bf16"`` (OpenVINO's inference precision).
        cache_dir: where IR files are kept (default :func:`cache_root`).
        cache_limit_bytes: size limit of ``cache_dir``.
        importer: see :func:`load_openvino`.
    """

    engine = "openvino"

    def __init__(
        self,
        model: nn.Module,
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        cache_limit_bytes: int = CACHE_LIMIT_BYTES,
        importer: Importer | None = None,
    ) -> None:
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.model = model.eval().to("cpu")
        self.precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        self.cache_limit_bytes = int(cache_limit_bytes)
        self._ov = load_openvino(importer)
        self._core = self._ov.Core()
        self._hash: str | None = None
        self._compiled: dict[tuple, tuple[object, threading.Lock]] = {}
        self._lock = threading.Lock()
        #: What happened per graph key in this process: "converted", "cached" or "rebuilt".
        self.cache_events: dict[tuple, str] = {}

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self._modules["model"], name)

    @property
    def runtime_version(self) -> str:
        return self._ov.get_version()

    # -- cache
    def cache_key(self, graph: tuple, input_size: tuple[int, int]) -> str:
        """The cache entry name of one graph: a hash of everything that changes the IR."""
        if self._hash is None:
            self._hash = state_hash(self.model)
        parts = {
            "format": CACHE_FORMAT,
            "openvino": self.runtime_version,
            "torch": torch.__version__,
            "state": self._hash,
            "graph": repr(graph),
            "input_size": list(input_size),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def _read_entry(self, entry: Path):
        """The model of a cache entry, or None (with one warning) when it is unreadable."""
        xml = entry / "model.xml"
        try:
            meta = json.loads((entry / "entry.json").read_text())
            for name, size in meta["sizes"].items():
                if (entry / name).stat().st_size != size:
                    raise ValueError(f"{name} is {(entry / name).stat().st_size} bytes, not {size}")
            graph = self._core.read_model(str(xml))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            log.warning("OpenVINO cache entry %s is unreadable (%s); rebuilding it", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        os.utime(entry)  # most recently used: evicted last
        return graph

    def _build_entry(self, entry: Path, graph: tuple, input_size: tuple[int, int]) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.cache_dir))
        tmp.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
        try:
            kind, kwargs = graph
            _write_ir(self._ov, self.model, tmp / "model.xml", input_size, dict(kwargs),
                      kind == "heads")  # fmt: skip
            sizes = {f.name: f.stat().st_size for f in tmp.iterdir() if f.is_file()}
            meta = {"graph": repr(graph), "input_size": list(input_size), "sizes": sizes,
                    "openvino": self.runtime_version, "created": time.time()}  # fmt: skip
            (tmp / "entry.json").write_text(json.dumps(meta, indent=1))
            with contextlib.suppress(OSError):  # another process built it first: keep theirs
                os.rename(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        evict(self.cache_dir, self.cache_limit_bytes, keep=entry)

    def _compiled_for(self, graph: tuple, input_size: tuple[int, int]):
        key = (graph, tuple(input_size))
        with self._lock:
            found = self._compiled.get(key)
            if found is not None:
                return found
            entry = self.cache_dir / self.cache_key(graph, input_size)
            existed = entry.exists()
            model = self._read_entry(entry) if existed else None
            event = "cached"
            if model is None:
                self._build_entry(entry, graph, input_size)
                model = self._core.read_model(str(entry / "model.xml"))
                event = "rebuilt" if existed else "converted"
            hint = "f32" if self.precision == "fp32" else "bf16"
            compiled = self._core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
            found = (compiled.create_infer_request(), threading.Lock())
            self._compiled[key] = found
            self.cache_events[key] = event
            return found

    def _run(self, graph: tuple, x: Tensor) -> list[Tensor]:
        if x.ndim != 4:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(x.shape)}")
        request, lock = self._compiled_for(graph, tuple(x.shape[-2:]))
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        with lock:
            outputs = request.infer({0: array})
            # the request reuses its output buffers: copy before the next call
            return [torch.from_numpy(np.array(outputs[k])) for k in range(len(outputs))]

    # -- the model's interface
    def forward(self, x: Tensor, **forward_kwargs) -> Tensor:
        return self._run(("forward", tuple(sorted(forward_kwargs.items()))), x)[0]

    def forward_heads(self, x: Tensor) -> list[Tensor]:
        return self._run(("heads", ()), x)

    def describe(self) -> str:
        return f"OpenVINO {self.runtime_version.split('-')[0]}, {self.precision}"
