"""Training engine: one ``fit`` for the CLI, the app, studies and ``torchrun``.

Read top to bottom: ``fit`` builds a :class:`Run` (``build_run``), restores it from a
checkpoint when resuming (``restore``), then alternates ``train_one_epoch`` and
``validate``, saving ``last`` (and ``best`` when validation improved) after each epoch.
The learning rate of every step is set from the pure schedule ``lr_factor``. Every event
goes to the callbacks and to ``<out>/progress.jsonl``, which is how the app follows a run.

Deep supervision (``--ds-weights``, ``--ds-distill``) is the loss's (``segdemo.losses``);
with ``--ema`` an average of the weights (``segdemo.ema``) is validated beside the trained
weights after every epoch and the checkpoint holds whichever scored higher (its metadata
says which: ``saved_weights``), the other kept under ``train/`` for resuming; with
``--accurate-weights fit`` the finished run chooses accurate mode's head weights on the
training split (``segdemo.head_mixture``) and stores them in its checkpoints.

Stopping: SIGINT/SIGTERM or a file named ``STOP`` in the run folder ends the run after the
current step, with ``last.safetensors`` written; ``resume=True`` continues from it with
the same optimizer state, schedule position and data order.

Guarantees after any kill: a run folder belongs to one process (a lock); ``last`` only
claims a ``best`` that is on disk (``best`` is written first, and a resume re-reads it);
temporary files of an interrupted write are removed on the next start.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from segdemo import checkpoints, runtime
from segdemo.config import TrainConfig, parse_head_weights
from segdemo.distributed import DistInfo, ResumableSampler, agree, barrier, init_distributed
from segdemo.ema import WeightAverage
from segdemo.files import RUN_LOCK_FILE, check_output_folder, run_lock_holder, take_run_lock
from segdemo.geometry import training_frames_of
from segdemo.losses import SegmentationLoss, head_weights

Event = dict[str, Any]
Callback = Callable[[Event], None]
LAST, BEST = "last.safetensors", "best.safetensors"
LOCK_FILE = RUN_LOCK_FILE

__all__ = ["TrainConfig", "fit", "lr_factor", "read_progress"]


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step`` (pure function, 0-based step)."""
    warmup_steps = min(warmup_steps, max(total_steps // 10, 0))
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return (1.0 - progress) ** 0.9


# --------------------------------------------------------------------------- state


@dataclass
class TrainState:
    """Where a run is; saved into every checkpoint and restored on resume."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps done
    batches_in_epoch: int = 0  # loader batches of this epoch consumed (trained or skipped)
    best_miou: float | None = None
    best_step: int | None = None
    best_metrics: dict | None = None
    last_metrics: dict | None = None
    history: list[dict] = field(default_factory=list)
    weights: str = "trained"  # which weights the last validation chose: trained or ema

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if values["best_miou"] is None:
            values["best_miou"] = -1.0  # "none yet", as every checkpoint format version says
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        values = dict(values)
        # Checkpoints of earlier versions: step_in_epoch, and best_miou -1 for "none yet".
        values.setdefault("batches_in_epoch", values.pop("step_in_epoch", 0))
        if values.get("best_miou") is not None and values["best_miou"] < 0:
            values["best_miou"] = None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class Run:
    """Everything a training run works with, built once by ``build_run``."""

    config: TrainConfig
    out: Path
    dist: DistInfo
    device: torch.device
    precision: str
    label_set: Any
    model: torch.nn.Module  # the model itself (checkpoints, evaluation)
    train_model: torch.nn.Module  # what the step calls: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    loss_fn: SegmentationLoss
    train_set: Any
    val_set: Any
    sampler: ResumableSampler
    loader: DataLoader
    steps_per_epoch: int
    total_steps: int
    state: TrainState = field(default_factory=TrainState)
    ema: WeightAverage | None = None

    @property
    def saved_model(self) -> torch.nn.Module:
        """The weights a checkpoint holds: the average when it scored higher (``--ema``)."""
        return (
            self.ema.model if self.ema is not None and self.state.weights == "ema" else self.model
        )

    @property
    def last_path(self) -> Path:
        return self.out / LAST

    @property
    def best_path(self) -> Path:
        return self.out / BEST


# --------------------------------------------------------------------------- progress


class ProgressLog:
    """Appends every event as one JSON line to ``<run>/progress.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: Event) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


# The fields of a progress event that readers do arithmetic on, and those they read keys
# of: an event whose field has another type is skipped, so a damaged progress.jsonl
# shows the run's readable events instead of breaking the Train page or a study report.
_NUMBER_FIELDS = ("time", "step", "total_steps", "epoch", "epochs", "loss", "lr", "eta_s",
                  "images_per_s", "val_miou", "train_loss", "eval_time_s", "pid")  # fmt: skip
_OBJECT_FIELDS = ("config", "per_level_miou", "per_class_iou")


def _readable_event(event: Any) -> bool:
    if not isinstance(event, dict):
        return False
    for key in _NUMBER_FIELDS:
        value = event.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            return False
    if event.get("event") in ("step", "epoch") and event.get(event["event"]) is None:
        return False
    if event.get("event") == "step" and event.get("loss") is None:
        return False
    return all(event.get(key) is None or isinstance(event[key], dict) for key in _OBJECT_FIELDS)


def read_progress(run_dir: str | Path) -> list[Event]:
    """Events of a run so far; a partly written last line, and any line that is not a
    well-formed event, is skipped (an unreadable file gives no events)."""
    path = Path(run_dir) / "progress.jsonl"
    events = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    except OSError:
        return []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if _readable_event(event):
            events.append(event)
    return events


class StopFlag:
    """Set by SIGINT/SIGTERM or a STOP file; read after every step."""

    def __init__(self, run_dir: Path, extra_files: Iterable[str | Path] = ()) -> None:
        self.files = [run_dir / "STOP", *(Path(p) for p in extra_files)]
        self.signalled: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # signal.signal raises ValueError outside the main thread (e.g. the app's tests).
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.signalled = signal.Signals(signum).name

    def reason(self) -> str | None:
        if self.signalled:
            return self.signalled
        for path in self.files:
            if path.exists():
                return "STOP file" if path == self.files[0] else f"STOP file {path}"
        return None


# --------------------------------------------------------------------------- run folder


@contextlib.contextmanager
def run_folder(out: Path, is_main: bool):
    """Own ``out`` for the life of the run: refuse a file, take the folder's lock (a
    second process training into it stops at once; see ``segdemo.files.RUN_LOCK_FILE``),
    remove what a killed write left."""
    check_output_folder(out)
    if not is_main:
        yield
        return
    lock = take_run_lock(out)
    if lock is None:
        holder = run_lock_holder(out) or "another process"
        raise ValueError(
            f"{out} is in use by a training process ({holder}); wait for it to end or give "
            "another --out"
        )
    with lock:
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        for stale in out.glob(".*.safetensors.*.tmp"):
            stale.unlink(missing_ok=True)  # a checkpoint write that a kill interrupted
        yield


# --------------------------------------------------------------------------- building


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    # Ctrl-C or a job scheduler's SIGTERM reaches the whole process group. A worker killed
    # by it would make the main process fail; instead the workers leave stopping to the
    # main process, which finishes its step and writes a checkpoint, then shuts them down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)


class _HeadsForDDP(torch.nn.Module):
    """DDP wraps ``forward``; this makes ``forward`` return the deep-supervision heads."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_heads(x)


def _dataset_options(config: TrainConfig, normalization: dict) -> dict[str, Any]:
    return dict(
        fmt=config.data_format,
        label_set=config.label_set,
        normalization=normalization,
        **config.data_options,
    )


def _datasets(config: TrainConfig, normalization: dict) -> tuple[Any, Any]:
    from segdemo.data import open_dataset

    options = _dataset_options(config, normalization)
    train_set = open_dataset(
        config.data, "train", size=config.size, augment=config.augment,
        scale_range=config.scale_range, photometric=config.photometric,
        geometry_augment=config.geometry_augment, **options,
    )  # fmt: skip
    val_set = open_dataset(config.data, "val", size=None, augment=False, **options)
    if config.val_max_items is not None:
        val_set = torch.utils.data.Subset(val_set, range(min(config.val_max_items, len(val_set))))
    return train_set, val_set


def _class_weights(config: TrainConfig, train_set) -> list[float] | None:
    """``sqrt_inverse_frequency``: w_c = 1/sqrt(f_c), scaled to mean 1 over the classes
    present in (an evenly spaced sample of 500 of) the training masks; 1 for absent ones."""
    if config.class_weighting == "none":
        return None
    from segdemo.data import class_frequencies

    counts = class_frequencies(train_set, max_items=500).astype(np.float64)
    present = counts > 0
    weights = np.ones_like(counts)
    weights[present] = 1.0 / np.sqrt(counts[present] / counts.sum())
    weights[present] /= weights[present].mean()
    return weights.tolist()


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; with ``encoder_lr_mult != 1`` the encoder is its own parameter group."""
    from segdemo.models import encoder_of, parameter_groups

    split = config.encoder_lr_mult != 1.0 and encoder_of(model) is not None
    parts = parameter_groups(model, split)
    rates = (config.lr, config.lr * config.encoder_lr_mult)[: len(parts)]
    groups = [{"params": params, "lr": lr} for params, lr in zip(parts, rates, strict=True)]
    for group in groups:
        group["initial_lr"] = group["lr"]  # the schedule scales this (as torch's schedulers)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _load_initial_weights(model: torch.nn.Module, config: TrainConfig) -> None:
    """Fine-tuning: the weights of ``config.init_from``, which must hold the same model."""
    source = checkpoints.load_checkpoint(config.init_from)
    meta = source.metadata
    if meta["model"] != config.model or meta.get("model_kwargs", {}) != config.model_kwargs:
        raise ValueError(
            f"--init-from {config.init_from} holds {meta['model']} {meta.get('model_kwargs')}, "
            f"not {config.model} {config.model_kwargs}: give the same --model and model flags"
        )
    if meta["label_set"]["name"] != config.label_set:
        raise ValueError(
            f"--init-from {config.init_from} was trained for the {meta['label_set']['name']} "
            f"label set, not {config.label_set}"
        )
    model.load_state_dict(source.model.state_dict())


def _deep_supervision_loss(config: TrainConfig, model: torch.nn.Module) -> dict[str, Any]:
    """The loss's head weights and distillation, checked against the model's heads."""
    from segdemo.models import pruning_levels

    num_heads = pruning_levels(model) or 1
    spec = parse_head_weights(config.ds_weights)
    if num_heads == 1:
        asked = [
            flag
            for flag, on in (
                ("--ds-weights", spec not in ("uniform", "deep") and len(spec) != 1),
                ("--ds-distill", config.ds_distill > 0),
                ("--accurate-weights fit", config.accurate_weights == "fit"),
            )
            if on
        ]
        if asked:
            raise ValueError(
                f"{', '.join(asked)} need a model with deep-supervision heads; {config.model} "
                f"{config.model_kwargs} has one head"
            )
    head_weights(spec, num_heads)  # a list of the wrong length is refused here, by its flag
    return {
        "head_weights": spec,
        "distill": config.ds_distill,
        "temperature": config.ds_temperature,
    }


def build_run(config: TrainConfig) -> Run:
    """Model, data, optimizer and loss of ``config``, placed on its device."""
    from segdemo.labels import get_label_set
    from segdemo.models import create_model, get_model_config

    dist_info = init_distributed(config.device)
    device = runtime.resolve_device(config.device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    precision = runtime.resolve_precision(config.precision, device)
    _seed_everything(config.seed + dist_info.rank)
    label_set = get_label_set(config.label_set)
    checkpoints.check_model_size(config.model, label_set.num_classes, config.model_kwargs,
                                 config.size, "this run")  # fmt: skip
    model = create_model(config.model, label_set.num_classes, **config.model_kwargs)
    if config.init_from:
        _load_initial_weights(model, config)
    model = model.to(device)
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
    train_set, val_set = _datasets(config, model.normalization)
    per_step = config.batch_size * dist_info.world_size
    if len(train_set) < per_step:
        raise ValueError(
            f"the train split of {config.data} has {len(train_set)} images, fewer than one "
            f"batch of {config.batch_size} per process"
        )
    sampler = ResumableSampler(train_set, dist_info.world_size, dist_info.rank, config.seed)
    from segdemo.data import collate_fn

    workers = runtime.data_workers(config.workers, device)
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        collate_fn=collate_fn,
        worker_init_fn=_worker_init,
        # Its own generator: creating an iterator must not draw from the global RNG that
        # dropout uses, or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator(),
        prefetch_factor=4 if workers > 0 else None,
    )
    steps_per_epoch = len(train_set) // per_step
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    train_model = model
    if dist_info.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            _HeadsForDDP(model),
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=get_model_config(config.model).find_unused_parameters,
        )
    loss_fn = SegmentationLoss(
        config.loss,
        label_set.num_classes,
        label_set.ignore_index,
        class_weights=_class_weights(config, train_set),
        **_deep_supervision_loss(config, model),
    )
    return Run(
        config=config, out=Path(config.out), dist=dist_info, device=device,
        precision=precision, label_set=label_set, model=model, train_model=train_model,
        optimizer=_optimizer(model, config), loss_fn=loss_fn, train_set=train_set,
        val_set=val_set, sampler=sampler, loader=loader, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        ema=WeightAverage(model, config.ema) if config.ema is not None else None,
    )  # fmt: skip


