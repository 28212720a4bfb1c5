"""The checkpoints shipped in checkpoints/: they load offline, fit in git, and predict."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import pytest
import torch

from segdemo.checkpoints import load_checkpoint

BUNDLED = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("*.safetensors"))


@pytest.fixture
def no_network(monkeypatch) -> list[str]:
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_bundled_weights_fit_the_size_budget():
    assert BUNDLED, "no bundled checkpoints"
    total = sum(path.stat().st_size for path in BUNDLED)
    assert total <= 60 * 2**20, f"bundled checkpoints take {total / 2**20:.1f} MB"


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_checkpoint_loads_offline_and_segments(path, no_network):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # smp marks the "timm-" encoder names deprecated; they are the ones that prune.
        warnings.simplefilter("ignore", DeprecationWarning)
        ckpt = load_checkpoint(path)
    assert no_network == []
    meta = ckpt.metadata
    assert meta["label_set"]["name"] == "cityscapes19" and ckpt.input_size == (256, 256)
    assert meta["train_config"]["data"].rstrip("/").endswith("cityscapes_pairs")
    assert (meta.get("metrics") or {}).get("best", {}).get("miou", 0) > 0.25
    with torch.no_grad():
        logits = ckpt.model(torch.zeros(1, 3, 256, 256))
    assert logits.shape == (1, 19, 256, 256) and torch.isfinite(logits).all()
