"""The Segment page (AppTest): masks side by side, live pruning levels, every kind of upload."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from segdemo.checkpoints import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60  # torch pages on a loaded 2-core machine


def _png(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def street(height: int = 48, width: int = 96) -> np.ndarray:
    """A tiny street-like photo: sky, buildings, road."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 3] = (120, 170, 230)
    image[height // 3 : 2 * height // 3] = (110, 90, 80)
    image[2 * height // 3 :] = (90, 90, 95)
    return image


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG header claiming 900 megapixels (Pillow refuses it before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def run_app() -> AppTest:
    return AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()


def model_images(at: AppTest) -> list:
    """The mask/overlay images (the photo's caption starts with "photo")."""
    return [img for img in at.get("image") if not img.captions[0].startswith("photo")]


def test_example_gallery_shows_one_mask_per_model(app_dirs):
    at = run_app()
    assert not at.exception and not at.error
    from segdemo_app.common import default_mode, stored_metrics

    bundled = [str(app_dirs["bundled"] / f"{name}.safetensors") for name in ("unet", "unetpp")]
    bundled.sort(key=lambda p: -stored_metrics(load_checkpoint(p).metadata)[0]["miou"])
    assert at.multiselect(key="segment_checkpoints").value == bundled  # most accurate first
    captions = sorted(img.captions[0] for img in model_images(at))
    assert len(captions) == 2
    # U-Net++ opens at L4 in the mode its stored validation numbers favour.
    unetpp = app_dirs["bundled"] / "unetpp.safetensors"
    mode = default_mode(load_checkpoint(unetpp).metadata, 4)
    assert at.radio(key=f"segment_mode::{unetpp}").value == mode
    assert captions[0].startswith("unet · ") and captions[1].startswith(f"unetpp · {mode} L4")
    legends = [m.value for m in at.markdown if "background:#" in m.value]
    assert len(legends) == 2 and "%" in legends[0]
    assert len(at.get("download_button")) == 4  # mask + overlay per model


def test_upload_segments_and_level_switch_changes_the_mask(app_dirs):
    at = run_app()
    at.file_uploader(key="segment_uploads").set_value(
        ("street.png", _png(Image.fromarray(street())), "image/png")
    ).run()
    assert not at.exception and not at.error
    assert at.get("image")[0].captions == ["photo · 96×48"]
    before = {img.captions[0].split(" · ")[0]: img.value for img in model_images(at)}
    assert set(before) == {"unet", "unetpp"}

    at.radio(key=f"segment_mode::{app_dirs['bundled'] / 'unetpp.safetensors'}").set_value(
        "accurate"
    ).run()
    before = {img.captions[0].split(" · ")[0]: img.value for img in model_images(at)}
    level = at.slider(key=f"segment_level::{app_dirs['bundled'] / 'unetpp.safetensors'}")
    level.set_value(1).run()
    assert not at.exception
    after = {img.captions[0].split(" · ")[0]: img for img in model_images(at)}
    assert "fast" not in after["unetpp"].captions[0] and "L1" in after["unetpp"].captions[0]
    assert after["unetpp"].value != before["unetpp"]  # another mask
    assert after["unet"].value == before["unet"]  # the U-Net is untouched

    mode = at.radio(key=f"segment_mode::{app_dirs['bundled'] / 'unetpp.safetensors'}")
    mode.set_value("fast").run()
    captions = [img.captions[0] for img in model_images(at)]
    index = next(i for i, caption in enumerate(captions) if caption.startswith("unetpp"))
    assert "fast L1" in captions[index]
    # The metrics row shows the level's cost and its validation mIoU from the metadata.
    table = [m.value for m in at.markdown if m.value.startswith("| params")]
    assert len(table) == 2 and " ms |" in table[index]


def test_colour_mask_view(app_dirs):
    at = run_app()
    overlay = model_images(at)[0].value
    at.radio(key="segment_view").set_value("mask").run()
    assert not at.exception and model_images(at)[0].value != overlay


def test_bad_uploads_get_one_error_each_and_good_ones_still_segment(app_dirs):
    jpeg = _png(Image.fromarray(street(64, 128)), "JPEG")
    uploads = [
        ("notes.png", b"these are not pixels", "image/png"),
        ("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"),
        ("dot.png", _png(Image.new("RGB", (1, 1))), "image/png"),
        ("bomb.png", bomb_png(), "image/png"),
        ("good.png", _png(Image.fromarray(street())), "image/png"),
    ]
    at = run_app()
    at.file_uploader(key="segment_uploads").set_value(uploads).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 4, errors
    for name, message in zip(["notes.png", "cut.jpg", "dot.png", "bomb.png"], errors, strict=True):
        assert message.startswith(name), message
    assert "not an image" in errors[0] and "truncated" in errors[1]
    assert "1x1" in errors[2] and "too large" in errors[3]
    assert at.get("image")[0].captions == ["photo · 96×48"]  # good.png
    assert len(model_images(at)) == 2


def test_unusual_but_valid_photos_all_segment(app_dirs):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    ramp = (np.arange(48 * 96, dtype=np.uint32).reshape(48, 96) * 13 % 65536).astype(np.uint16)
    rgba = np.dstack([street(), np.full((48, 96), 128, np.uint8)])
    uploads = {
        "deep.png": _png(Image.fromarray(ramp)),  # 16-bit grayscale
        "print.jpg": _png(Image.fromarray(street()).convert("CMYK"), "JPEG"),
        "alpha.png": _png(Image.fromarray(rgba, "RGBA")),
        "grey.png": _png(Image.fromarray(street()).convert("L")),
        "phone.jpg": _png(Image.fromarray(street()), "JPEG", exif=exif.tobytes()),
    }
    at = run_app()
    at.file_uploader(key="segment_uploads").set_value(
        [(name, data, "image/png") for name, data in uploads.items()]
    ).run()
    assert not at.exception and not at.error
    assert at.radio(key="segment_photo").options == list(uploads)
    file_ids = {f.name: f.file_id for f in at.file_uploader(key="segment_uploads").value}
    for name in uploads:
        at.radio(key="segment_photo").set_value(file_ids[name]).run()
        assert not at.exception and not at.error, name
        expected = "48×96" if name == "phone.jpg" else "96×48"  # EXIF orientation applied
        assert at.get("image")[0].captions == [f"photo · {expected}"], name
        assert len(model_images(at)) == 2, name


def test_broken_checkpoint_shows_its_error_and_the_others_still_work(app_dirs):
    unet = load_checkpoint(app_dirs["bundled"] / "unet.safetensors")
    wrong = dict(unet.metadata, model="unetpp")  # U-Net weights under a U-Net++ label
    run = app_dirs["runs"] / "broken"
    save_checkpoint(run / "best.safetensors", unet.model, wrong)
    at = run_app()
    at.multiselect(key="segment_checkpoints").set_value(
        [str(app_dirs["bundled"] / "unet.safetensors"), str(run / "best.safetensors")]
    ).run()
    assert not at.exception
    assert len(at.error) == 1 and "weights do not fit" in at.error[0].value
    assert [img.captions[0].split(" · ")[0] for img in model_images(at)] == ["unet"]


def test_no_checkpoints_prompts_to_train(no_checkpoints):
    at = run_app()
    assert not at.exception
    assert "No checkpoints yet" in at.info[0].value
    assert not at.get("image")
    links = at.get("page_link")
    if (REPO / "pages" / "train.py").is_file():  # the Train page is another engineer's
        assert [(link.proto.page, link.value) for link in links] == [("train", "Train a model")]


def test_choices_survive_a_visit_to_another_page(app_dirs):
    unetpp = str(app_dirs["bundled"] / "unetpp.safetensors")
    at = run_app()
    at.multiselect(key="segment_checkpoints").set_value([unetpp]).run()
    at.slider(key=f"segment_level::{unetpp}").set_value(2).run()
    at.radio(key="segment_view").set_value("mask").run()
    at.switch_page("pages/checkpoints.py").run()
    at.switch_page("pages/segment.py").run()
    assert not at.exception
    assert at.multiselect(key="segment_checkpoints").value == [unetpp]
    assert at.slider(key=f"segment_level::{unetpp}").value == 2
    assert at.radio(key="segment_view").value == "mask"
    assert len(model_images(at)) == 1
    at.multiselect(key="segment_checkpoints").set_value([]).run()
    assert not model_images(at) and "Pick at least one" in at.info[0].value


def test_default_checkpoints_prefer_bundled_then_newest_per_architecture():
    from segdemo_app.segment import default_checkpoints

    def row(path, model, created, bundled=False, miou=None):
        return {"path": path, "model": model, "created": created, "bundled": bundled, "miou": miou}

    runs = [
        row("a/last", "unet", "2026-01-03"),
        row("a/best", "unet", "2026-01-03"),
        row("b/best", "unetpp", "2026-01-02"),
        row("c/best", "unet", "2026-01-01"),
    ]
    assert default_checkpoints(runs) == ["a/best", "b/best"]
    assert default_checkpoints([*runs, row("x", "unet", None, bundled=True)]) == ["x"]
    assert default_checkpoints(runs[:2]) == ["a/best", "a/last"]
    bundled = [
        row("unet", "unet", None, True, 0.30),
        row("flagship", "unetpp_ds", None, True, 0.55),
        row("old", "unet", None, True),
        row("unetpp", "unetpp", None, True, 0.33),
    ]
    assert default_checkpoints(bundled) == ["flagship", "unetpp", "unet", "old"]
    # A binary road model scores far higher on its own task; the 19-class models still lead.
    road = {**row("road", "unet", None, True, 0.90), "num_classes": 2}
    nineteen = [{**r, "num_classes": 19} for r in bundled]
    assert default_checkpoints([road, *nineteen]) == ["flagship", "unetpp", "unet", "old"]
    assert default_checkpoints([road]) == ["road"]


def test_pretrained_flagship_kind_of_checkpoint_prunes_live(app_dirs):
    """A U-Net++ on the EfficientNet-Lite0 encoder (the flagship's architecture, fp16 on
    disk like the bundled file) segments and switches mode and level live."""
    import torch

    from segdemo.checkpoints import build_metadata
    from segdemo.labels import get_label_set
    from segdemo.models import create_model

    torch.manual_seed(0)
    model = create_model("unetpp_ds", 19, encoder="timm-tf_efficientnet_lite0").eval()
    meta = build_metadata(model, get_label_set("cityscapes19"), (64, 64), model.normalization)
    path = app_dirs["runs"] / "flagship" / "best.safetensors"
    save_checkpoint(path, model, meta, dtype=torch.float16)
    at = run_app()
    at.multiselect(key="segment_checkpoints").set_value([str(path)]).run()
    assert not at.exception and not at.error
    accurate = model_images(at)[0]
    assert accurate.captions[0].startswith("unetpp_ds · accurate L4")
    at.slider(key=f"segment_level::{path}").set_value(1).run()
    at.radio(key=f"segment_mode::{path}").set_value("fast").run()
    assert not at.exception and not at.error
    pruned = model_images(at)[0]
    assert "fast L1" in pruned.captions[0] and pruned.value != accurate.value


def test_default_mode_is_the_better_one_at_the_full_level():
    from segdemo_app.common import default_mode

    def meta(fast, accurate):
        levels = {"fast": {"4": {"miou": fast}}, "accurate": {"4": {"miou": accurate}}}
        return {"metrics": {"best": {"miou": accurate, "per_level": levels}}}

    assert default_mode(meta(0.36, 0.33), 4) == "fast"
    assert default_mode(meta(0.30, 0.33), 4) == "accurate"
    assert default_mode(meta(0.33, 0.33), 4) == "accurate"
    assert default_mode(meta(0.36, 0.33), 3) == "accurate"  # no numbers for L3
    assert default_mode({}, 4) == "accurate"


def test_listed_metrics_are_those_of_the_opening_mode():
    # The sidebar and the Checkpoints page show the number the Segment page opens with.
    from segdemo_app.common import stored_metrics

    levels = {
        mode: {str(k): {"miou": score + k / 100, "pixel_accuracy": 0.8} for k in range(1, 5)}
        for mode, score in (("fast", 0.33), ("accurate", 0.30))
    }
    unetpp = {"metrics": {"best": {"miou": 0.34, "per_level": levels}}}
    assert stored_metrics(unetpp) == ({"miou": 0.37, "pixel_accuracy": 0.8}, "fast")
    levels["accurate"]["4"]["miou"] = 0.40
    assert stored_metrics(unetpp) == ({"miou": 0.40, "pixel_accuracy": 0.8}, "accurate")
    unet = {"metrics": {"best": {"miou": 0.29}}}
    assert stored_metrics(unet) == ({"miou": 0.29}, None)
    assert stored_metrics({}) == ({}, None)