# --------------------------------------------------------------------------- resuming


def load_for_resume(config: TrainConfig) -> checkpoints.Checkpoint:
    """``<out>/last.safetensors``, after checking that ``config`` continues that run.

    Raises:
        FileNotFoundError: there is no ``last.safetensors`` to resume from.
        ValueError: a setting that defines the run differs (the message names its flag).
    """
    last = Path(config.out) / LAST
    if not last.is_file():
        raise FileNotFoundError(f"cannot resume: {last} does not exist")
    resumed = checkpoints.load_checkpoint(last, with_optimizer=True)
    missing = [k for k in ("train_config", "train_state", "optimizer") if k not in resumed.metadata]
    if missing:
        raise checkpoints.CheckpointError(
            f"cannot resume {last}: it is not a training checkpoint (no {', '.join(missing)})"
        )
    saved = TrainConfig.from_dict(resumed.metadata["train_config"])
    changed = config.changed_identity(saved)
    if changed:
        raise ValueError(
            f"cannot resume {last} with other settings ({'; '.join(changed)}); a resumed run "
            "keeps its data, model and schedule"
        )
    return resumed


def restore(run: Run, resumed: checkpoints.Checkpoint) -> None:
    """Model, optimizer, random state and progress of the checkpoint; the best-model
    record is taken from ``best.safetensors`` itself, the file on disk being the truth."""
    run.state = TrainState.from_dict(resumed.metadata["train_state"])
    tensors = resumed.train_tensors
    saved = resumed.model.state_dict()
    trained = _weight_state(tensors, "trained/")
    run.model.load_state_dict(trained or saved)
    if run.ema is not None:
        run.ema.load_state_dict(_weight_state(tensors, "ema/") or saved)
    optimizer_tensors = {
        k.removeprefix("optimizer/"): v for k, v in tensors.items() if k.startswith("optimizer/")
    }
    run.optimizer.load_state_dict(
        checkpoints.unflatten_optimizer_state(optimizer_tensors, resumed.metadata["optimizer"])
    )
    if "rng/torch" in tensors:  # dropout continues exactly where the stopped run was
        torch.set_rng_state(tensors["rng/torch"])
    best = _best_on_disk(run.best_path)
    state = run.state
    if best is None:
        state.best_miou = state.best_step = state.best_metrics = None
    else:
        state.best_miou, state.best_step, state.best_metrics = best


