"""What every page shares: session state, cached checkpoint loading, listings, the sidebar.

Pages stay thin: widgets, one library call, render. Models are loaded once per checkpoint
(``st.cache_resource`` keyed by path and mtime) and never mutated after loading.

Checkpoint files are untrusted: the listing checks each one completely
(``segdemo.checkpoints.scan_checkpoints``) and offers only those that pass; the others are
listed as broken with their reason, for the Checkpoints page to show and delete. Text that
comes from a file (its name, its metadata, an error quoting them) is shown with text
elements (``st.text``, tables, ``st.json``) or, inside alerts and labels, through
:func:`literal_markdown`, never as Markdown.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path

import streamlit as st
import torch

from segdemo import runtime
from segdemo.checkpoints import (
    CheckpointError,
    checkpoint_names,
    load_checkpoint,
    scan_checkpoints,
)
from segdemo.inference import default_mode, prepare_model, pruning_kwargs

REPO = Path(__file__).resolve().parents[1]
# Bundled checkpoints ship with the repository; runs started from the app land in runs/.
BUNDLED_DIR = Path(os.environ.get("SEGDEMO_CHECKPOINTS", REPO / "checkpoints"))
RUNS_DIR = Path(os.environ.get("SEGDEMO_RUNS", REPO / "runs"))
UPLOADED_DIR = RUNS_DIR / "uploaded"

# Every session-state key the app uses, with its initial value (one place, as the style asks).
STATE_DEFAULTS: dict[str, object] = {
    "segment_checkpoints": None,  # list of selected checkpoint paths (None = defaults)
    "segment_view": "overlay",
    "segment_alpha": 0.5,
    "segment_tta": False,
    "segment_engine": "torch",
    "compare_results": {},
    # Segment page
    "segment_photo": None,  # key of the photo shown side by side (None = the first)
    "segment_masks": {},  # (checkpoint, mtime, photo, mode, level) -> SegmentResult, bounded
    # Checkpoints page
    "checkpoints_selected": None,  # path of the checkpoint whose details are shown
    "checkpoints_new_name": "",  # rename field
    "checkpoints_confirm_delete": False,
    "checkpoints_upload_nonce": 0,  # bumped after each upload so the uploader starts empty
    "checkpoints_notices": [],  # [(kind, message)] shown once at the top of the page
}

# Per-checkpoint controls (U-Net++ mode and pruning level on the Segment page): one widget
# key per checkpoint, ``model_state_key(name, path)``, initialised by ``init_model_state``.
MODEL_STATE_DEFAULTS: dict[str, object] = {
    "segment_mode": "accurate",
    "segment_level": None,  # the model's deepest level, set by init_model_state
}


def init_state() -> None:
    for key, value in STATE_DEFAULTS.items():
        # A copy, so sessions never share one mutable default (a dict or list).
        st.session_state.setdefault(key, copy.copy(value))


def model_state_key(name: str, path: str | Path) -> str:
    """Session-state (and widget) key of control ``name`` for checkpoint ``path``."""
    if name not in MODEL_STATE_DEFAULTS:
        raise KeyError(
            f"unknown per-checkpoint control {name!r}; known: {list(MODEL_STATE_DEFAULTS)}"
        )
    return f"{name}::{path}"


def init_model_state(path: str | Path, num_levels: int, mode: str | None = None) -> None:
    """Initialise the per-checkpoint controls of ``path``: the full network, in ``mode``
    (default: accurate)."""
    defaults = dict(MODEL_STATE_DEFAULTS, segment_level=num_levels)
    if mode is not None:
        defaults["segment_mode"] = mode
    for name, value in defaults.items():
        st.session_state.setdefault(model_state_key(name, path), value)


def checkpoint_folders() -> list[Path]:
    """Folders searched for checkpoints: the bundled ones, uploads, and every run folder."""
    folders = [BUNDLED_DIR, UPLOADED_DIR]
    if RUNS_DIR.is_dir():
        folders += sorted(p for p in RUNS_DIR.iterdir() if p.is_dir() and p != UPLOADED_DIR)
    return folders


def _listing_key() -> tuple:
    """Changes whenever a checkpoint is added, replaced or removed."""
    key = []
    for folder in checkpoint_folders():
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            with contextlib.suppress(OSError):  # removed meanwhile: the next key says so
                stat = path.stat()
                key.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(key)


_WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?i)://|www(?=\.)|@")


def literal_markdown(text: str) -> str:
    """Markdown that shows ``text`` exactly as it is: no emphasis, links, images, HTML,
    LaTeX or colour directives. For alerts and labels quoting a file name or metadata.

    Every ASCII punctuation character is backslash-escaped, and an invisible word joiner
    goes into ``://``, ``www.`` and ``@``, which Streamlit would otherwise turn into links.
    """
    text = _AUTOLINK.sub(lambda m: m.group(0)[0] + _WORD_JOINER + m.group(0)[1:], str(text))
    return "".join(
        "\\" + c if c.isascii() and not c.isalnum() and not c.isspace() else c for c in text
    )


def dataset_description(metadata: dict) -> str | None:
    """The dataset a checkpoint was trained on, as ``"<format> · <folder name>"`` (e.g.
    ``"pairs · cityscapes_pairs"``), not the trainer's absolute path; None when unknown."""
    from segdemo.data import detect_format

    config = metadata.get("train_config") or {}
    data = config.get("data")
    if not data:
        return None
    if data == "synthetic":
        return "synthetic"
    fmt = metadata.get("dataset_format") or config.get("data_format") or "auto"
    if fmt == "auto":  # checkpoints written before the detected format was stored
        with contextlib.suppress(ValueError, OSError):
            fmt = detect_format(data)
    folder = Path(data).name or data
    return folder if fmt == "auto" else f"{fmt} · {folder}"


