"""The checkpoints shipped in checkpoints/: they load offline, fit in git, and predict."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from segdemo.checkpoints import load_checkpoint, scan_checkpoints

BUNDLED = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("*.safetensors"))


def test_bundled_checkpoints_pass_every_check():
    """Written before the metadata schema existed: they must still pass it and the size
    limits."""
    listed = scan_checkpoints(BUNDLED[0].parent)
    assert [c.path for c in listed] == BUNDLED
    assert [c.error for c in listed] == [None] * len(BUNDLED)


def test_bundled_weights_fit_the_size_budget():
    assert BUNDLED, "no bundled checkpoints"
    total = sum(path.stat().st_size for path in BUNDLED)
    assert total <= 60 * 2**20, f"bundled checkpoints take {total / 2**20:.1f} MB"


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_checkpoint_loads_offline_and_segments(path, refused_connections):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # smp marks the "timm-" encoder names deprecated; they are the ones that prune.
        warnings.simplefilter("ignore", DeprecationWarning)
        ckpt = load_checkpoint(path)
    assert refused_connections == []
    meta = ckpt.metadata
    # The road pair (road_*) segments road against the rest; the others the 19 classes.
    label_set, classes = ("road", 2) if path.stem.startswith("road_") else ("cityscapes19", 19)
    assert meta["label_set"]["name"] == label_set and ckpt.input_size == (256, 256)
    assert meta["train_config"]["data"].rstrip("/").endswith("cityscapes_pairs")
    assert (meta.get("metrics") or {}).get("best", {}).get("miou", 0) > 0.25
    with torch.no_grad():
        logits = ckpt.model(torch.zeros(1, 3, 256, 256))
    assert logits.shape == (1, classes, 256, 256) and torch.isfinite(logits).all()
