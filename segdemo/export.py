"""Exporting checkpoints: weights-only safetensors (optionally fp16), ONNX, smp's layout."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

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


class _Fixed(nn.Module):
    """Freezes a U-Net++'s (mode, level) so the exported graph has one input."""

    def __init__(self, model: nn.Module, forward_kwargs: dict) -> None:
        super().__init__()
        self.model = model
        self.forward_kwargs = forward_kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, **self.forward_kwargs)


def export_onnx(
    ckpt_path: str | Path, out_path: str | Path, mode: str | None = None, level: int | None = None
) -> Path:
    """Write an ONNX graph of the checkpoint's model at its working size (needs ``onnx``)."""
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ValueError(
            "ONNX export needs the 'onnx' package: pip install onnx onnxruntime"
        ) from e
    ckpt = load_checkpoint(ckpt_path)
    forward_kwargs = {}
    if getattr(ckpt.model, "supports_pruning", False):
        forward_kwargs = {"mode": mode or "accurate", "level": level or ckpt.model.num_levels}
    elif mode or level:
        raise ValueError(f"{ckpt.metadata['model']} has no pruning levels to export")
    module = _Fixed(ckpt.model, forward_kwargs).eval()
    example = torch.zeros(1, 3, *ckpt.input_size)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (example,),
        str(out_path),
        input_names=["image"],
        output_names=["logits"],
        dynamo=False,
        opset_version=17,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    return out_path


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
