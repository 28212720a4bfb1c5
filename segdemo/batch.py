"""Many photos in, every model's masks out: the files of one prediction, output names that
never collide, and one ZIP of photos x models.

Used by ``python -m segdemo predict`` (files in a folder) and the app's batch download (a
ZIP); both write the same files per photo and model:

- ``<stem>_trainids.png``: the mask, pixel values are train ids (255 = ignore), with the
  label colours as its palette;
- ``<stem>_mask.png``: the colour mask; ``<stem>_overlay.png``: the mask over the photo;
- ``<stem>_legend.png``: the classes present and their pixel shares.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePath

import numpy as np
from PIL import Image

from segdemo import viz
from segdemo.images import IMAGE_SUFFIXES, ImageError, load_image
from segdemo.inference import Segmenter

OUTPUT_KINDS = ("trainids", "mask", "overlay", "legend")


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def mask_png(mask: np.ndarray, label_set) -> bytes:
    """The mask as a palette PNG: pixel values are train ids (255 = ignore), and image
    viewers show the label set's colours."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: label_set.num_classes] = np.asarray(label_set.colors, dtype=np.uint8)
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").convert("P")
    image.putpalette(palette.ravel().tolist())
    return png_bytes(image)


def prediction_files(
    image: np.ndarray, mask: np.ndarray, label_set, alpha: float = 0.5
) -> dict[str, bytes]:
    """The PNG files of one photo's mask, by kind (``OUTPUT_KINDS``)."""
    legend = viz.legend_entries(mask, label_set)
    return {
        "trainids": mask_png(mask, label_set),
        "mask": png_bytes(viz.colorize(mask, label_set)),
        "overlay": png_bytes(viz.overlay(image, mask, label_set, alpha)),
        "legend": png_bytes(viz.legend_image(legend)),
    }


def list_images(folder: str | Path) -> list[Path]:
    """Every photo under ``folder`` (sub-folders too), sorted by path."""
    folder = Path(folder)
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


# What a part of an output name may hold: a name from a user (an upload, a file on the
# command line) is data, never a path; anything else becomes "_".
_UNSAFE_NAME = re.compile(r"[^\w .,()+@=-]")


def _name_parts(path: PurePath) -> list[str]:
    """The parts of ``path`` that may name an output: no root, no ``.`` or ``..``, no
    separator or control character inside a part, never starting with a dot."""
    parts = []
    for part in path.parts:
        if part in (path.anchor, "", ".", ".."):
            continue
        part = _UNSAFE_NAME.sub("_", part).lstrip(".") or "_"
        parts.append(part[:200])
    return parts or ["unnamed"]


def output_stems(paths: Sequence[str | PurePath], keep: Sequence[int] | None = None) -> list[str]:
    """One output name per input, all different, so no input's files overwrite another's.

    A name is the input's last ``keep[k]`` path parts (default 1: the file name) without
    the suffix, ``/``-separated. Inputs whose names collide take more of their folders
    when they lie in different folders (``a/x.jpg`` and ``b/x.png`` -> ``a/x``, ``b/x``),
    their suffix when in the same one (``x_jpg``, ``x_png``), and a number when even that
    is the same (``x``, ``x-2``). A name never climbs out of the folder it is written to:
    ``..``, roots and separators or control characters inside a part are dropped or
    become ``_`` (``../../x.png`` -> ``x``), so a name from a user is data, not a path.
    """
    paths = [PurePath(p) for p in paths]
    parts = [_name_parts(p) for p in paths]
    depth = [max(1, k) for k in keep] if keep is not None else [1] * len(paths)
    suffixed = [False] * len(paths)

    def name(k: int) -> str:
        pieces = parts[k][-depth[k] :]
        stem = PurePath(pieces[-1]).stem or pieces[-1]
        suffix = PurePath(parts[k][-1]).suffix
        if suffixed[k] and suffix:
            stem = f"{stem}_{suffix.lstrip('.').lower()}"
        return "/".join([*pieces[:-1], stem])

    while True:
        groups: dict[str, list[int]] = {}
        for k in range(len(paths)):
            groups.setdefault(name(k), []).append(k)
        clashes = [group for group in groups.values() if len(group) > 1]
        if not clashes:
            break
        changed = False
        for group in clashes:
            folders = {tuple(parts[k][:-1]) for k in group}
            deeper = [k for k in group if depth[k] < len(parts[k])] if len(folders) > 1 else []
            if deeper:
                for k in deeper:
                    depth[k] += 1
                changed = True
            elif len({paths[k].suffix.lower() for k in group}) > 1 and not all(
                suffixed[k] for k in group
            ):
                for k in group:
                    suffixed[k] = True
                changed = True
        if not changed:
            break
    names: list[str] = []
    seen: dict[str, int] = {}
    for k in range(len(paths)):
        base = name(k)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _folder_name(segmenter: Segmenter) -> str:
    """``unetpp_lite0_cw_fast-L4``, ``unetpp_fast-L4-TTA-flip-0-75-1-25``: the model's name
    and its setting, one folder deep (``run-3/best`` becomes ``run-3_best``)."""
    setting = re.sub(r"[^A-Za-z0-9]+", "-", segmenter.setting).strip("-")
    name = re.sub(r"[/\\]+", "_", segmenter.name)
    return f"{name}_{setting}" if setting else name


