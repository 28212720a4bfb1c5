import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from segdemo.losses import SegmentationLoss, dice_loss
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
    ours = dice_loss(logits_ours, target, 255, classes)
    ref = reference(logits_ref, target)
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(logits_ours.grad.double(), logits_ref.grad, atol=1e-7)


def test_unknown_loss_name_lists_valid_ones():
    with pytest.raises(ValueError, match="ce_dice"):
        SegmentationLoss("focal", 3)


def test_metrics_handle_an_empty_matrix():
    m = ConfusionMatrix(2).compute()
    assert math.isnan(m["miou"]) and np.isnan(m["pixel_accuracy"])
