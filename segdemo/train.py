"""Training engine: one ``fit`` for the CLI, the app and ``torchrun``.

Reads like nanoGPT's loop: a typed config, a pure learning-rate schedule, small functions
for one epoch and for evaluation, and callbacks for progress so no UI code leaks in.
Every event also goes to ``<out>/progress.jsonl``, which is how the app follows a run.

Stopping: SIGINT/SIGTERM or a file named ``STOP`` in the run folder ends the run after the
current step, with ``last.safetensors`` written. ``resume=True`` continues from it with the
same optimizer state, schedule position and data order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from segdemo import checkpoints, runtime
from segdemo.losses import SegmentationLoss

Event = dict[str, Any]

# What makes a run that run: resuming with any of these changed is refused.
IDENTITY_FIELDS = (
    "data", "data_format", "label_set", "data_options", "model", "model_kwargs", "size",
    "batch_size", "optimizer", "lr", "weight_decay", "schedule", "warmup_steps", "loss",
    "augment", "seed",
)  # fmt: skip
Callback = Callable[[Event], None]


@dataclass
class TrainConfig:
    """Everything a run depends on; saved verbatim into every checkpoint."""

    data: str = "synthetic"
    data_format: str = "auto"
    label_set: str = "cityscapes19"
    data_options: dict[str, Any] = field(default_factory=dict)
    model: str = "unet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    size: tuple[int, int] = (128, 256)  # (H, W) the model is trained at
    batch_size: int = 8
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps in total
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "poly"  # "poly" or "cosine", both after a linear warm-up
    warmup_steps: int = 100
    loss: str = "ce_dice"
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # "auto" = bf16 + channels_last where supported, else fp32
    workers: int = 1
    out: str = "runs/latest"
    log_every: int = 10  # steps between progress events
    val_max_items: int | None = None  # evaluate on a prefix of the val split (None = all)

    def __post_init__(self) -> None:
        self.size = tuple(int(s) for s in self.size)
        if self.schedule not in ("poly", "cosine"):
            raise ValueError(f"schedule must be 'poly' or 'cosine', got {self.schedule!r}")
        if self.optimizer != "adamw":
            raise ValueError(f"optimizer must be 'adamw', got {self.optimizer!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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


# --------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return DistInfo()
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if not dist.is_initialized():
        backend = "nccl" if runtime.resolve_device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (also for one process) that can skip the first samples of an
    epoch, so a resumed run sees exactly the batches the stopped run had not seen."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(super().__len__() - self.start, 0)


# --------------------------------------------------------------------------- progress


class ProgressLog:
    """Appends every event as one JSON line to ``<run>/progress.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: Event) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


def read_progress(run_dir: str | Path) -> list[Event]:
    """Events of a run so far; a partly written last line is skipped."""
    path = Path(run_dir) / "progress.jsonl"
    events = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


class _StopFlag:
    """Set by SIGINT/SIGTERM or a STOP file; checked after every step."""

    def __init__(self, run_dir: Path, extra_files: Iterable[Path] = ()) -> None:
        self.stop_file = run_dir / "STOP"
        self.extra_files = [Path(p) for p in extra_files]
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
        if self.stop_file.exists():
            return "STOP file"
        for path in self.extra_files:
            if path.exists():
                return f"STOP file {path}"
        return None


# --------------------------------------------------------------------------- the loop


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


