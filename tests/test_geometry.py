"""Geometry-aware inference: the one policy that sizes a photo for a model, the masks it
gives at the photo's resolution, the training geometry checkpoints record, and the
``geometry`` shift that scores four camera shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from checkpoint_cases import tiny_parts, with_field, write
from PIL import Image

from segdemo import checkpoints
from segdemo.cli import main
from segdemo.data import open_dataset
from segdemo.evaluate import evaluate_per_image, evaluation_mask
from segdemo.geometry import (
    POLICIES,
    Plan,
    TrainingFrames,
    labels_at,
    plan,
    training_frames_of,
    upsampled_rows,
    windowed,
)
from segdemo.inference import Segmenter, prepare_model
from segdemo.metrics import confusion_per_image
from segdemo.shift import GEOMETRY_SHAPES, Shift, geometry_view
from segdemo.tta import TTA

PAIRS = TrainingFrames.pairs((256, 256))


# ---------------------------------------------------------------------------- the policy


def test_squeeze_runs_every_photo_at_the_training_size():
    for photo in [(480, 640), (256, 845), (3000, 4000), (20, 20)]:
        assert plan(photo, PAIRS, "squeeze").run_size == (256, 256)


def test_aspect_keeps_the_training_frames_pixel_aspect_at_the_training_height():
    assert PAIRS.pixel_aspect == 2.0 and PAIRS.scene_aspect == 2.0
    assert plan((480, 640), PAIRS, "aspect").run_size == (256, 171)  # 4:3
    assert plan((256, 845), PAIRS, "aspect").run_size == (256, 422)  # 3.3:1
    assert plan((1024, 2048), PAIRS, "aspect").run_size == (256, 256)  # the frames' own
    assert plan((2048, 4096), PAIRS, "aspect").run_size == (256, 256)  # any resolution
    # a pairs image is a squeezed 2:1 frame: it runs as it was trained, unchanged
    assert plan((256, 256), PAIRS, "aspect", pixel_aspect=2.0).run_size == (256, 256)
    # a model trained on unsqueezed 2:1 frames at 128x256 has square pixels
    frames = TrainingFrames((128, 256), 1.0)
    assert plan((480, 640), frames, "aspect").run_size == (128, 171)


def test_slide_covers_a_wide_photo_with_overlapping_windows_of_the_training_size():
    wide = plan((256, 1300), PAIRS, "slide")
    assert wide.run_size == (256, 650) and wide.window == (256, 256)
    starts = [x for _, x in wide.windows]
    assert starts[0] == 0 and starts[-1] == 650 - 256  # the last window is flush
    assert all(b - a <= 256 for a, b in zip(starts, starts[1:], strict=False))  # no gaps
    assert all(b - a < 256 for a, b in zip(starts, starts[1:], strict=False))  # overlaps
    assert wide.describe() == "256×650 in 4 windows of 256×256"
    assert plan((480, 640), PAIRS, "slide").window is None  # narrower than a window


def test_blend_adds_the_squeezed_view_to_the_aspect_one():
    wide = plan((256, 845), PAIRS, "blend")
    assert wide.run_size == (256, 422) and wide.also == ((256, 256),)
    narrow = plan((480, 640), PAIRS, "blend")
    assert narrow.run_size == (256, 256) and narrow.also == ((256, 171),)
    assert plan((1024, 2048), PAIRS, "blend").also == ()  # the frames' own shape: one pass


def test_an_unknown_policy_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="unknown geometry policy 'fit'; valid: squeeze, "):
        plan((10, 10), PAIRS, "fit")


def test_windows_average_the_probabilities_where_they_overlap():
    images = torch.arange(2 * 3 * 4 * 10, dtype=torch.float32).view(2, 3, 4, 10)
    slide = Plan("slide", (4, 10), (4, 10), (4, 4), ((0, 0), (0, 3), (0, 6)))

    def predict(x):  # the window's own pixel values as two "class" scores
        return {"k": x[:, :2] * 1.0}

    out = windowed(predict, images, slide)["k"]
    torch.testing.assert_close(out, images[:, :2])  # every window agrees: the average is it
    counts = windowed(lambda x: {"k": torch.ones(2, 1, 4, 4)}, images, slide)["k"]
    torch.testing.assert_close(counts, torch.ones(2, 1, 4, 10))


def test_probabilities_are_upsampled_bilinearly_in_strips_as_in_one_piece():
    scores = torch.randn(2, 5, 7, 9)
    full = F.interpolate(scores, size=(40, 33), mode="bilinear", align_corners=False)
    strips = torch.cat([upsampled_rows(scores, (40, 33), a, min(40, a + 6)) for a in range(0, 40, 6)], 2)  # fmt: skip
    torch.testing.assert_close(strips, full, atol=1e-5, rtol=1e-5)
    labels = labels_at(scores, (40, 33), strip_bytes=1)  # one row at a time
    assert labels.dtype == torch.uint8 and labels.shape == (2, 40, 33)
    assert (labels == full.argmax(1).to(torch.uint8)).float().mean() > 0.999
    assert torch.equal(labels_at(scores, (40, 33)), full.argmax(1).to(torch.uint8))


def test_masks_have_smooth_edges_not_the_staircase_of_upscaled_labels():
    # two classes split by a diagonal at 8x8, shown at 64x64: bilinear probabilities give a
    # diagonal edge, nearest labels a staircase of 8-pixel steps
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    score = (xx - yy)[None, None]
    scores = torch.cat([-score, score], 1)
    smooth = labels_at(scores, (64, 64))[0]
    edge = [int(row.nonzero()[0]) if row.any() else 64 for row in smooth[8:56]]  # off borders
    steps = {b - a for a, b in zip(edge, edge[1:], strict=False)}
    assert steps <= {0, 1, 2}  # the edge moves a pixel or two per row, never by a block


# ------------------------------------------------------------------ the training geometry


def test_checkpoints_without_training_frames_get_the_pairs_values():
    frames = TrainingFrames.of_checkpoint({"input_size": [256, 256]})
    assert frames == TrainingFrames((256, 256), 2.0)
    assert TrainingFrames.of_checkpoint({"input_size": [128, 256]}).pixel_aspect == 1.0
    stored = {"input_size": [256, 256], "training_frames": {"input_size": [128, 256],
                                                            "pixel_aspect": 1.5}}  # fmt: skip
    assert TrainingFrames.of_checkpoint(stored) == TrainingFrames((128, 256), 1.5)


def test_training_frames_are_checked_as_untrusted_metadata(tmp_path):
    tensors, meta = tiny_parts()
    good = write(tmp_path / "good.safetensors", with_field(
        meta, "training_frames", {"input_size": [32, 32], "pixel_aspect": 2.0}), tensors)  # fmt: skip
    loaded = checkpoints.load_checkpoint(good)
    assert TrainingFrames.of_checkpoint(loaded.metadata) == TrainingFrames((32, 32), 2.0)
    for value, problem in [
        ({"input_size": [32, 32], "pixel_aspect": 1e9}, "pixel_aspect should be at most 10"),
        ({"input_size": [32, 32], "pixel_aspect": "2"}, "pixel_aspect should be a number"),
        ({"input_size": [32], "pixel_aspect": 2.0}, "training_frames.input_size"),
        ({"input_size": [32, 32]}, "lacks training_frames.pixel_aspect"),
    ]:
        bad = write(tmp_path / "bad.safetensors", with_field(meta, "training_frames", value),
                    tensors)  # fmt: skip
        with pytest.raises(checkpoints.CheckpointError, match=problem):
            checkpoints.load_checkpoint(bad)


def test_training_records_the_frames_geometry_of_its_data(tmp_path):
    synthetic = open_dataset("synthetic", "train", length=2, native_size=(40, 120))
    assert training_frames_of(synthetic, (32, 32)) == TrainingFrames((32, 32), 3.0)
    (tmp_path / "val").mkdir()
    pair = np.zeros((16, 32, 3), np.uint8)  # photo left, label right, 16x16 each
    Image.fromarray(pair).save(tmp_path / "val" / "1.jpg")
    pairs = open_dataset(tmp_path, "val", fmt="pairs")
    assert pairs.pixel_aspect == 2.0
    assert training_frames_of(pairs, (16, 16)) == TrainingFrames((16, 16), 2.0)


# ----------------------------------------------------------------------- one mask everywhere


def _wide_photo() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (30, 150, 3), dtype=np.uint8)  # 5:1, two windows under slide


@pytest.fixture
def untrained(tmp_path):
    """A randomly initialised tiny U-Net checkpoint (32x32): its masks vary with the input."""
    tensors, meta = tiny_parts()
    head = checkpoints.MODEL_PREFIX + "head"
    tensors[f"{head}.weight"] = tensors[f"{head}.weight"] * 20  # classes that vary with the photo
    tensors[f"{head}.bias"] = torch.zeros_like(tensors[f"{head}.bias"])
    return write(tmp_path / "untrained.safetensors", meta, tensors)


@pytest.mark.parametrize("policy", POLICIES)
def test_the_app_predict_and_eval_give_the_same_mask(policy, untrained, tmp_path):
    from segdemo_app import segment as ui

    path = untrained
    ckpt = checkpoints.load_checkpoint(path)
    model, device, precision = prepare_model(ckpt.model, "cpu", "fp32")
    photo = _wide_photo()
    app = ui.segmenter("unet", ckpt, device, precision, None, None, geometry=policy)(photo)
    Image.fromarray(photo).save(tmp_path / "wide.png")
    assert main(["predict", "--ckpt", str(path), str(tmp_path / "wide.png"), "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--precision", "fp32",
                 "--geometry", policy]) == 0  # fmt: skip
    predicted = np.asarray(Image.open(tmp_path / "out" / "wide_trainids.png"))
    frames = TrainingFrames.of_checkpoint(ckpt.metadata)
    scored = evaluation_mask(model, photo, ckpt.input_size, (None, None), "cpu", "fp32",
                             policy=policy, frames=frames)  # fmt: skip
    assert app.shape == photo.shape[:2] and len(np.unique(app)) > 1
    np.testing.assert_array_equal(predicted, app)
    np.testing.assert_array_equal(scored, app)


def test_policies_change_the_mask_of_a_wide_photo(untrained):
    ckpt = checkpoints.load_checkpoint(untrained)
    run = Segmenter("unet", ckpt.model, ckpt.input_size, ckpt.label_set, "cpu", "fp32")
    masks = {p: Segmenter(**{**run.__dict__, "geometry": p})(_wide_photo()) for p in POLICIES}
    assert not np.array_equal(masks["squeeze"], masks["aspect"])
    assert run.plan((30, 150)).run_size == (32, 32)  # the pairs' 2:1 frames at 32x32
    assert Segmenter(**{**run.__dict__, "geometry": "aspect"}).plan((30, 150)).run_size == (32, 80)


def test_tta_scales_run_inside_the_policy(untrained):
    ckpt = checkpoints.load_checkpoint(untrained)
    base = dict(name="unet", model=ckpt.model, input_size=ckpt.input_size,
                label_set=ckpt.label_set, device="cpu", precision="fp32", geometry="slide")  # fmt: skip
    plain = Segmenter(**base)(_wide_photo())
    augmented = Segmenter(**base, tta=TTA.parse("flip,0.75"))(_wide_photo())
    assert augmented.shape == plain.shape and not np.array_equal(augmented, plain)


# --------------------------------------------------------------------- the geometry shift


def _blocks(height: int = 128, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A photo of 16x16 blocks whose red channel is 20 x the block's class (0..11)."""
    yy, xx = np.mgrid[0:height, 0:width]
    labels = ((yy // 16) * 5 + (xx // 16)) % 12
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = labels * 20
    return image, labels.astype(np.uint8)


def test_geometry_views_are_deterministic_per_image_and_shape():
    image, mask = _blocks()
    first = geometry_view(image, mask, 3, "4:3", pixel_aspect=2.0)
    again = Shift("geometry").view(image, mask, 3, 0, pixel_aspect=2.0)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert again[2] == 1.0  # the views have square pixels
    others = [geometry_view(image, mask, i, "4:3", 2.0)[0] for i in range(4, 10)]
    assert any(o.shape != first[0].shape or not np.array_equal(o, first[0]) for o in others)


@pytest.mark.parametrize("shape", list(GEOMETRY_SHAPES))
def test_geometry_views_have_their_shape_and_aligned_masks(shape):
    image, mask = _blocks()
    for index in range(6):
        view, view_mask = geometry_view(image, mask, index, shape, pixel_aspect=2.0)
        height, width = view.shape[:2]
        assert view_mask.shape == (height, width) and view.dtype == np.uint8
        assert (
            abs(width / height - GEOMETRY_SHAPES[shape])
            < 0.05 * GEOMETRY_SHAPES[shape] + 2 / height
        )
        # the un-squeezed 128x256 frame, cut and scaled by 0.5..2
        crop_h = min(128, round(256 / GEOMETRY_SHAPES[shape]))
        assert 0.5 * crop_h - 1 <= height <= 2 * crop_h + 1
        agree = np.round(view[..., 0] / 20) == view_mask
        assert agree.mean() > 0.9  # only pixels on block edges are blended
        shifted = np.round(view[..., 0] / 20)[:, 6:] == view_mask[:, :-6]
        assert shifted.mean() < agree.mean() - 0.05  # a misaligned mask would show


def test_geometry_scoring_equals_segment_then_score_view_by_view():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 19, 3, padding=1).eval()
    model.normalization = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    dataset = open_dataset(
        "synthetic", "val", length=2, native_size=(32, 64), normalization=model.normalization
    )
    frames = TrainingFrames((32, 32), 2.0)
    evaluation = evaluate_per_image(
        model, dataset, input_size=(32, 32), device="cpu", precision="fp32",
        shift="geometry", geometry_policy="slide", frames=frames,
    )  # fmt: skip
    assert evaluation.images == 2 * len(GEOMETRY_SHAPES)
    assert evaluation.view_names == list(GEOMETRY_SHAPES)
    run = Segmenter("conv", model, (32, 32), dataset.label_set, "cpu", "fp32",
                    geometry="slide", frames=frames)  # fmt: skip
    for position, view_name in enumerate(evaluation.views):
        index = position // len(GEOMETRY_SHAPES)
        image, mask = dataset.read_raw(index)
        view, view_mask = geometry_view(image, mask, index, view_name, pixel_aspect=1.0)
        pred = run(view)
        expected = confusion_per_image(
            torch.from_numpy(pred.astype(np.int64))[None],
            torch.from_numpy(view_mask.astype(np.int64))[None], 19,
        )[0]  # fmt: skip
        np.testing.assert_array_equal(evaluation.per_image()[position], expected.numpy())
    one = evaluation.view("3.3:1")
    assert one.images == 2 and one.views == ["3.3:1"] * 2
    summary = evaluation.summary(resamples=20)
    assert set(summary["views"]) == set(GEOMETRY_SHAPES)


# ------------------------------------------------------------ training robust to geometry


def _geometric_steps(size=(32, 32)):
    import albumentations as A

    from segdemo.data.transforms import build_transform

    pipeline = build_transform(size, augment=True, geometry="aspect_scale")
    kinds = (A.HorizontalFlip, A.Affine, A.RandomScale, A.PadIfNeeded, A.RandomCrop)
    return pipeline, A.Compose([t for t in pipeline if isinstance(t, kinds)])


def test_the_aspect_scale_augmentation_keeps_shapes_and_aligned_masks():
    from segdemo.data.transforms import ASPECT_STRETCH, OBJECT_SCALE

    pipeline, geometric = _geometric_steps()
    affine = next(t for t in geometric if type(t).__name__ == "Affine")
    assert tuple(affine.scale["x"]) == pytest.approx(ASPECT_STRETCH)  # 3.5:1 .. 1:1 scenes
    assert pytest.approx((2 / 3.5, 2.0)) == ASPECT_STRETCH and OBJECT_SCALE == (0.5, 2.0)
    image, mask = _blocks(32, 32)
    padded = 0
    for seed in range(40):
        pipeline.set_random_seed(seed)
        full = pipeline(image=image, mask=mask)
        assert full["image"].shape == (32, 32, 3) and full["mask"].shape == (32, 32)
        geometric.set_random_seed(seed)
        out = geometric(image=image, mask=mask)
        labelled = out["mask"] != 255
        padded += int((~labelled).any())
        agree = np.round(out["image"][..., 0] / 20) == out["mask"]
        assert agree[labelled].mean() > 0.8  # only block edges are blended
    assert 0 < padded < 40  # zooming out pads some inputs (ignored), not all


def test_the_geometry_augmentation_is_a_setting_stored_with_the_run():
    from segdemo.config import TrainConfig, to_arguments

    config = TrainConfig(geometry_augment="aspect_scale")
    assert config.to_dict()["geometry_augment"] == "aspect_scale"
    assert "--geometry-augment" in to_arguments(config)
    with pytest.raises(ValueError, match="--geometry-augment must be one of crop, aspect_scale"):
        TrainConfig(geometry_augment="wild")
    with pytest.raises(ValueError, match="both scale frames"):
        TrainConfig(geometry_augment="aspect_scale", scale_range=(0.5, 2.0))