def _weight_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _best_on_disk(path: Path) -> tuple[float, int, dict] | None:
    """(mIoU, step, metrics) that ``best.safetensors`` holds, or None without a usable one."""
    if not path.is_file():
        return None
    try:
        meta = checkpoints.read_metadata(path)
        metrics = (meta.get("metrics") or {}).get("best")
        return float(metrics["miou"]), int(meta["step"]), metrics
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- one epoch


def _set_lr(run: Run) -> None:
    c = run.config
    factor = lr_factor(run.state.step, run.total_steps, c.warmup_steps, c.schedule)
    for group in run.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


def train_step(run: Run, batch: dict) -> float:
    """One optimizer step on ``batch``; returns the loss."""
    images = batch["image"].to(run.device, non_blocking=True)
    target = batch["mask"].to(run.device, non_blocking=True)
    if run.precision == "bf16":
        images = images.contiguous(memory_format=torch.channels_last)
    _set_lr(run)
    with runtime.autocast(run.device, run.precision):
        # DDP's forward is the wrapped forward_heads (see _HeadsForDDP).
        model = run.train_model
        heads = model(images) if model is not run.model else model.forward_heads(images)
    loss = run.loss_fn(heads, target)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update(run.model)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"loss became {value} at step {run.state.step}")
    return value


