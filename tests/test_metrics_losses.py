import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from segdemo.losses import CHUNK_PIXELS, SegmentationLoss
from segdemo.metrics import ConfusionMatrix, confusion_per_image


def test_confusion_matrix_matches_hand_computed_case():
    # 3 classes, one ignored pixel (255); rows are ground truth, columns predictions.
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 1]]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    m = cm.compute(["a", "b", "c"])
    # IoU = tp / (tp + fp + fn): a = 1/(1+1+1), b = 3/(3+1+0), c = 1/(1+0+1)
    assert m["per_class_iou"]["a"] == pytest.approx(1 / 3)
    assert m["per_class_iou"]["b"] == pytest.approx(3 / 4)
    assert m["per_class_iou"]["c"] == pytest.approx(1 / 2)
    assert m["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert m["pixel_accuracy"] == pytest.approx(5 / 7)
    assert m["per_class_precision"]["a"] == pytest.approx(1 / 2)
    assert m["per_class_recall"]["b"] == pytest.approx(1.0)
    assert m["pixels"] == 7


def test_miou_counts_false_positive_classes_and_skips_absent_ones():
    # Cityscapes definition: b has no ground truth but one false positive -> IoU 0, counted;
    # c is in neither ground truth nor prediction -> no IoU, left out of the mean.
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    pred = torch.tensor([[[0, 0], [0, 1]]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    m = cm.compute(["a", "b", "c"])
    assert m["per_class_iou"] == {"a": pytest.approx(3 / 4), "b": 0.0, "c": None}
    assert m["miou"] == pytest.approx((3 / 4 + 0.0) / 2)
    assert m["counted_classes"] == ["a", "b"]
    assert m["per_class_precision"]["b"] == 0.0 and m["per_class_recall"]["b"] is None


def test_confusion_per_image_sums_to_the_accumulated_matrix():
    target = torch.tensor([[[0, 1], [255, 2]], [[2, 2], [1, 255]]])
    pred = torch.tensor([[[0, 2], [1, 2]], [[2, 0], [1, 1]]])
    per_image = confusion_per_image(pred, target, 3)
    assert per_image[0].tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert per_image[1].tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 1]]
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert torch.equal(cm.matrix, per_image.sum(0))


def test_miou_equals_cityscapes_scripts_on_generated_label_images(tmp_path):
    """Our metrics against cityscapesScripts' own evaluation of the same label-id PNGs."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    from cityscapesscripts.helpers.labels import labels as cs_labels
    from PIL import Image

    from segdemo.labels import get_label_set

    label_set = get_label_set("cityscapes19")
    train_to_id = {label.trainId: label.id for label in cs_labels if 0 <= label.trainId < 255}
    void_ids = [label.id for label in cs_labels if label.ignoreInEval and label.id >= 0]
    rng = np.random.default_rng(0)
    # Ground truth: road, car, person and void pixels; predictions: mostly right, some car
    # called bus (no bus in the ground truth: IoU 0, counted), never train (not counted).
    gt_train = [0, 13, 11]  # road, car, person
    predictions, truths, ours = [], [], ConfusionMatrix(label_set.num_classes)
    for k in range(3):
        truth_train = rng.choice(gt_train, size=(6, 10))
        pred_train = np.where(
            rng.random((6, 10)) < 0.7, truth_train, rng.choice([0, 13, 15], (6, 10))
        )
        truth_ids = np.vectorize(train_to_id.get)(truth_train).astype(np.uint8)
        void = rng.random((6, 10)) < 0.15
        truth_ids[void] = rng.choice(void_ids, size=int(void.sum()))
        pred_ids = np.vectorize(train_to_id.get)(pred_train).astype(np.uint8)
        truths.append(str(tmp_path / f"frame{k}_gtFine_labelIds.png"))
        predictions.append(str(tmp_path / f"frame{k}_pred.png"))
        Image.fromarray(truth_ids).save(truths[-1])
        Image.fromarray(pred_ids).save(predictions[-1])
        target = torch.from_numpy(label_set.from_label_ids(truth_ids).astype(np.int64))
        ours.update(torch.from_numpy(pred_train)[None], target[None])

    args = cs.CArgs()
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    reference = cs.evaluateImgLists(predictions, truths, args)

    m = ours.compute(list(label_set.names))
    for name in label_set.names:
        expected = reference["classScores"][name]
        assert (m["per_class_iou"][name] is None) == math.isnan(expected), name
        if not math.isnan(expected):
            assert m["per_class_iou"][name] == pytest.approx(expected), name
    assert m["per_class_iou"]["bus"] == 0.0 and m["per_class_iou"]["train"] is None
    assert m["counted_classes"] == ["road", "person", "car", "bus"]
    assert m["miou"] == pytest.approx(reference["averageScoreClasses"])


def test_confusion_matrix_rejects_labels_outside_the_label_set():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="class 5"):
        cm.update(torch.zeros(1, 1, 1, dtype=torch.long), torch.full((1, 1, 1), 5))


def test_ce_loss_equals_torch_cross_entropy_with_ignore():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0, :] = 255
    loss = SegmentationLoss("ce", 4)([logits], target)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, target, ignore_index=255)))


def test_loss_is_mean_over_deep_supervision_heads():
    torch.manual_seed(0)
    heads = [torch.randn(1, 3, 4, 4) for _ in range(4)]
    target = torch.randint(0, 3, (1, 4, 4))
    fn = SegmentationLoss("ce_dice", 3)
    expected = sum(float(fn([h], target)) for h in heads) / 4
    assert float(fn(heads, target)) == pytest.approx(expected, rel=1e-6)


def test_dice_is_zero_for_a_perfect_prediction_and_ignores_ignored_pixels():
    target = torch.tensor([[[0, 1], [1, 255]]])
    logits = F.one_hot(target.clamp(max=1), 2).permute(0, 3, 1, 2).float() * 50
    logits[0, :, 1, 1] = torch.tensor([50.0, -50.0])  # wrong, but the pixel is ignored
    assert float(SegmentationLoss("dice", 2)([logits], target)) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("num_classes, classes", [(5, None), (2, [1])])
def test_dice_equals_smp_dice_in_value_and_gradient(num_classes, classes):
    torch.manual_seed(0)
    target = torch.randint(0, num_classes, (3, 9, 11))
    target[0, :4] = 255  # ignored pixels
    if num_classes > 2:
        target[target == 3] = 4  # a class absent from the target contributes 0
    reference = smp.losses.DiceLoss(
        "multiclass", classes=classes, from_logits=True, ignore_index=255
    )
    logits_ours = torch.randn(3, num_classes, 9, 11, dtype=torch.float64, requires_grad=True)
    logits_ref = logits_ours.detach().clone().requires_grad_(True)
    ours = SegmentationLoss("dice", num_classes)([logits_ours], target)
    ref = reference(logits_ref, target)
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(logits_ours.grad, logits_ref.grad, atol=1e-7)


def _reference_ce_dice(heads, target, num_classes):
    dice = smp.losses.DiceLoss(
        "multiclass", classes=[1] if num_classes == 2 else None, from_logits=True, ignore_index=255
    )
    per_head = [F.cross_entropy(h, target, ignore_index=255) + dice(h, target) for h in heads]
    return torch.stack(per_head).mean()


@pytest.mark.parametrize("height, width", [(6, 7), (300, 500)])
def test_ce_dice_over_heads_equals_the_reference_in_value_and_gradient(height, width):
    # 300x500 pixels span several of the loss's chunks, rows of one image split across two.
    assert height * width > CHUNK_PIXELS or height * width < 100
    torch.manual_seed(1)
    target = torch.randint(0, 4, (2, height, width))
    target[1, : height // 2] = 255
    heads = [torch.randn(2, 4, height, width, dtype=torch.float64) for _ in range(3)]
    ours_in = [h.clone().requires_grad_(True) for h in heads]
    ref_in = [h.clone().requires_grad_(True) for h in heads]
    ours = SegmentationLoss("ce_dice", 4)(ours_in, target)
    ref = _reference_ce_dice(ref_in, target, 4)
    (ours * 3).backward()
    (ref * 3).backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(ours_in, ref_in, strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-8)


def test_loss_takes_bf16_channels_last_heads_and_returns_their_gradient_layout():
    torch.manual_seed(2)
    target = torch.randint(0, 5, (2, 8, 8))
    logits = torch.randn(2, 5, 8, 8)
    head = logits.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    head.requires_grad_(True)
    loss = SegmentationLoss("ce_dice", 5)([head], target)
    loss.backward()
    assert loss.dtype == torch.float32
    assert head.grad.dtype == torch.bfloat16
    assert head.grad.is_contiguous(memory_format=torch.channels_last)
    reference = logits.to(torch.bfloat16).float().requires_grad_(True)
    _reference_ce_dice([reference], target, 5).backward()
    assert torch.allclose(head.grad.float(), reference.grad, atol=2e-3)


def test_class_weighted_ce_equals_torch_cross_entropy_with_weights():
    torch.manual_seed(3)
    weights = [1.0, 2.0, 0.5, 3.0]
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0] = 255
    logits = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    ours_in, ref_in = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    ours = SegmentationLoss("ce", 4, class_weights=weights)([ours_in], target)
    ref = F.cross_entropy(
        ref_in, target, weight=torch.tensor(weights, dtype=torch.float64), ignore_index=255
    )
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(ours_in.grad, ref_in.grad, atol=1e-8)


def test_ohem_keeps_the_pixels_below_the_threshold_or_the_min_kept_hardest():
    # mmsegmentation's rule: keep own-class p < max(threshold, p of the (min_kept+1)-th
    # hardest pixel).
    torch.manual_seed(4)
    target = torch.randint(0, 3, (1, 4, 5))
    target[0, 0, 0] = 255
    logits = torch.randn(1, 3, 4, 5, dtype=torch.float64) * 2
    valid = target[0] != 255
    own_p = torch.softmax(logits, 1)[0].gather(0, target.clamp(max=2))[0][valid]
    dice = SegmentationLoss("dice", 3)([logits], target)
    for threshold, min_kept in [(0.7, 1), (0.2, 10), (0.7, 100)]:
        loss = SegmentationLoss("ohem_ce_dice", 3, ohem_threshold=threshold, ohem_min_kept=min_kept)
        ordered = torch.sort(own_p).values
        cut = max(threshold, float(ordered[min(min_kept, len(ordered) - 1)]))
        kept = own_p[own_p < cut]
        assert 0 < len(kept) < len(own_p)
        ce_only = loss([logits], target) - dice
        assert ce_only.item() == pytest.approx(float(-torch.log(kept).mean()), rel=1e-6)


def test_unknown_loss_name_lists_valid_ones():
    with pytest.raises(ValueError, match="ce_dice"):
        SegmentationLoss("focal", 3)


def test_metrics_handle_an_empty_matrix():
    m = ConfusionMatrix(2).compute()
    assert math.isnan(m["miou"]) and np.isnan(m["pixel_accuracy"])
