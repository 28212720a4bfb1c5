"""Many photos in, masks out: output names that never collide, the ZIP, ``predict DIR``."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePath

import numpy as np
import pytest
import torch
from PIL import Image

from segdemo.batch import OUTPUT_KINDS, batch_zip, iter_inputs, output_stems
from segdemo.checkpoints import build_metadata, save_checkpoint
from segdemo.cli import main
from segdemo.inference import Segmenter, prepare_model
from segdemo.labels import get_label_set
from segdemo.models import create_model


def test_output_names_never_collide():
    assert output_stems([PurePath("/p/a/x.jpg"), PurePath("/p/b/y.png")]) == ["x", "y"]
    # The case: the second result must not land on the first.
    assert output_stems([PurePath("/p/a/x.jpg"), PurePath("/p/b/x.png")]) == ["a/x", "b/x"]
    # Same folder, same stem: the suffix tells them apart.
    assert output_stems([PurePath("/p/x.jpg"), PurePath("/p/x.png")]) == ["x_jpg", "x_png"]
    # The same file twice: numbered.
    assert output_stems([PurePath("/p/x.jpg")] * 3) == ["x", "x-2", "x-3"]
    # Only the clashing names grow; a folder's photos keep their sub-folders.
    names = output_stems(
        [PurePath("/d/sub/x.jpg"), PurePath("/d/y.jpg"), PurePath("/e/y.jpg")], keep=[2, 1, 1]
    )
    assert names == ["sub/x", "d/y", "e/y"]
    assert output_stems([PurePath("x.jpg"), PurePath("x.jpg.png")]) == ["x", "x.jpg"]


def test_iter_inputs_expands_folders_and_names_what_is_missing(tmp_path):
    (tmp_path / "photos" / "night").mkdir(parents=True)
    for name in ("a.jpg", "night/b.png", "notes.txt"):
        (tmp_path / "photos" / name).write_bytes(b"x")
    single = tmp_path / "c.webp"
    single.write_bytes(b"x")
    paths, keep = iter_inputs([tmp_path / "photos", single])
    assert [p.name for p in paths] == ["a.jpg", "b.png", "c.webp"] and keep == [1, 2, 1]
    assert output_stems(paths, keep) == ["a", "night/b", "c"]
    with pytest.raises(FileNotFoundError, match="nothing.jpg does not exist"):
        iter_inputs([tmp_path / "nothing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no photos"):
        iter_inputs([tmp_path / "empty"])


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("unetpp", 19, base_width=4).eval()
    meta = build_metadata(model, get_label_set("cityscapes19"), (32, 32), model.normalization)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, meta)
    return path


def photo(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_batch_zip_holds_every_photo_of_every_model(tiny_checkpoint):
    from segdemo.checkpoints import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    model, device, precision = prepare_model(ckpt.model, "cpu", "fp32")
    label_set = ckpt.label_set
    runs = [
        Segmenter("tiny", model, (32, 32), label_set, device, precision, "fast", 1),
        Segmenter("tiny", model, (32, 32), label_set, device, precision, "accurate", 2),
    ]
    calls = []
    archive, problems = batch_zip(
        [("x.jpg", photo(20, 30, 0)), ("x.png", photo(24, 24, 1)), ("bad.jpg", b"not a photo")],
        runs,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert problems == ["bad.jpg is not an image segdemo can read (JPG, PNG, WebP, ...)"]
    assert calls[-1] == (6, 6) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        names = set(z.namelist())
        expected = {
            f"{folder}/{stem}_{kind}.png"
            for folder in ("tiny_fast-L1", "tiny_accurate-L2")
            for stem in ("x_jpg", "x_png")
            for kind in OUTPUT_KINDS
        }
        assert names == expected
        ids = np.asarray(Image.open(io.BytesIO(z.read("tiny_fast-L1/x_jpg_trainids.png"))))
        assert ids.shape == (20, 30) and ids.max() < 19
        assert (ids == runs[0](photo(20, 30, 0))).all()
        colour = Image.open(io.BytesIO(z.read("tiny_accurate-L2/x_png_mask.png")))
        assert colour.mode == "RGB" and colour.size == (24, 24)


def test_predict_a_folder_without_overwriting(tiny_checkpoint, tmp_path, capsys):
    for folder, name, seed in (("a", "x.jpg", 0), ("b", "x.png", 1), ("b/deep", "y.png", 2)):
        (tmp_path / "in" / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(20 + seed, 30, seed)).save(tmp_path / "in" / folder / name)
    out = tmp_path / "out"
    # Two photos called x, named one after the other on the command line (the case).
    code = main(["predict", "--ckpt", str(tiny_checkpoint), str(tmp_path / "in" / "a" / "x.jpg"),
                 str(tmp_path / "in" / "b" / "x.png"), "--out", str(out), "--precision", "fp32"])  # fmt: skip
    assert code == 0
    first = np.asarray(Image.open(out / "a" / "x_trainids.png"))
    second = np.asarray(Image.open(out / "b" / "x_trainids.png"))
    assert first.shape == (20, 30) and second.shape == (21, 30)
    # A folder: every photo under it, sub-folders mirrored.
    out2 = tmp_path / "out2"
    code = main(["predict", "--ckpt", str(tiny_checkpoint), str(tmp_path / "in"), "--out",
                 str(out2), "--mode", "fast", "--level", "2", "--precision", "fp32"])  # fmt: skip
    assert code == 0
    written = sorted(str(p.relative_to(out2)) for p in out2.rglob("*.png"))
    assert written == sorted(
        f"{stem}_{kind}.png" for stem in ("a/x", "b/x", "b/deep/y") for kind in OUTPUT_KINDS
    )
    assert "b/deep/y_" in capsys.readouterr().out
    assert main(["predict", "--ckpt", str(tiny_checkpoint), str(tmp_path / "missing"),
                 "--out", str(out2)]) == 2  # fmt: skip
    assert "missing does not exist" in capsys.readouterr().err


def test_predict_with_test_time_augmentation_writes_the_averaged_mask(tiny_checkpoint, tmp_path):
    from segdemo.checkpoints import load_checkpoint
    from segdemo.inference import Segmenter, prepare_model
    from segdemo.tta import TTA

    image = photo(20, 30, 3)
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "x.png")
    code = main(["predict", "--ckpt", str(tiny_checkpoint), str(tmp_path / "in" / "x.png"),
                 "--out", str(tmp_path / "out"), "--precision", "fp32", "--mode", "fast",
                 "--tta", "flip,0.5"])  # fmt: skip
    assert code == 0
    written = np.asarray(Image.open(tmp_path / "out" / "x_trainids.png"))
    ckpt = load_checkpoint(tiny_checkpoint)
    model, device, _ = prepare_model(ckpt.model, "cpu", "fp32")
    levels = 4
    args = ("tiny", model, ckpt.input_size, ckpt.label_set, device, "fp32", "fast", levels)
    with_tta = Segmenter(*args, TTA.parse("flip,0.5"))
    assert with_tta.setting == "fast L4 + TTA flip,0.5"
    assert (written == with_tta(image)).all()
    assert main(["predict", "--ckpt", str(tiny_checkpoint), str(tmp_path / "in"), "--out",
                 str(tmp_path / "o2"), "--tta", "mirror"]) == 2  # fmt: skip


def test_a_model_with_tta_gets_a_folder_of_its_own(tiny_checkpoint):
    from segdemo.checkpoints import load_checkpoint
    from segdemo.inference import Segmenter
    from segdemo.tta import TTA

    ckpt = load_checkpoint(tiny_checkpoint)
    args = ("tiny", ckpt.model.eval(), ckpt.input_size, ckpt.label_set, "cpu", "fp32", "fast", 1)
    runs = [Segmenter(*args), Segmenter(*args, TTA.parse("flip,0.75"))]
    data, problems = batch_zip([("x.png", photo(20, 30, 0))], runs)
    assert problems == []
    folders = {name.split("/")[0] for name in zipfile.ZipFile(io.BytesIO(data)).namelist()}
    assert folders == {"tiny_fast-L1", "tiny_fast-L1-TTA-flip-0-75"}


def test_names_from_users_never_climb_out_of_a_folder():
    names = ["../../x.png", "x.png", "/etc/../../passwd.png", "..\\..\\evil.png", "..",
             ".hidden.png", "a/../../b/c.png", "bad\x00na:me|.png"]  # fmt: skip
    stems = output_stems(names)
    assert len(set(stems)) == len(stems)
    for stem in stems:
        parts = PurePath(stem).parts
        assert stem and not PurePath(stem).is_absolute(), stem
        assert ".." not in parts and not any(p.startswith(".") for p in parts), stem
        assert "\\" not in stem and "\x00" not in stem and ":" not in stem, stem
    assert stems[0] in ("x", "x-2") and stems[1] in ("x", "x-2")


def test_upload_names_with_dot_dot_make_zip_entries_inside_the_model_folder(tiny_checkpoint):
    from segdemo.checkpoints import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    model, device, precision = prepare_model(ckpt.model, "cpu", "fp32")
    # A checkpoint renamed to climb too: its folder is data as well.
    segmenter = Segmenter("..", model, (32, 32), ckpt.label_set, device, precision, None, None)
    archive, problems = batch_zip(
        [("../../x.png", photo(16, 16, 0)), ("x.png", photo(16, 16, 1))], [segmenter]
    )
    assert problems == []
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        for entry in z.namelist():
            parts = PurePath(entry).parts
            assert ".." not in parts and not entry.startswith("/"), entry
            assert len(parts) == 2, entry  # <model>/<photo>_<kind>.png


def test_a_linked_photo_is_named_after_the_link(tmp_path):
    Image.fromarray(photo(8, 8, 0)).save(tmp_path / "target.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "target.png")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "inside.png").symlink_to(tmp_path / "target.png")
    paths, keep = iter_inputs([tmp_path / "link.png", tmp_path / "folder"])
    assert [p.name for p in paths] == ["link.png", "inside.png"]
    assert output_stems(paths, keep) == ["link", "inside"]