def train_one_epoch(run: Run, emit: Callback, stop: StopFlag) -> dict[str, Any]:
    """Steps over the rest of the current epoch, until it ends, the run's last step, or a
    stop. Ranks agree before each step on stopping and on skipping a batch that some
    rank could not read at all, so they always enter the same collectives."""
    c, state = run.config, run.state
    run.train_model.train()
    run.sampler.set_epoch(state.epoch)
    run.loader.generator.manual_seed(c.seed * 100_003 + state.epoch)
    run.sampler.set_start(state.batches_in_epoch * c.batch_size)
    losses, step_time, stop_reason = [], 0.0, None
    window = (time.perf_counter(), 0, 0)  # start, steps, images since the last event
    epoch_start = time.perf_counter()
    for batch in run.loader:
        stop_now, skip = agree(
            [stop.reason() is not None, batch is None], run.device, run.dist.enabled
        )
        if stop_now:
            stop_reason = stop.reason() or "stop on another rank"
            break
        state.batches_in_epoch += 1
        if skip:
            continue
        started = time.perf_counter()
        losses.append(train_step(run, batch))
        step_time += time.perf_counter() - started
        state.step += 1
        window = (window[0], window[1] + 1, window[2] + len(batch["image"]) * run.dist.world_size)
        if state.step % c.log_every == 0 or state.step == run.total_steps:
            now = time.perf_counter()
            seconds_per_step = (now - window[0]) / window[1]
            emit({
                "event": "step", "step": state.step, "total_steps": run.total_steps,
                "epoch": state.epoch, "epochs": c.epochs, "loss": losses[-1],
                "lr": run.optimizer.param_groups[0]["lr"],
                "images_per_s": window[2] / max(now - window[0], 1e-9),
                "eta_s": seconds_per_step * (run.total_steps - state.step),
            })  # fmt: skip
            window = (now, 0, 0)
        if state.step >= run.total_steps:
            break
    else:
        # The loader ran dry: a stop asked for during the epoch's last step still counts,
        # agreed on like every other stop.
        if agree([stop.reason() is not None], run.device, run.dist.enabled)[0]:
            stop_reason = stop.reason() or "stop on another rank"
    return {
        "train_loss": sum(losses) / len(losses) if losses else None,
        "steps": len(losses),
        "epoch_time_s": time.perf_counter() - epoch_start,
        "model_step_time_s": step_time,
        "stop_reason": stop_reason,
    }


