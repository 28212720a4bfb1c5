"""Argument types shared by the commands."""

from __future__ import annotations

import argparse
import json


def size(text: str) -> tuple[int, int]:
    """``"256x512"`` -> (256, 512) as (H, W); a single number means square."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like 256x512 (HxW), got {text!r}"
        ) from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 256x512 (HxW), got {text!r}")
    return values[0], values[1]


def model_arg(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model-arg takes key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
