"""The results report's figure legends (the report itself runs in tests/test_cli.py)."""

from segdemo.report import _curve_labels


def test_curve_labels_name_a_class_weighted_loss_and_a_val_subset():
    plain = {"name": "a", "train_config": {"class_weighting": "none", "val_max_items": None}}
    assert _curve_labels(plain) == ("a", "a")
    run = {"name": "b", "train_config": {"class_weighting": "sqrt_inverse_frequency",
                                         "val_max_items": 200}}  # fmt: skip
    assert _curve_labels(run) == ("b (class-weighted)", "b (first 200 val images)")


def test_curve_labels_ignore_missing_and_odd_training_configs():
    # checkpoints written before these settings have none; a hostile file's odd types
    # change no label
    assert _curve_labels({"name": "c", "train_config": None}) == ("c", "c")
    odd = {"name": "d", "train_config": {"class_weighting": 3, "val_max_items": True}}
    assert _curve_labels(odd) == ("d", "d")
    assert _curve_labels({"name": "e", "train_config": ["x"]}) == ("e", "e")