def validate(run: Run, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Metrics of ``model`` (default: the trained model) on the run's val split."""
    from segdemo.evaluate import evaluate

    return evaluate(
        model or run.model, run.val_set, input_size=run.config.size, device=run.device,
        precision=run.precision, batch_size=run.config.batch_size, distributed=run.dist.enabled,
    )  # fmt: skip


# --------------------------------------------------------------------------- saving


def save(run: Run, *, best: bool) -> None:
    """Write ``best`` (when it improved) and then ``last``: a kill in between leaves a
    ``last`` that claims an older best, which ``restore`` reconciles from the files."""
    if not run.dist.is_main:
        return
    state = run.state
    opt_tensors, opt_rest = checkpoints.flatten_optimizer_state(run.optimizer)
    train_tensors = {f"optimizer/{k}": v for k, v in opt_tensors.items()}
    train_tensors["rng/torch"] = torch.get_rng_state()
    model = run.saved_model
    extra = {}
    if run.ema is not None:
        extra["saved_weights"] = state.weights
        train_tensors.update({f"ema/{k}": v for k, v in run.ema.state_dict().items()})
        if model is not run.model:
            train_tensors.update({f"trained/{k}": v for k, v in run.model.state_dict().items()})
    if getattr(model, "accurate_weights", None):
        extra["accurate_weights"] = {str(k): v for k, v in model.accurate_weights.items()}
    meta = checkpoints.build_metadata(
        run.model, run.label_set, run.config.size, run.model.normalization,
        train_config=run.config.to_dict(), epoch=state.epoch, step=state.step,
        metrics={"last": state.last_metrics, "best": state.best_metrics},
        dataset_fingerprint=_fingerprint(run.train_set), train_state=state.to_dict(),
        dataset_format=run.train_set.format,
        training_frames=training_frames_of(run.train_set, run.config.size).to_dict(),
        optimizer=opt_rest, precision=run.precision, **extra,
    )  # fmt: skip
    targets = [(run.best_path, None)] if best else []
    targets.append((run.last_path, train_tensors))
    for path, tensors in targets:
        try:
            checkpoints.save_checkpoint(path, model, meta, train_tensors=tensors)
        except OSError as exc:
            kept = "the previous one is intact" if path.exists() else "nothing was written"
            raise ValueError(f"cannot write {path}: {exc.strerror or exc}; {kept}") from exc


def _fingerprint(dataset) -> str | None:
    fingerprint = getattr(dataset, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else None


# --------------------------------------------------------------------------- accurate mode


def fit_accurate_mode(run: Run, emit: Callback) -> None:
    """``--accurate-weights fit``: choose accurate mode's head weights for the saved
    weights on the training split (no augmentation) and store them in ``last`` and in
    ``best`` (fitted again when ``best`` holds an earlier epoch's weights)."""
    from segdemo.data import open_dataset
    from segdemo.head_mixture import fit_accurate_weights
    from segdemo.models.unetpp import check_accurate_weights

    c, state = run.config, run.state
    fit_set = open_dataset(
        c.data, "train", size=c.size, augment=False,
        **_dataset_options(c, run.model.normalization),
    )  # fmt: skip

    def fit(model: torch.nn.Module) -> dict[str, Any]:
        found = fit_accurate_weights(
            model, fit_set, run.device, run.precision, batch_size=c.batch_size,
            ignore_index=run.label_set.ignore_index,
        )  # fmt: skip
        model.accurate_weights = check_accurate_weights(found["weights"], model.num_levels)
        return found

    found = fit(run.saved_model)
    best_is_last = state.best_step == state.step
    save(run, best=best_is_last)
    if not best_is_last and run.best_path.is_file():
        best = checkpoints.load_checkpoint(run.best_path, device=run.device)
        found_best = fit(best.model)
        meta = {**best.metadata, "accurate_weights": found_best["weights"]}
        checkpoints.save_checkpoint(run.best_path, best.model, meta)
    emit({"event": "accurate_weights", "step": state.step, **found})


# --------------------------------------------------------------------------- the loop


def _epoch_event(run: Run, stats: dict, metrics: dict) -> Event:
    event = {
        "event": "epoch", "epoch": run.state.epoch, "epochs": run.config.epochs,
        "step": run.state.step, "train_loss": stats["train_loss"],
        "val_miou": metrics["miou"], "val_pixel_accuracy": metrics["pixel_accuracy"],
        "per_class_iou": metrics["per_class_iou"], "epoch_time_s": stats["epoch_time_s"],
        "model_step_time_s": stats["model_step_time_s"],
        "data_overhead_ratio": stats["epoch_time_s"] / max(stats["model_step_time_s"], 1e-9),
        "eval_time_s": metrics["eval_time_s"], "best_miou": run.state.best_miou,
    }  # fmt: skip
    if "per_level" in metrics:
        event["per_level_miou"] = {
            mode: {level: m["miou"] for level, m in levels.items()}
            for mode, levels in metrics["per_level"].items()
        }
    return event


def _finish_epoch(run: Run, stats: dict, emit: Callback) -> None:
    """Validate, record, save ``best`` if it improved and ``last``, report the epoch."""
    state = run.state
    metrics = validate(run)
    extra = {}
    if run.ema is not None:
        average = validate(run, run.ema.model)
        extra = {"val_miou_trained": metrics["miou"], "val_miou_ema": average["miou"]}
        state.weights = "ema" if average["miou"] > metrics["miou"] else "trained"
        extra["saved_weights"] = state.weights
        if state.weights == "ema":
            metrics = average
    state.last_metrics = metrics
    state.epoch += 1
    state.batches_in_epoch = 0
    state.history.append({
        "epoch": state.epoch, "step": state.step, "train_loss": stats["train_loss"],
        "val_miou": metrics["miou"],
    })  # fmt: skip
    improved = state.best_miou is None or metrics["miou"] > state.best_miou
    if improved:
        state.best_miou, state.best_step, state.best_metrics = metrics["miou"], state.step, metrics
    save(run, best=improved)
    emit({**_epoch_event(run, stats, metrics), **extra})


def fit(
    config: TrainConfig,
    callbacks: Iterable[Callback] = (),
    resume: bool = False,
    stop_files: Iterable[str | Path] = (),
) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data``; write checkpoints and progress to ``config.out``.

    Args:
        callbacks: called with every event (rank 0 only).
        resume: continue from ``<out>/last.safetensors`` (same run-defining settings).
        stop_files: besides ``<out>/STOP``, files whose appearance also stops the run (a
            study's own STOP file).

    Returns:
        ``status`` (``finished`` or ``stopped``), ``step``, ``total_steps``, ``epoch``,
        ``validated`` (whether any validation ran), ``best_miou`` and the paths ``last`` and
        ``best`` (None for a file that does not exist).
    """
    out = Path(config.out)
    is_main = int(os.environ.get("RANK", "0")) == 0
    with run_folder(out, is_main):
        resumed = load_for_resume(config) if resume else None
        run = build_run(config)
        if resumed is not None:
            restore(run, resumed)
        return _train(run, list(callbacks), resumed is not None, stop_files)


def _train(run: Run, callbacks: list[Callback], resumed: bool, stop_files) -> dict[str, Any]:
    sinks = [*callbacks, ProgressLog(run.out / "progress.jsonl")] if run.dist.is_main else []

    def emit(event: Event) -> None:
        event.setdefault("time", time.time())
        for sink in sinks:
            sink(event)

    stop = StopFlag(run.out, stop_files)
    if resumed and run.dist.is_main:
        stop.files[0].unlink(missing_ok=True)  # the STOP that ended the last attempt
    barrier(run.dist.enabled)
    stop.install()
    state, status = run.state, "finished"
    emit({
        "event": "start", "resumed": resumed, "config": run.config.to_dict(),
        "device": runtime.describe(run.device, run.precision),
        "world_size": run.dist.world_size, "step": state.step, "total_steps": run.total_steps,
        "steps_per_epoch": run.steps_per_epoch, "train_images": len(run.train_set),
        "val_images": len(run.val_set), "pid": os.getpid(),
    })  # fmt: skip
    try:
        while state.step < run.total_steps:
            stats = train_one_epoch(run, emit, stop)
            epoch_done = (
                state.batches_in_epoch >= run.steps_per_epoch or state.step >= run.total_steps
            )
            if epoch_done:
                _finish_epoch(run, stats, emit)
            elif stats["stop_reason"] is not None:
                save(run, best=False)
            if stats["stop_reason"] is not None and state.step < run.total_steps:
                status = "stopped"
                emit({"event": "stopped", "reason": stats["stop_reason"], "step": state.step})
                break
        if status == "finished" and run.config.accurate_weights == "fit" and run.dist.is_main:
            fit_accurate_mode(run, emit)
    except BaseException as e:
        emit({"event": "failed", "error": f"{type(e).__name__}: {e}", "step": state.step})
        raise
    finally:
        stop.restore()
    result = {
        "status": status,
        "step": state.step,
        "total_steps": run.total_steps,
        "epoch": state.epoch,
        "validated": state.last_metrics is not None,
        "best_miou": state.best_miou,
        "last": str(run.last_path) if run.last_path.is_file() else None,
        "best": str(run.best_path) if run.best_path.is_file() else None,
    }
    emit({"event": "end", **result})
    barrier(run.dist.enabled)
    return result
