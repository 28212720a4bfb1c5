"""The Train page's form, derived from ``TrainConfig``: one widget per setting, with the
setting's own help text, default and choices (``segdemo.config``), so a new setting shows
up here by being declared there."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import streamlit as st

from segdemo.config import TrainConfig, parse_float_pair, parse_size

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Settings the page sets itself (the dataset picker, the run folder, this machine).
SET_BY_THE_PAGE = ("data", "data_format", "out", "device", "workers", "log_every")
# Widget keys kept from earlier versions of the page, so saved sessions and tests hold.
_KEYS = {"batch_size": "train_batch"}


def form_key(name: str) -> str:
    return _KEYS.get(name, f"train_{name}")


def label(name: str) -> str:
    return {"lr": "Learning rate", "batch_size": "Batch size", "size": "Size (HxW)"}.get(
        name, name.replace("_", " ").capitalize()
    )


def default(name: str) -> Any:
    field = FIELDS[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ("x" if all(isinstance(v, int) for v in value) else ",").join(map(str, value))
    return str(value)


def setting_input(name: str, container=st, *, value: Any = None, **options) -> Any:
    """A widget for ``TrainConfig`` field ``name``; returns the value to pass to it.

    ``value`` overrides the field's default as the widget's starting value; ``options``
    go to the widget (``disabled``, ``min_value``, ...). Numbers take the field's declared
    range as the widget's bounds (``segdemo.config.setting``); numbers that may be unset
    take 0 for "not set"; pairs are typed as text (``256x256``, ``0.5,2.0``). What the
    widgets cannot bound (a number above 0, a pair) is checked when the page builds the
    ``TrainConfig``, by the same declared fields.
    """
    field = FIELDS[name]
    meta = field.metadata
    start = default(name) if value is None else value
    key, help_text = form_key(name), meta.get("help") or None
    kind = str(field.type)
    if meta.get("choices"):
        choices = list(meta["choices"])
        return container.selectbox(label(name), choices, index=choices.index(start), key=key,
                                   help=help_text, **options)  # fmt: skip
    if kind == "bool":
        # The flag says how to turn it off; the box says what it does.
        text = "Augment (flips, random crops, colour changes)" if name == "augment" else label(name)
        return container.checkbox(text, value=bool(start), key=key, **options)
    low, high = meta.get("minimum"), meta.get("maximum")
    if kind in ("int", "int | None"):
        optional = kind.endswith("None")
        number = container.number_input(
            label(name) + (" (0 = not set)" if optional else ""), value=int(start or 0),
            min_value=0 if optional else options.pop("min_value", int(low or 0)),
            max_value=None if high is None else int(high), step=1, key=key, help=help_text,
            **options,
        )  # fmt: skip
        return (int(number) or None) if optional else int(number)
    if kind == "float":
        low = meta.get("above") if low is None else low
        return float(container.number_input(
            label(name), value=float(start), format="%.6g", key=key, help=help_text,
            min_value=None if low is None else float(low),
            max_value=None if high is None else float(high), **options,
        ))  # fmt: skip
    text = container.text_input(label(name), value=_text(start), key=key, help=help_text,
                                **options)  # fmt: skip
    if kind == "str | None":
        return text.strip() or None  # an empty box is "not set", never an empty flag value
    if kind == "float | None":
        try:
            return float(text) if text.strip() else None
        except ValueError:
            raise ValueError(f"{label(name)}: {text!r} is not a number") from None
    try:
        if kind == "tuple[int, int]":
            return parse_size(text)
        if kind == "tuple[float, float] | None":
            return parse_float_pair(text) if text.strip() else None
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"{label(name)}: {e}") from None
    if kind == "str | None":
        return text.strip() or None  # an empty box: not set
    if kind == "float | None":
        if not text.strip():
            return None
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{label(name)}: expected a number, got {text!r}") from None
    return text


def remaining(shown: set[str]) -> list[str]:
    """The settings with a flag that the page has not shown yet, in declaration order."""
    return [
        name
        for name, f in FIELDS.items()
        if f.metadata.get("cli") and name not in shown and name not in SET_BY_THE_PAGE
    ]