def default_checkpoints(rows: Sequence[dict], most: int = 3) -> list[str]:
    """Checkpoints selected before the user picks: the bundled ones of the richest label
    set (mIoUs of different label sets do not compare; a binary road model stays in the
    picker), most accurate first (the pretrained flagship leads, the from-scratch pair
    follows for comparison), up to four (what fits a wide window); else the newest
    checkpoint of each architecture (``best`` before ``last``), at most ``most``, and at
    least two when two exist."""
    bundled = [row for row in rows if row["bundled"]]
    if bundled:
        richest = max(row.get("num_classes") or 0 for row in bundled)
        bundled = [row for row in bundled if (row.get("num_classes") or 0) == richest]
        bundled.sort(key=lambda row: -(row.get("miou") or 0.0))
        return [row["path"] for row in bundled[:4]]
    newest = sorted(
        rows,
        key=lambda row: (row["created"] or "", Path(row["path"]).stem == "best"),
        reverse=True,
    )
    picked: list[str] = []
    models: set[str] = set()
    for row in newest:
        if row["model"] not in models and len(picked) < most:
            picked.append(row["path"])
            models.add(row["model"])
    for row in newest:
        if len(picked) >= min(2, len(rows)):
            break
        if row["path"] not in picked:
            picked.append(row["path"])
    return picked


def headline_metrics(metadata: dict) -> dict:
    """The one evaluation a checkpoint is shown with: a later evaluation stored by
    ``segdemo eval --store`` (``metrics.evaluated``, e.g. on the whole val split), else
    training's best validation (which may count only the split's first images)."""
    runs = metadata.get("metrics") or {}
    return runs.get("evaluated") or runs.get("best") or {}


def measured_on(metadata: dict) -> str | None:
    """What :func:`headline_metrics` was measured on, in words: ``"all 500 val images"``,
    ``"the first 200 val images"``; None when the checkpoint does not say."""
    runs = metadata.get("metrics") or {}
    metrics = headline_metrics(metadata)
    images = metrics.get("images")
    if not isinstance(images, int) or not images:
        return None
    if runs.get("evaluated"):
        split, limit = metrics.get("split", "val"), metrics.get("max_items")
    else:
        split, limit = "val", (metadata.get("train_config") or {}).get("val_max_items")
    first = isinstance(limit, int) and images == limit
    return f"the first {images} {split} images" if first else f"all {images} {split} images"


