"""The Segment page (AppTest): masks side by side, live pruning levels, every kind of upload."""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from markdown_text import shown
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


MODEL_CAPTION = re.compile(r"^[\w/.-]+( · (fast|accurate) L\d)?( \+ TTA)? · (\d+ ms|measuring…)$")


def model_images(at: AppTest) -> list:
    """The models' mask/overlay images ("unetpp · fast L2 · 12 ms"), in page order."""
    return [img for img in at.get("image") if MODEL_CAPTION.match(img.captions[0])]


def test_example_gallery_shows_one_mask_per_model(app_dirs):
    at = run_app()
    assert not at.exception and not at.error
    from segdemo.inference import default_mode
    from segdemo_app.common import stored_metrics

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
    legends = [m.value for m in at.markdown if "background:#" in m.value and "%" in m.value]
    assert len(legends) == 2  # the classes of each mask with their shares
    assert len(at.get("download_button")) == 4  # mask + overlay per model
    # The gallery's synthetic scenes come with their exact ground truth: an error map and
    # the photo's mIoU per model, and where the two models differ.
    errors = [img.captions[0] for img in at.get("image") if img.captions[0].startswith("errors")]
    assert len(errors) == 2 and all(re.search(r"mIoU \d\.\d{3}", c) for c in errors)
    assert any(c.startswith("A = ") for c in (img.captions[0] for img in at.get("image")))
    assert any("only A right" in m.value for m in at.markdown)


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
    assert len(table) == 2 and " warm runs" in table[index]


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
    errors = [shown(e.value) for e in at.error]
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


def test_broken_checkpoint_is_not_offered_and_the_others_still_work(app_dirs):
    unet = load_checkpoint(app_dirs["bundled"] / "unet.safetensors")
    wrong = dict(unet.metadata, model="unetpp")  # U-Net weights under a U-Net++ label
    run = app_dirs["runs"] / "broken"
    save_checkpoint(run / "best.safetensors", unet.model, wrong)
    at = run_app()
    assert not at.exception and not at.error
    assert str(run / "best.safetensors") not in at.multiselect(key="segment_checkpoints").options
    assert len(model_images(at)) == 2


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
    from segdemo_app.common import default_checkpoints

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
    # Named by its checkpoint: a run's best checkpoint by its run folder.
    assert accurate.captions[0].startswith("flagship/best · accurate L4")
    at.slider(key=f"segment_level::{path}").set_value(1).run()
    at.radio(key=f"segment_mode::{path}").set_value("fast").run()
    assert not at.exception and not at.error
    pruned = model_images(at)[0]
    assert "fast L1" in pruned.captions[0] and pruned.value != accurate.value


def test_default_mode_is_the_better_one_at_the_full_level():
    from segdemo.inference import default_mode

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


# --- the large view, class controls, levels, ground truth, camera, batch, video -------------


def unetpp_path(app_dirs) -> str:
    return str(app_dirs["bundled"] / "unetpp.safetensors")


def image_of(at: AppTest, model: str):
    return next(img for img in model_images(at) if img.captions[0].split(" · ")[0] == model)


def present_classes(at: AppTest) -> list[list[str]]:
    """Class names in each model's legend, most frequent first (models in page order)."""
    legends = [m.value for m in at.markdown if "background:#" in m.value and "%" in m.value]
    return [re.findall(r"</span>([^<]+?) [\d.<]+%</span>", legend) for legend in legends]


def test_class_toggles_and_highlight_change_the_rendered_pictures(app_dirs):
    from segdemo.labels import CITYSCAPES19

    at = run_app()
    at.radio(key="segment_view").set_value("mask").run()
    present = present_classes(at)[0]
    first = model_images(at)[0].captions[0].split(" · ")[0]
    mask = image_of(at, first).value
    absent = next(n for n in CITYSCAPES19.names if n not in present)
    # Hiding a class the mask does not hold changes nothing; hiding one it holds does,
    # and showing it again gives back the same picture.
    at.multiselect(key="segment_hidden").set_value([absent]).run()
    assert image_of(at, first).value == mask
    at.multiselect(key="segment_hidden").set_value([present[0]]).run()
    assert not at.exception and image_of(at, first).value != mask
    legend = next(m.value for m in at.markdown if "line-through" in m.value)
    assert present[0] in legend  # the legend keeps the class, struck through
    at.multiselect(key="segment_hidden").set_value([]).run()
    assert image_of(at, first).value == mask

    at.radio(key="segment_view").set_value("overlay").run()
    overlay = image_of(at, first).value
    at.multiselect(key="segment_hidden").set_value([present[0]]).run()
    assert image_of(at, first).value != overlay
    at.multiselect(key="segment_hidden").set_value([]).run()
    # Highlighting a class fades every other pixel: with a class the mask lacks, all of them.
    at.selectbox(key="segment_highlight").set_value(absent).run()
    assert not at.exception and image_of(at, first).value != overlay
    at.selectbox(key="segment_highlight").set_value(None).run()
    assert image_of(at, first).value == overlay


