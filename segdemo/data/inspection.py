"""Dataset inspection for ``python -m segdemo data inspect`` and the app's Data page."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segdemo.data.formats import (
    SPLITS,
    PairedFilesDataset,
    PairsDataset,
    SegmentationDataset,
    SyntheticDataset,
    detect_format,
)
from segdemo.labels import LabelSet, get_label_set

#: Headers read per split to report image sizes (headers only: no pixel decoding).
MAX_HEADERS = 5000
#: Items decoded per split to sample the masks (classes present, far colours).
SAMPLE_ITEMS = 4


def _item_files(ds: SegmentationDataset) -> list[Path]:
    if isinstance(ds, PairsDataset):
        return ds.files
    if isinstance(ds, PairedFilesDataset):
        return ds.images
    return []


def _mask_files(ds: SegmentationDataset) -> list[Path]:
    return ds.masks if isinstance(ds, PairedFilesDataset) else []


def _header_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, SyntaxError):
        return None


def _inspect_split(ds: SegmentationDataset) -> dict[str, Any]:
    info: dict[str, Any] = {"count": len(ds), "fingerprint": ds.fingerprint()}
    problems: list[str] = []
    if isinstance(ds, SyntheticDataset):
        h, w = ds.native_size
        info["image_sizes"] = {f"{w}x{h}": len(ds)}
        info["seed"] = ds.seed
    else:
        files = _item_files(ds)
        step = max(1, -(-len(files) // MAX_HEADERS))
        checked = files[::step]
        sizes: Counter[str] = Counter()
        unreadable = []
        mismatched = []
        masks = _mask_files(ds)[::step]
        for k, path in enumerate(checked):
            size = _header_size(path)
            if size is None:
                unreadable.append(path)
                continue
            w, h = size
            if isinstance(ds, PairsDataset):
                w //= 2  # the photo is the left half
            sizes[f"{w}x{h}"] += 1
            if masks:
                mask_size = _header_size(masks[k])
                if mask_size is None:
                    unreadable.append(masks[k])
                elif mask_size != size:
                    mismatched.append((masks[k], mask_size, path, size))
        info["image_sizes"] = dict(sizes.most_common())
        info["headers_checked"] = len(checked)
        if unreadable:
            names = ", ".join(ds._rel(p) for p in unreadable[:5])
            problems.append(f"{ds.split}: {len(unreadable)} unreadable files: {names}")
        if mismatched:
            mp, (mw, mh), ip, (iw, ih) = mismatched[0]
            problems.append(
                f"{ds.split}: {len(mismatched)} masks differ in size from their images (first: "
                f"{ds._rel(mp)} is {mw}x{mh} but {ds._rel(ip)} is {iw}x{ih}); they are resized "
                "with nearest neighbour when read"
            )
    # Decode a few items to show what the masks hold.
    present: Counter[str] = Counter()
    ignored = total = 0
    for i in np.linspace(0, len(ds) - 1, num=min(SAMPLE_ITEMS, len(ds)), dtype=int):
        try:
            _, mask = ds.read_raw(int(i))
        except ValueError as exc:
            problems.append(f"{ds.split}: {exc}")
            continue
        ids = np.unique(mask)
        present.update(ds.label_set.names[t] for t in ids if t < ds.label_set.num_classes)
        ignored += int((mask == ds.label_set.ignore_index).sum())
        total += mask.size
    info["sampled_items"] = min(SAMPLE_ITEMS, len(ds))
    info["sampled_classes"] = sorted(present, key=lambda n: ds.label_set.names.index(n))
    info["sampled_ignore_fraction"] = round(ignored / total, 4) if total else None
    problems.extend(f"{ds.split}: {p}" for p in ds.problems)
    return {"info": info, "problems": problems}


def inspect_dataset(
    root: str | Path, fmt: str = "auto", label_set: str | LabelSet = "cityscapes19", **options
) -> dict[str, Any]:
    """Describe a dataset without decoding every image (headers plus a few sampled items).

    Returns:
        a JSON-able dict: ``root``, ``format``, ``label_set``, ``num_classes``, ``classes``,
        ``splits`` (per split: ``count``, ``image_sizes`` {"WxH": n}, ``fingerprint``,
        ``sampled_classes``, ``sampled_ignore_fraction``), ``total`` and ``problems``.

    Raises:
        ValueError: the folder is missing or unrecognised, or no split can be opened.
    """
    from segdemo.data import open_dataset  # late import: segdemo.data imports this module

    labels = get_label_set(label_set)
    if fmt == "auto":
        fmt = detect_format(root)
    report: dict[str, Any] = {
        "root": str(root),
        "format": fmt,
        "label_set": labels.name,
        "num_classes": labels.num_classes,
        "classes": list(labels.names),
        "splits": {},
        "problems": [],
    }
    errors = []
    for split in SPLITS:
        try:
            ds = open_dataset(root, split=split, fmt=fmt, label_set=labels, **options)
        except ValueError as exc:
            errors.append(str(exc))
            report["problems"].append(f"{split}: {exc}")
            continue
        result = _inspect_split(ds)
        report["splits"][split] = result["info"]
        report["problems"].extend(result["problems"])
    if not report["splits"]:
        raise ValueError(errors[0] if len(set(errors)) == 1 else "; ".join(errors))
    report["total"] = sum(s["count"] for s in report["splits"].values())
    return report


def format_inspection(report: dict[str, Any]) -> str:
    """Human-readable lines for a report from :func:`inspect_dataset`."""
    lines = [
        f"dataset     {report['root']}",
        f"format      {report['format']}",
        f"label set   {report['label_set']} ({report['num_classes']} classes)",
    ]
    for split, info in report["splits"].items():
        sizes = ", ".join(f"{size} ({n})" for size, n in info["image_sizes"].items()) or "?"
        lines.append(f"{split:<11} {info['count']} items, image size {sizes}")
        if info.get("sampled_classes") is not None:
            ignore = info.get("sampled_ignore_fraction")
            ignore_text = f", {ignore:.1%} ignore" if ignore is not None else ""
            lines.append(
                f"{'':<11} sample of {info['sampled_items']}: "
                f"{', '.join(info['sampled_classes']) or 'no classes'}{ignore_text}"
            )
    lines.append(f"total       {report.get('total', 0)} items")
    problems = report.get("problems") or []
    if problems:
        lines.append(f"problems    {len(problems)}")
        lines.extend(f"  - {p}" for p in problems)
    else:
        lines.append("problems    none")
    return "\n".join(lines)


def class_frequencies(dataset: SegmentationDataset, max_items: int | None = None) -> np.ndarray:
    """Pixel count per train id over the dataset's masks (native size, no augmentation).

    Args:
        dataset: from :func:`segdemo.data.open_dataset`.
        max_items: read at most this many items, evenly spaced; None reads all.

    Returns:
        ``(num_classes,)`` int64 pixel counts (ignore pixels are not counted).
    """
    n = len(dataset)
    count = n if max_items is None else min(n, int(max_items))
    num_classes = dataset.label_set.num_classes
    totals = np.zeros(num_classes, dtype=np.int64)
    if count <= 0:
        return totals
    for i in np.unique(np.linspace(0, n - 1, num=count).round().astype(int)):
        try:
            _, mask = dataset.read_raw(int(i))
        except ValueError:
            continue
        totals += np.bincount(mask.reshape(-1), minlength=256)[:num_classes]
    return totals
