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


def test_curve_labels_say_which_checkpoint_a_fine_tuning_run_continues():
    run = {"name": "f", "train_config": {"init_from": "checkpoints/unetpp_lite0.safetensors",
                                         "class_weighting": "sqrt_inverse_frequency"}}  # fmt: skip
    assert _curve_labels(run) == (
        "f (epochs after unetpp_lite0) (class-weighted)",
        "f (epochs after unetpp_lite0)",
    )
    windows = {"name": "g", "train_config": {"init_from": "C:\\runs\\a\\best.safetensors"}}
    assert _curve_labels(windows) == ("g (epochs after best)", "g (epochs after best)")
    # a path from a hostile header: its name is not drawn (matplotlib reads $...$ as maths)
    for odd in ("$\\frac{a}{b}$.pt", "x" * 41, "/runs/\n.pt"):
        labels = _curve_labels({"name": "h", "train_config": {"init_from": odd}})
        assert labels == ("h (epochs after a checkpoint)",) * 2, odd
    for absent in (7, ""):
        assert _curve_labels({"name": "h", "train_config": {"init_from": absent}}) == ("h", "h")
