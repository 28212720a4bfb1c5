"""Exporting checkpoints: weights-only safetensors (optionally fp16), ONNX, smp's layout."""

from __future__ import annotations

from pathlib import Path

import torch

from segdemo.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

# Metadata that only a resumable training checkpoint needs.
_TRAINING_ONLY = ("optimizer", "train_state")


def export_safetensors(ckpt_path: str | Path, out_path: str | Path, fp16: bool = False) -> Path:
    """A weights-only copy of a checkpoint: no optimizer state, optional fp16 storage.

    This is how bundled checkpoints are made small enough for git; loading casts fp16
    weights back to fp32. The training history stays in the metadata.
    """
    ckpt = load_checkpoint(ckpt_path)
    meta = {k: v for k, v in ckpt.metadata.items() if k not in _TRAINING_ONLY}
    history = ckpt.metadata.get("train_state", {}).get("history")
    if history is not None:
        meta["history"] = history
    return save_checkpoint(out_path, ckpt.model, meta, dtype=torch.float16 if fp16 else None)


def _setting(ckpt, mode: str | None, level: int | None) -> dict:
    """The forward arguments of the setting to export: a U-Net++ at ``mode``/``level``
    (default accurate at the deepest level); none for a model without levels."""
    if getattr(ckpt.model, "supports_pruning", False):
        return {"mode": mode or "accurate", "level": level or ckpt.model.num_levels}
    if mode or level:
        raise ValueError(f"{ckpt.metadata['model']} has no pruning levels to export")
    return {}


def export_onnx(
    ckpt_path: str | Path, out_path: str | Path, mode: str | None = None, level: int | None = None
) -> Path:
    """Write an ONNX graph of the checkpoint's model at its working size (needs ``onnx``).

    A U-Net++ is exported pruned: only the nodes of ``level`` are in the graph."""
    from segdemo.engine import write_onnx

    ckpt = load_checkpoint(ckpt_path)
    return write_onnx(ckpt.model.eval(), out_path, ckpt.input_size, _setting(ckpt, mode, level))


def export_openvino(
    ckpt_path: str | Path, out_dir: str | Path, mode: str | None = None, level: int | None = None
) -> Path:
    """Write OpenVINO IR (``<stem>.xml`` + ``<stem>.bin``, fp32 weights) of the checkpoint's
    model at its working size into ``out_dir``, for running with OpenVINO alone (needs
    ``openvino`` and ``onnx``). Returns the ``.xml`` path."""
    from segdemo.engine import EngineUnavailable, write_ir

    ckpt = load_checkpoint(ckpt_path)
    setting = _setting(ckpt, mode, level)
    stem = Path(ckpt_path).stem
    if setting:
        stem += f"_{setting['mode']}_L{setting['level']}"
    try:
        return write_ir(ckpt.model.eval(), Path(out_dir) / f"{stem}.xml", ckpt.input_size, setting)
    except EngineUnavailable as exc:
        raise ValueError(f"OpenVINO export: {exc}") from None


def export_smp_pretrained(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Save an smp model (``smp_unet``, ``smp_unetpp``) with smp's ``save_pretrained``."""
    ckpt = load_checkpoint(ckpt_path)
    smp_model = getattr(ckpt.model, "smp_model", None)
    if smp_model is None or not hasattr(smp_model, "save_pretrained"):
        raise CheckpointError(
            f"{Path(ckpt_path).name} holds {ckpt.metadata['model']}, which is not an smp model; "
            "only smp_unet and smp_unetpp have smp's save_pretrained layout"
        )
    out_dir = Path(out_dir)
    smp_model.save_pretrained(str(out_dir))
    return out_dir