def train_one_epoch(
    model, loader, loss_fn, optimizer, scheduler, state, config, device, precision, emit, stop
) -> dict[str, float]:
    """Run the optimizer over one epoch (or what is left of it). Returns timing and loss."""
    model.train()
    channels_last = precision == "bf16"
    loss_sum, loss_count = 0.0, 0
    step_time = 0.0
    window_start, window_steps, window_images = time.perf_counter(), 0, 0
    epoch_start = time.perf_counter()
    for batch in loader:
        if batch is None:
            continue
        t0 = time.perf_counter()
        images = batch["image"].to(device, non_blocking=True)
        target = batch["mask"].to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with runtime.autocast(device, precision):
            # DDP's forward is the wrapped forward_heads (see _HeadsForDDP).
            heads = model(images) if _is_ddp(model) else model.forward_heads(images)
        loss = loss_fn(heads, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_value = float(loss.detach())
        step_time += time.perf_counter() - t0
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {state['step']}")

        state["step"] += 1
        state["step_in_epoch"] += 1
        loss_sum += loss_value
        loss_count += 1
        window_steps += 1
        window_images += images.shape[0] * state["world_size"]
        if state["step"] % config.log_every == 0 or state["step"] == state["total_steps"]:
            now = time.perf_counter()
            ips = window_images / max(now - window_start, 1e-9)
            state["recent_step_s"] = (now - window_start) / window_steps
            window_start, window_steps, window_images = now, 0, 0
            emit(
                {
                    "event": "step",
                    "step": state["step"],
                    "total_steps": state["total_steps"],
                    "epoch": state["epoch"],
                    "epochs": config.epochs,
                    "loss": loss_value,
                    "lr": optimizer.param_groups[0]["lr"],
                    "images_per_s": ips,
                    "eta_s": state["recent_step_s"] * (state["total_steps"] - state["step"]),
                }
            )
        if stop.reason() or state["step"] >= state["total_steps"]:
            break
    return {
        "train_loss": loss_sum / max(loss_count, 1),
        "steps": loss_count,
        "epoch_time_s": time.perf_counter() - epoch_start,
        "model_step_time_s": step_time,
    }


def _is_ddp(model) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


class _HeadsForDDP(torch.nn.Module):
    """DDP wraps ``forward``; this makes ``forward`` return the deep-supervision heads."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_heads(x)


def fit(
    config: TrainConfig,
    callbacks: Iterable[Callback] = (),
    resume: bool = False,
    stop_files: Iterable[str | Path] = (),
) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data``; write checkpoints and progress to ``config.out``.

    ``stop_files``: besides ``<out>/STOP``, files whose appearance also stops the run (a
    study's own STOP file).

    Returns:
        A summary: status (``finished`` or ``stopped``), steps, epochs, best and last metrics,
        and the checkpoint paths.
    """
    from segdemo.data import collate_fn, open_dataset
    from segdemo.evaluate import evaluate
    from segdemo.labels import get_label_set
    from segdemo.models import create_model, get_model_config

    out = Path(config.out)
    dist_info = init_distributed(config.device)
    device = runtime.resolve_device(config.device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    precision = runtime.resolve_precision(config.precision, device)
    last_path, best_path = out / "last.safetensors", out / "best.safetensors"

    resumed = None
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"cannot resume: {last_path} does not exist")
        resumed = checkpoints.load_checkpoint(last_path, with_optimizer=True)
        saved = resumed.metadata["train_config"]
        changed = [
            f"{key} was {saved.get(key)!r}"
            for key in IDENTITY_FIELDS
            if json.dumps(saved.get(key)) != json.dumps(getattr(config, key))
        ]
        if changed:
            raise ValueError(
                f"cannot resume {last_path} with another configuration ({'; '.join(changed)})"
            )

    _seed_everything(config.seed + dist_info.rank)
    label_set = get_label_set(config.label_set)
    model = create_model(config.model, label_set.num_classes, **config.model_kwargs)
    if resumed is not None:
        model.load_state_dict(resumed.model.state_dict())
    normalization = model.normalization
    model.to(device)
    if precision == "bf16":
        model = model.to(memory_format=torch.channels_last)

    data_kwargs = dict(
        fmt=config.data_format,
        label_set=label_set.name,
        normalization=normalization,
        **config.data_options,
    )
    train_set = open_dataset(
        config.data, "train", size=config.size, augment=config.augment, **data_kwargs
    )
    val_set = open_dataset(config.data, "val", size=None, augment=False, **data_kwargs)
    if config.val_max_items is not None:
        val_set = torch.utils.data.Subset(val_set, range(min(config.val_max_items, len(val_set))))
    if len(train_set) < config.batch_size * dist_info.world_size:
        raise ValueError(
            f"the train split of {config.data} has {len(train_set)} images, fewer than one "
            f"batch of {config.batch_size} per process"
        )

    sampler = ResumableSampler(train_set, dist_info.world_size, dist_info.rank, config.seed)
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        collate_fn=collate_fn,
        worker_init_fn=_worker_init,
        persistent_workers=False,
        # Its own generator: creating an iterator must not draw from the global RNG that
        # dropout uses, or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator(),
        prefetch_factor=4 if config.workers > 0 else None,
    )
    steps_per_epoch = len(train_set) // (config.batch_size * dist_info.world_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    train_model = model
    if dist_info.enabled:
        wrapped = _HeadsForDDP(model)
        # smp's timm encoders keep layers their forward never uses (EfficientNet's conv_head).
        train_model = torch.nn.parallel.DistributedDataParallel(
            wrapped,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=get_model_config(config.model).find_unused_parameters,
        )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, total_steps, config.warmup_steps, config.schedule),
    )
    loss_fn = SegmentationLoss(config.loss, label_set.num_classes, label_set.ignore_index)

    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "step_in_epoch": 0,
        "best_miou": -1.0,
        "history": [],
        "best_metrics": None,
        "last_metrics": None,
    }
    if resumed is not None:
        state.update(resumed.metadata["train_state"])
        rest = resumed.metadata["optimizer"]
        tensors = resumed.train_tensors
        optimizer_tensors = {
            k.removeprefix("optimizer/"): v
            for k, v in tensors.items()
            if k.startswith("optimizer/")
        }
        optimizer.load_state_dict(checkpoints.unflatten_optimizer_state(optimizer_tensors, rest))
        if "rng/torch" in tensors:  # dropout continues exactly where the stopped run was
            torch.set_rng_state(tensors["rng/torch"])
        scheduler.last_epoch = state["step"]  # the schedule is a pure function of the step
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(
                state["step"], total_steps, config.warmup_steps, config.schedule
            )
    state["total_steps"] = total_steps
    state["world_size"] = dist_info.world_size

    sinks: list[Callback] = list(callbacks) if dist_info.is_main else []
    if dist_info.is_main:
        sinks.append(ProgressLog(out / "progress.jsonl"))

    def emit(event: Event) -> None:
        event.setdefault("time", time.time())
        for sink in sinks:
            sink(event)

    def save(kind_paths: list[Path], metrics: dict | None) -> None:
        if not dist_info.is_main:
            return
        opt_tensors, opt_rest = checkpoints.flatten_optimizer_state(optimizer)
        train_tensors = {f"optimizer/{k}": v for k, v in opt_tensors.items()}
        train_tensors["rng/torch"] = torch.get_rng_state()
        train_state = {
            k: state[k]
            for k in ("epoch", "step", "step_in_epoch", "best_miou", "history")
            if k in state
        }
        train_state["best_metrics"] = state["best_metrics"]
        train_state["last_metrics"] = state["last_metrics"]
        meta = checkpoints.build_metadata(
            model,
            label_set,
            config.size,
            normalization,
            train_config=config.to_dict(),
            epoch=state["epoch"],
            step=state["step"],
            metrics={"last": state["last_metrics"], "best": state["best_metrics"]},
            dataset_fingerprint=_fingerprint(train_set),
            train_state=train_state,
            optimizer=opt_rest,
            precision=precision,
        )
        for path in kind_paths:
            with_optimizer = path == last_path
            checkpoints.save_checkpoint(
                path, model, meta, train_tensors=train_tensors if with_optimizer else None
            )

    stop = _StopFlag(out, stop_files)
    if resumed is not None and dist_info.is_main:
        # The STOP file that ended the previous attempt must not end this one.
        stop.stop_file.unlink(missing_ok=True)
    if dist_info.enabled:
        dist.barrier()
    stop.install()
    status = "finished"
    emit(
        {
            "event": "start",
            "resumed": resumed is not None,
            "config": config.to_dict(),
            "device": runtime.describe(device, precision),
            "world_size": dist_info.world_size,
            "step": state["step"],
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "train_images": len(train_set),
            "val_images": len(val_set),
            "pid": os.getpid(),
        }
    )
    try:
        while state["step"] < total_steps:
            sampler.set_epoch(state["epoch"])
            loader.generator.manual_seed(config.seed * 100_003 + state["epoch"])
            sampler.set_start(state["step_in_epoch"] * config.batch_size)
            epoch_stats = train_one_epoch(
                train_model, loader, loss_fn, optimizer, scheduler, state, config,
                device, precision, emit, stop,
            )  # fmt: skip
            reason = stop.reason()
            epoch_done = state["step_in_epoch"] >= steps_per_epoch or state["step"] >= total_steps
            if reason and not epoch_done:
                status = "stopped"
                save([last_path], None)
                emit({"event": "stopped", "reason": reason, "step": state["step"]})
                break
            metrics = evaluate(
                model, val_set, input_size=config.size, device=device, precision=precision,
                batch_size=config.batch_size, distributed=dist_info.enabled,
            )  # fmt: skip
            state["last_metrics"] = metrics
            summary = {
                "event": "epoch",
                "epoch": state["epoch"] + 1,
                "epochs": config.epochs,
                "step": state["step"],
                "train_loss": epoch_stats["train_loss"],
                "val_miou": metrics["miou"],
                "val_pixel_accuracy": metrics["pixel_accuracy"],
                "per_class_iou": metrics["per_class_iou"],
                "epoch_time_s": epoch_stats["epoch_time_s"],
                "model_step_time_s": epoch_stats["model_step_time_s"],
                "data_overhead_ratio": epoch_stats["epoch_time_s"]
                / max(epoch_stats["model_step_time_s"], 1e-9),
                "eval_time_s": metrics["eval_time_s"],
            }
            if "per_level" in metrics:
                summary["per_level_miou"] = {
                    mode: {lvl: m["miou"] for lvl, m in levels.items()}
                    for mode, levels in metrics["per_level"].items()
                }
            state["history"].append(
                {k: summary[k] for k in ("epoch", "step", "train_loss", "val_miou")}
            )
            state["epoch"] += 1
            state["step_in_epoch"] = 0
            improved = metrics["miou"] > state["best_miou"]
            if improved:
                state["best_miou"] = metrics["miou"]
                state["best_metrics"] = metrics
            save([last_path, best_path] if improved else [last_path], metrics)
            summary["best_miou"] = state["best_miou"]
            emit(summary)
            if reason:
                status = "stopped"
                emit({"event": "stopped", "reason": reason, "step": state["step"]})
                break
    except BaseException as e:
        emit({"event": "failed", "error": f"{type(e).__name__}: {e}", "step": state["step"]})
        raise
    finally:
        stop.restore()
    result = {
        "status": status,
        "step": state["step"],
        "total_steps": total_steps,
        "epoch": state["epoch"],
        "best_miou": state["best_miou"],
        "last": str(last_path),
        "best": str(best_path),
    }
    emit({"event": "end", **result})
    if dist_info.enabled:
        dist.barrier()
    return result


def _fingerprint(dataset) -> str | None:
    fingerprint = getattr(dataset, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else None