def batch_zip(
    photos: Sequence[tuple[str, np.ndarray | bytes]],
    segmenters: Sequence[Segmenter],
    alpha: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[bytes, list[str]]:
    """Segment every photo with every model and pack the files into one ZIP.

    Args:
        photos: ``(name, image)`` pairs; an image is an ``(H, W, 3)`` uint8 array or the
            encoded file's bytes.
        segmenters: the models, each at its inference setting.
        alpha: overlay opacity.
        progress: called with ``(done, total)`` after each photo x model.

    Returns:
        ``(zip_bytes, problems)``: the archive holds
        ``<model>/<photo>_{trainids,mask,overlay,legend}.png`` for every readable photo,
        one folder per model (named after the model and its setting, never twice the
        same); ``problems`` has one sentence per photo that could not be read.
    """
    photo_names = output_stems([PurePath(name) for name, _ in photos])
    model_names = output_stems([PurePath(_folder_name(s)) for s in segmenters])
    total = len(photos) * len(segmenters)
    done = 0
    problems: list[str] = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for (name, source), stem in zip(photos, photo_names, strict=True):
            try:
                image = load_image(source, name=name) if isinstance(source, bytes) else source
            except ImageError as e:
                problems.append(str(e))
                done += len(segmenters)
                if progress is not None:
                    progress(done, total)
                continue
            for segmenter, folder in zip(segmenters, model_names, strict=True):
                mask = segmenter(image)
                files = prediction_files(image, mask, segmenter.label_set, alpha)
                for kind in OUTPUT_KINDS:
                    archive.writestr(f"{folder}/{stem}_{kind}.png", files[kind])
                done += 1
                if progress is not None:
                    progress(done, total)
    return buffer.getvalue(), problems


def iter_inputs(arguments: Iterable[str | Path]) -> tuple[list[Path], list[int]]:
    """The photos named on a command line: files as given, folders expanded to every
    photo under them (``list_images``).

    Returns:
        ``(paths, keep)``: absolute paths (a symbolic link stays the link), and for each how many trailing parts name it
        (1 for a file; its depth below the folder for a folder's photo, so sub-folders are
        mirrored), ready for :func:`output_stems`.

    Raises:
        FileNotFoundError: an argument that does not exist.
        ValueError: a folder without photos.
    """
    paths: list[Path] = []
    keep: list[int] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = list_images(path)
            if not found:
                suffixes = ", ".join(IMAGE_SUFFIXES)
                raise ValueError(f"{path} holds no photos ({suffixes})")
            for photo in found:
                # absolute without resolving links: a linked photo is named after the link
                paths.append(Path(os.path.abspath(photo)))
                keep.append(len(photo.relative_to(path).parts))
        elif path.exists():
            paths.append(Path(os.path.abspath(path)))
            keep.append(1)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return paths, keep