def test_level_diagram_marks_exactly_the_computed_nodes(app_dirs):
    path = unetpp_path(app_dirs)
    at = run_app()
    at.multiselect(key="segment_checkpoints").set_value([path]).run()
    for mode in ("fast", "accurate"):
        at.radio(key=f"segment_mode::{path}").set_value(mode).run()
        for level in (1, 2, 3, 4):
            at.slider(key=f"segment_level::{path}").set_value(level).run()
            assert not at.exception
            (svg,) = [m.value for m in at.markdown if "data-node" in m.value]
            states = dict(re.findall(r'data-node="(\d,\d)" data-state="(\w+)"', svg))
            assert len(states) == 15  # X^{i,j}, i + j <= 4
            for node, state in states.items():
                i, j = map(int, node.split(","))
                assert state == ("computed" if i + j <= level else "pruned"), (mode, level, node)
            heads = dict(re.findall(r'data-head="(\d)" data-state="(\w+)"', svg))
            used = {level} if mode == "fast" else set(range(1, level + 1))
            assert heads == {str(j): "used" if j in used else "unused" for j in range(1, 5)}
            assert f"{mode} L{level}" in image_of(at, "unetpp").captions[0]


def test_latency_shown_is_the_median_of_warm_runs(app_dirs):
    from segdemo_app.common import load_model
    from segdemo_app.segment import latency_log, setting_key

    path = unetpp_path(app_dirs)
    at = run_app()
    at.slider(key=f"segment_level::{path}").set_value(3).run()
    mode = at.radio(key=f"segment_mode::{path}").value
    caption = image_of(at, "unetpp").captions[0]
    shown = float(re.search(r" · (\d+) ms$", caption).group(1))
    checkpoint, device, precision = load_model(path)
    key = setting_key(checkpoint, device, precision, mode, 3)
    # The first run of a setting (its warm-up) is never what the page shows.
    # ... and one warm run does not stand alone: the figure rests on at least three.
    assert latency_log().warm_runs(key) >= 3
    assert shown == round(latency_log().median_ms(key))
    table = next(
        m.value for m in at.markdown if m.value.startswith("| params") and "L3" not in m.value
    )
    assert re.search(r"\| latency \| \d+ ms ± \d+ \(\d+ warm runs(; CPU busy)?\) \|", table)


def test_before_after_view_switches_sides(app_dirs):
    at = run_app()
    unetpp, unet = unetpp_path(app_dirs), str(app_dirs["bundled"] / "unet.safetensors")
    assert at.selectbox(key="segment_left").value == "photo"
    assert at.selectbox(key="segment_right").value in (unet, unetpp)
    at.selectbox(key="segment_left").set_value(unet).run()
    at.selectbox(key="segment_right").set_value(unetpp).run()
    assert not at.exception and not at.error
    # The two models on the view are the pair of the comparison map.
    assert any(img.captions[0].startswith("A = unet, B = unetpp") for img in at.get("image"))


def test_ground_truth_upload_gives_error_maps_and_miou(app_dirs):
    from segdemo.labels import CITYSCAPES19

    truth = np.zeros((48, 96), np.uint8)
    truth[:16] = 10  # sky
    truth[16:32] = 2  # building
    truth[32:] = 0  # road
    at = run_app()
    at.file_uploader(key="segment_uploads").set_value(
        ("street.png", _png(Image.fromarray(street())), "image/png")
    ).run()
    photo_key = at.session_state["segment_photo"]
    assert not [img for img in at.get("image") if img.captions[0].startswith("errors")]
    at.file_uploader(key=f"segment_truth::{photo_key}").set_value(
        ("street_gt.png", _png(Image.fromarray(CITYSCAPES19.colorize(truth))), "image/png")
    ).run()
    assert not at.exception and not at.error
    errors = [img.captions[0] for img in at.get("image") if img.captions[0].startswith("errors")]
    assert len(errors) == 2
    # A train-id PNG of the same classes scores the same.
    at.file_uploader(key=f"segment_truth::{photo_key}").set_value(
        ("street_ids.png", _png(Image.fromarray(truth)), "image/png")
    ).run()
    again = [img.captions[0] for img in at.get("image") if img.captions[0].startswith("errors")]
    assert again == errors
    assert "ground truth · train ids" in [img.captions[0] for img in at.get("image")]
    # Official Cityscapes label ids (road 7, building 11, sky 23) are told from train ids
    # by their values, converted, named, and score the same.
    label_ids = np.choose(np.searchsorted([0, 2, 10], truth), [7, 11, 23]).astype(np.uint8)
    at.file_uploader(key=f"segment_truth::{photo_key}").set_value(
        ("aachen_gtFine_labelIds.png", _png(Image.fromarray(label_ids)), "image/png")
    ).run()
    assert not at.exception and not at.error
    again = [img.captions[0] for img in at.get("image") if img.captions[0].startswith("errors")]
    assert again == errors
    assert "ground truth · Cityscapes label ids" in [img.captions[0] for img in at.get("image")]
    # A mask of another shape is refused in one sentence.
    at.file_uploader(key=f"segment_truth::{photo_key}").set_value(
        ("square.png", _png(Image.fromarray(truth[:48, :48])), "image/png")
    ).run()
    assert not at.exception
    assert (
        len(at.error) == 1
        and shown(at.error[0].value) == "square.png is 48x48 but the photo is 96x48"
    )
    # The photo itself, uploaded as its mask by mistake, fits no encoding: one sentence.
    at.file_uploader(key=f"segment_truth::{photo_key}").set_value(
        ("street.png", _png(Image.fromarray(street())), "image/png")
    ).run()
    assert not at.exception and len(at.error) == 1
    assert shown(at.error[0].value).startswith("street.png fits no ground-truth format")