def stored_metrics(metadata: dict) -> tuple[dict, str | None]:
    """The validation metrics a checkpoint is listed with (:func:`headline_metrics`), and
    the U-Net++ mode they belong to: the mode the Segment page opens in, at the full level,
    so both show one number."""
    best = headline_metrics(metadata)
    levels = (best.get("per_level") or {}).get("accurate") or {}
    if not levels:
        return best, None
    top = max(int(k) for k in levels)
    mode = default_mode(metadata, top)
    return best["per_level"][mode][str(top)], mode


def _row(path: Path, meta: dict) -> dict:
    from segdemo.models import get_model_config

    listed, mode = stored_metrics(meta)
    kwargs = meta.get("model_kwargs", {})
    return {
        "path": str(path),
        "name": path.stem,  # made unique among all listed checkpoints by _scan
        "label": checkpoint_label(path, meta),
        "model": meta["model"],
        "model_kwargs": kwargs,
        "label_set": meta["label_set"]["name"],
        "num_classes": meta["num_classes"],
        "dataset": dataset_description(meta),
        "data_root": (meta.get("train_config") or {}).get("data"),  # the folder it trained on
        "input_size": meta["input_size"],
        "miou": listed.get("miou"),
        "miou_mode": mode,  # the U-Net++ mode that mIoU was measured in
        "miou_on": measured_on(meta),  # "all 500 val images"
        "created": meta.get("created"),
        "bundled": path.parent == BUNDLED_DIR,
        # Without deep supervision a U-Net++ has one head: nothing to prune.
        "supports_pruning": get_model_config(meta["model"]).supports_pruning
        and kwargs.get("deep_supervision", True),
    }


def _unvalidated(meta: dict) -> bool:
    """A training checkpoint written before any validation (no metrics to go by)."""
    return "train_state" in meta and not (meta.get("metrics") or {}).get("last")


@st.cache_data(show_spinner=False)
def _scan(key: tuple) -> tuple[list[dict], list[dict]]:
    rows, broken = [], []
    for folder in checkpoint_folders():
        found = scan_checkpoints(folder)
        names = {c.path.name for c in found if not c.broken}
        for checkpoint in found:
            path = checkpoint.path
            if checkpoint.broken:
                broken.append(
                    {
                        "path": str(path),
                        "label": checkpoint_label(path, None),
                        "error": checkpoint.error,
                        "bundled": path.parent == BUNDLED_DIR,
                    }
                )
            elif path.name == "last.safetensors" and "best.safetensors" in names:
                continue  # a run folder offers its best epoch; last is for --resume
            elif _unvalidated(checkpoint.metadata):
                continue  # a run stopped before its first validation: nothing to offer yet
            else:
                rows.append(_row(path, checkpoint.metadata))
    # One name per checkpoint across the app, so no view shows two models by one name.
    for row, name in zip(rows, checkpoint_names([r["path"] for r in rows]), strict=True):
        row["name"] = name
        row["label"] = f"{name} ({row['model']})"
    return rows, broken


def available_checkpoints() -> list[dict]:
    """Every checkpoint that passes every check (bundled first), as plain dicts for tables
    and pickers. ``name`` is what the app calls it everywhere (the file stem, unique:
    :func:`segdemo.checkpoints.checkpoint_names`), ``label`` the name with the
    architecture (``unetpp_lite0_cw (unetpp_ds)``), for pickers and headings."""
    return _scan(_listing_key())[0]


def broken_checkpoints() -> list[dict]:
    """Checkpoint files that fail a check: ``{"path", "label", "error", "bundled"}`` each,
    ``error`` being the one-sentence reason."""
    return _scan(_listing_key())[1]


