"""Bootstrap intervals and paired comparisons over per-image confusion matrices."""

from __future__ import annotations

import time

import numpy as np
import pytest

from segdemo import stats
from segdemo.metrics import metrics_from_confusion


def _per_image(n: int, classes: int = 5, accuracy: float = 0.7, seed: int = 0) -> np.ndarray:
    """``n`` images of 400 pixels: a prediction right with probability ``accuracy``; class
    frequencies vary from image to image, as in street scenes."""
    rng = np.random.default_rng(seed)
    matrices = np.zeros((n, classes, classes), dtype=np.int32)
    for i in range(n):
        weights = rng.dirichlet(np.ones(classes))
        truth = rng.choice(classes, size=400, p=weights)
        wrong = rng.integers(0, classes, size=400)
        pred = np.where(rng.random(400) < accuracy, truth, wrong)
        np.add.at(matrices[i], (truth, pred), 1)
    return matrices


def test_resample_counts_draw_every_image_count_once_per_slot_and_repeat_with_the_seed():
    counts = stats.resample_counts(7, 50, seed=3)
    assert counts.shape == (50, 7) and (counts.sum(1) == 7).all()
    assert np.array_equal(counts, stats.resample_counts(7, 50, seed=3))
    assert not np.array_equal(counts, stats.resample_counts(7, 50, seed=4))


def test_a_resample_scores_like_the_pooled_matrix_of_its_images():
    per_image = _per_image(6)
    counts = stats.resample_counts(6, 3, seed=0)
    resampled = stats.resampled_confusion(per_image, counts)
    for b in range(3):
        drawn = np.repeat(np.arange(6), counts[b])
        pooled = per_image[drawn].sum(0)
        assert np.array_equal(resampled[b], pooled)
        assert float(stats.scores(resampled[b])["miou"]) == pytest.approx(
            metrics_from_confusion(pooled)["miou"]
        )


def test_bootstrap_intervals_contain_the_estimate_and_match_the_pooled_metrics():
    per_image = _per_image(40)
    names = ["road", "car", "sky", "person", "bus"]
    ci = stats.bootstrap_ci(per_image, class_names=names, resamples=1000, seed=0)
    pooled = metrics_from_confusion(per_image.sum(0), names)
    assert ci["miou"] == pytest.approx(pooled["miou"])
    assert ci["pixel_accuracy"] == pytest.approx(pooled["pixel_accuracy"])
    assert ci["counted_classes"] == pooled["counted_classes"] == names
    for key in ("miou", "pixel_accuracy"):
        low, high = ci[f"{key}_ci95"]
        assert low < ci[key] < high
    for name in names:
        low, high = ci["per_class_iou_ci95"][name]
        assert low < ci["per_class_iou"][name] < high
    assert (ci["images"], ci["resamples"], ci["seed"]) == (40, 1000, 0)


def test_bootstrap_intervals_shrink_as_images_are_added():
    per_image = _per_image(400)
    widths = []
    for n in (25, 100, 400):
        low, high = stats.bootstrap_ci(per_image[:n], resamples=1000, seed=0)["miou_ci95"]
        widths.append(high - low)
    assert widths[0] > 1.5 * widths[1] > 1.5 * 1.5 * widths[2] > 0


def test_bootstrap_is_reproducible_with_its_seed():
    per_image = _per_image(30)
    first = stats.bootstrap_ci(per_image, resamples=500, seed=7)
    assert stats.bootstrap_ci(per_image, resamples=500, seed=7) == first
    assert stats.bootstrap_ci(per_image, resamples=500, seed=8)["miou_ci95"] != first["miou_ci95"]


def test_a_class_absent_from_ground_truth_and_prediction_has_no_interval():
    per_image = _per_image(10, classes=3)
    per_image = np.pad(per_image, ((0, 0), (0, 1), (0, 1)))  # a fourth class, never seen
    ci = stats.bootstrap_ci(per_image, class_names=["a", "b", "c", "d"], resamples=200)
    assert ci["per_class_iou"]["d"] is None and ci["per_class_iou_ci95"]["d"] is None
    assert ci["counted_classes"] == ["a", "b", "c"]


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    per_image = _per_image(30)
    diff = stats.paired_difference(per_image, per_image, resamples=1000, seed=0)
    assert diff["miou_diff"] == 0.0 and diff["miou_diff_ci95"] == [0.0, 0.0]
    assert diff["pixel_accuracy_diff"] == 0.0 and diff["pixel_accuracy_diff_ci95"] == [0.0, 0.0]
    assert set(diff["per_class_iou_diff"].values()) == {0.0}
    assert all(ci == [0.0, 0.0] for ci in diff["per_class_iou_diff_ci95"].values())
    assert diff["miou_diff_sign_flip"] == 0.0
    sentence = stats.describe_difference("A", "A'", diff["miou_diff"], diff["miou_diff_ci95"])
    assert sentence.startswith("no clear difference")