def test_camera_photo_is_segmented_like_an_upload(app_dirs):
    at = run_app()
    at.radio(key="segment_source").set_value("camera").run()
    assert not model_images(at) and "Allow the camera" in at.info[0].value
    at.camera_input(key="segment_camera").set_value(
        ("shot.jpg", _png(Image.fromarray(street(60, 80)), "JPEG"), "image/jpeg")
    ).run()
    assert not at.exception and not at.error
    assert at.get("image")[0].captions == ["photo · 80×60"]
    assert len(model_images(at)) == 2


def test_dataset_image_comes_with_its_ground_truth(app_dirs):
    at = run_app()
    at.radio(key="segment_source").set_value("dataset").run()
    at.number_input(key="segment_dataset_index").set_value(3).run()
    assert not at.exception and not at.error
    assert len(model_images(at)) == 2
    assert len([i for i in at.get("image") if i.captions[0].startswith("errors")]) == 2


def test_batch_zip_holds_every_photo_of_every_model(app_dirs):
    uploads = [
        ("street.png", _png(Image.fromarray(street())), "image/png"),
        ("street.jpg", _png(Image.fromarray(street(40, 80)), "JPEG"), "image/jpeg"),
        ("other.webp", _png(Image.fromarray(street(32, 64)), "WEBP"), "image/webp"),
    ]
    at = run_app()
    at.file_uploader(key="segment_uploads").set_value(uploads).run()
    unetpp = unetpp_path(app_dirs)
    at.slider(key=f"segment_level::{unetpp}").set_value(2).run()
    mode = at.radio(key=f"segment_mode::{unetpp}").value
    at.button(key="segment_batch_run").click().run()
    assert not at.exception and not at.error
    batch = at.session_state["segment_batch"]
    assert batch["problems"] == []
    names = set(zipfile.ZipFile(io.BytesIO(batch["zip"])).namelist())
    # Two photos called "street" keep apart by their suffix; each model at its setting.
    stems = ["street_png", "street_jpg", "other"]
    kinds = ["trainids", "mask", "overlay", "legend"]
    folders = ["unet", f"unetpp_{mode}-L2"]
    assert names == {f"{f}/{s}_{k}.png" for f in folders for s in stems for k in kinds}
    with zipfile.ZipFile(io.BytesIO(batch["zip"])) as archive:
        ids = np.asarray(Image.open(io.BytesIO(archive.read("unet/street_jpg_trainids.png"))))
    assert ids.shape == (40, 80) and ids.max() < 19
    assert [b.label for b in at.get("download_button") if "ZIP" in b.label]