def checkpoint_label(path: Path, meta: dict | None) -> str:
    """Where a file lies and what it holds (``bundled/unet (unet)``); a listed checkpoint
    is labelled by its display name instead (``row["label"]``)."""
    folder = path.parent.name if path.parent not in (BUNDLED_DIR,) else "bundled"
    return f"{folder}/{path.stem} ({meta['model'] if meta else 'broken'})"


@st.cache_resource(show_spinner=False, max_entries=8)
def _load(path: str, mtime_ns: int, device: str, precision: str, engine: str = "torch"):
    ckpt = load_checkpoint(path)
    model, dev, prec = prepare_model(ckpt.model, device, precision, engine)
    ckpt.model = model
    return ckpt, dev, prec


def load_model(
    path: str | Path, device: str = "auto", precision: str = "auto", engine: str = "torch"
):
    """``(Checkpoint, device, precision)`` for ``path``, loaded once per file version and
    engine (``inference.prepare_model``; with OpenVINO ``Checkpoint.model`` is its wrapper).

    Raises:
        CheckpointError: the file is unreadable or not a segdemo checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.name} no longer exists")
    return _load(str(path), path.stat().st_mtime_ns, device, precision, engine)


@st.cache_data(show_spinner=False, max_entries=256)
def _cost(path: str, mtime_ns: int, mode: str | None, level: int | None) -> dict[str, float]:
    from segdemo.models import model_info

    ckpt, _, _ = load_model(path)
    kwargs = pruning_kwargs(ckpt.model, mode, level) if level is not None else {}
    return model_info(ckpt.model, ckpt.input_size, **kwargs)


def model_cost(path: str | Path, mode: str | None = None, level: int | None = None) -> dict:
    """``{"params", "gflops"}`` of a checkpoint's model at its input size, computed once.

    For a U-Net++ pass ``mode`` and ``level`` to get the pruned sub-network's cost.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.name} no longer exists")
    return _cost(str(path), path.stat().st_mtime_ns, mode, level)


def page_link(page: str, label: str, icon: str | None = None) -> None:
    """``st.page_link`` to ``page`` (e.g. ``"pages/train.py"``), or plain text while that
    page's file does not exist yet (a link to a page the router lacks would raise)."""
    if (REPO / page).is_file():
        st.page_link(page, label=label, icon=icon)
    else:
        st.markdown(f"**{label}**")


def inference_description() -> str:
    device = runtime.resolve_device("auto")
    return runtime.describe(device, runtime.resolve_precision("auto", device))


def sidebar() -> None:
    """Checkpoints and datasets available, and how inference runs on this machine."""
    with st.sidebar:
        rows = available_checkpoints()
        broken = broken_checkpoints()
        st.caption("Checkpoints")
        if rows:
            for row in rows[:12]:
                mode = f" ({row['miou_mode']})" if row["miou_mode"] else ""
                on = f" on {row['miou_on']}" if row["miou_on"] else ""
                miou = f" · mIoU {row['miou']:.3f}{mode}{on}" if row["miou"] is not None else ""
                st.text(f"{row['label']}{miou}")
        elif not broken:
            st.info("No checkpoints yet: train one in a minute on the Train page.")
        if broken:
            st.warning(
                f"{len(broken)} checkpoint file{'s' if len(broken) > 1 else ''} cannot be "
                "loaded; the Checkpoints page says why.",
                icon=":material/warning:",
            )
        st.caption("Datasets")
        st.markdown("- built-in synthetic street scenes\n- any folder the loaders accept")
        st.caption("Inference")
        st.markdown(f"`{inference_description()}`")
        st.caption(f"torch {torch.__version__}")


__all__ = [
    "BUNDLED_DIR",
    "RUNS_DIR",
    "UPLOADED_DIR",
    "CheckpointError",
    "MODEL_STATE_DEFAULTS",
    "STATE_DEFAULTS",
    "available_checkpoints",
    "broken_checkpoints",
    "checkpoint_folders",
    "dataset_description",
    "init_model_state",
    "init_state",
    "literal_markdown",
    "load_model",
    "model_cost",
    "model_state_key",
    "page_link",
    "sidebar",
]