def test_paired_difference_finds_a_better_model_and_its_interval():
    better, worse = _per_image(40, accuracy=0.8, seed=1), _per_image(40, accuracy=0.7, seed=1)
    diff = stats.paired_difference(better, worse, resamples=1000, seed=0)
    point = (
        stats.bootstrap_ci(better, resamples=10)["miou"]
        - stats.bootstrap_ci(worse, resamples=10)["miou"]
    )
    assert diff["miou_diff"] == pytest.approx(point)
    low, high = diff["miou_diff_ci95"]
    assert 0 < low < diff["miou_diff"] < high
    assert diff["miou_diff_sign_flip"] == 0.0
    # The same images scored by both: the paired interval is narrower than the two
    # models' own intervals, which also carry how hard the drawn images are.
    own = stats.bootstrap_ci(better, resamples=1000)["miou_ci95"]
    assert high - low < own[1] - own[0]
    reverse = stats.paired_difference(worse, better, resamples=1000, seed=0)
    assert reverse["miou_diff"] == pytest.approx(-diff["miou_diff"])
    assert reverse["miou_diff_ci95"] == pytest.approx([-high, -low])


def test_paired_difference_needs_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        stats.paired_difference(_per_image(5), _per_image(6))


def test_bootstrap_of_500_images_and_1000_resamples_takes_well_under_seconds():
    per_image = _per_image(20, classes=19)[np.arange(500) % 20]
    start = time.perf_counter()
    stats.paired_difference(per_image, per_image[::-1].copy(), resamples=1000, seed=0)
    assert time.perf_counter() - start < 10.0  # about 0.1 s; generous for a busy machine


@pytest.mark.parametrize(
    "diff, ci, sentence",
    [
        (0.012, (0.004, 0.020), "A is better than B by +1.2 points (95% CI +0.4 to +2.0)"),
        (-0.012, (-0.020, -0.004), "B is better than A by +1.2 points (95% CI +0.4 to +2.0)"),
        (
            0.003,
            (-0.008, 0.014),
            "no clear difference between A and B: A - B = +0.3 points (95% CI -0.8 to +1.4)",
        ),
        (0.0004, (0.0002, 0.0006), "A is better than B by +0.04 points (95% CI +0.02 to +0.06)"),
    ],
)
def test_describe_difference_says_it_plainly(diff, ci, sentence):
    assert stats.describe_difference("A", "B", diff, ci) == sentence


def test_pooled_difference_of_one_seed_is_the_paired_difference_and_pools_by_mean():
    from segdemo.stats import paired_difference, pooled_paired_difference

    rng = np.random.default_rng(7)
    seeds = [(rng.integers(0, 50, (20, 3, 3)), rng.integers(0, 50, (20, 3, 3))) for _ in range(3)]
    single = pooled_paired_difference(seeds[:1], resamples=200, seed=1)
    paired = paired_difference(*seeds[0], resamples=200, seed=1)
    assert single["miou_diff"] == pytest.approx(paired["miou_diff"])
    assert single["miou_diff_ci95"] == pytest.approx(paired["miou_diff_ci95"])
    assert single["miou_diff_seed_std"] is None
    pooled = pooled_paired_difference(seeds, resamples=200, seed=1)
    per_seed = [paired_difference(a, b, resamples=10)["miou_diff"] for a, b in seeds]
    assert pooled["miou_diff_per_seed"] == pytest.approx(per_seed)
    assert pooled["miou_diff"] == pytest.approx(np.mean(per_seed))
    assert pooled["miou_diff_seed_std"] == pytest.approx(np.std(per_seed, ddof=1))
    low, high = pooled["miou_diff_ci95"]
    assert low <= pooled["miou_diff"] <= high
    itself = pooled_paired_difference([(a, a) for a, _ in seeds], resamples=50)
    assert itself["miou_diff"] == 0 and itself["miou_diff_ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same images"):
        pooled_paired_difference([seeds[0], (seeds[1][0][:5], seeds[1][1][:5])])
