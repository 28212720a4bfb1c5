import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from segdemo.losses import CHUNK_PIXELS, SegmentationLoss
from segdemo.metrics import ConfusionMatrix


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


def test_miou_averages_only_classes_present_in_ground_truth():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    pred = torch.tensor([[[0, 0], [0, 1]]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    m = cm.compute(["a", "b", "c"])
    assert m["per_class_iou"]["b"] is None and m["per_class_iou"]["c"] is None
    assert m["miou"] == pytest.approx(3 / 4)
    assert m["present_classes"] == ["a"]


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