def test_models_are_named_by_their_checkpoints_everywhere(app_dirs):
    """Checkpoints of one architecture keep apart by their file names (a run's best by its
    run folder, two files of one stem by their folders): in the captions, the comparison
    map and the batch ZIP's folders."""
    import shutil

    unetpp = unetpp_path(app_dirs)
    copies = {
        "city_a": app_dirs["uploaded"] / "city_a.safetensors",
        "exp/best": app_dirs["runs"] / "exp" / "best.safetensors",
        "uploaded/unet": app_dirs["uploaded"] / "unet.safetensors",
    }
    for path in copies.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        source = app_dirs["bundled"] / "unet.safetensors" if "unet" in path.stem else unetpp
        shutil.copyfile(source, path)
    at = run_app()
    sidebar = " ".join(t.value for t in at.sidebar.text)
    assert "bundled/unet (unet)" in sidebar and "uploaded/unet (unet)" in sidebar
    at.multiselect(key="segment_checkpoints").set_value([str(p) for p in copies.values()]).run()
    assert not at.exception and not at.error
    mode = at.radio(key=f"segment_mode::{copies['city_a']}").value
    captions = [img.captions[0] for img in model_images(at)]
    assert [c.rsplit(" · ", 1)[0] for c in captions] == [
        f"city_a · {mode} L4", f"exp/best · {mode} L4", "uploaded/unet"
    ]  # fmt: skip
    image_captions = [img.captions[0] for img in at.get("image")]
    assert f"A = city_a · {mode} L4, B = exp/best · {mode} L4, against the ground truth" in (
        image_captions
    )
    at.file_uploader(key="segment_uploads").set_value(
        ("street.png", _png(Image.fromarray(street())), "image/png")
    ).run()
    at.button(key="segment_batch_run").click().run()
    assert not at.exception and not at.error
    names = zipfile.ZipFile(io.BytesIO(at.session_state["segment_batch"]["zip"])).namelist()
    assert {n.split("/")[0] for n in names} == {
        f"city_a_{mode}-L4", f"exp_best_{mode}-L4", "uploaded_unet"
    }  # fmt: skip


def test_example_clip_is_segmented_into_a_playable_video(app_dirs):
    at = run_app()
    at.radio(key="segment_source").set_value("video").run()
    assert "30 s" in at.caption[0].value and "100 MB" in at.caption[0].value
    at.checkbox(key="segment_video_example").check().run()
    at.button(key="segment_video_run").click().run(timeout=300)
    assert not at.exception and not at.error
    done = at.session_state["segment_video"]
    assert done["data"][:4] == b"\x1a\x45\xdf\xa3"  # a WebM (Matroska) file
    result = done["result"]
    assert result.frames == 40 and result.fps == 10.0
    chosen = at.multiselect(key="segment_checkpoints").value
    assert [m["name"] for m in result.models] == [Path(p).stem for p in chosen]
    assert len(at.get("video")) == 1
    table = next(m.value for m in at.markdown if "frames/s" in m.value)
    assert table.count("\n") == 3  # header, rule, one row per model


def test_a_corrupt_video_gets_one_sentence(app_dirs):
    at = run_app()
    at.radio(key="segment_source").set_value("video").run()
    at.file_uploader(key="segment_video_upload").set_value(
        ("dashcam.mp4", b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100, "video/mp4")
    ).run()
    at.button(key="segment_video_run").click().run()
    assert not at.exception
    assert len(at.error) == 1 and shown(at.error[0].value).startswith("dashcam.mp4 ")
    assert not at.get("video")


def test_tta_toggle_segments_every_model_with_the_averaged_prediction(app_dirs):
    from segdemo.inference import Segmenter
    from segdemo.tta import TTA
    from segdemo_app import common

    at = run_app()
    at.file_uploader(key="segment_uploads").set_value(
        ("street.png", _png(Image.fromarray(street())), "image/png")
    ).run()
    plain = {img.captions[0].split(" · ")[0]: img.value for img in model_images(at)}
    at.toggle(key="segment_tta").set_value(True).run()
    assert not at.exception and not at.error
    captions = [img.captions[0] for img in model_images(at)]
    assert len(captions) == 2 and all(" + TTA · " in c for c in captions), captions
    # The mask shown is the one of the averaged views, as the library computes it.
    path = str(app_dirs["bundled"] / "unet.safetensors")
    # A mask's key ends with the TTA and the engine.
    (result,) = [r for k, r in at.session_state["segment_masks"].items()
                 if k[0] == path and "flip,0.75,1.25" in k]  # fmt: skip
    checkpoint, device, precision = common.load_model(path)
    with_tta = Segmenter("unet", checkpoint.model, tuple(checkpoint.input_size),
                         checkpoint.label_set, device, precision, tta=TTA.parse("default"))  # fmt: skip
    assert (result.mask == with_tta(street())).all()
    # Off again: the plain masks come back from the session's cache.
    at.toggle(key="segment_tta").set_value(False).run()
    again = {img.captions[0].split(" · ")[0]: img.value for img in model_images(at)}
    assert again == plain


def test_the_sidebar_engine_runs_every_model_on_openvino(app_dirs, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("SEGDEMO_CACHE", str(tmp_path))
    at = run_app()
    at.selectbox(key="segment_engine").set_value("openvino").run()
    assert not at.exception and not at.error
    captions = [img.captions[0] for img in at.get("image") if " ms (openvino)" in img.captions[0]
                or "measuring… (openvino)" in img.captions[0]]  # fmt: skip
    assert len(captions) == 2  # both models, each naming its engine beside the latency
    assert any("(openvino) |" in m.value for m in at.markdown)  # the cost table's latency
    assert any((tmp_path / "openvino").iterdir())
