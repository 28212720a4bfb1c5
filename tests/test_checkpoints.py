import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from segdemo import checkpoints
from segdemo.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from segdemo.labels import get_label_set
from segdemo.models import create_model


def _save_tiny(path, model_name="unet", label_set="cityscapes19", dtype=None, **kwargs):
    labels = get_label_set(label_set)
    torch.manual_seed(0)
    model = create_model(model_name, labels.num_classes, base_width=4, **kwargs)
    meta = checkpoints.build_metadata(
        model, labels, (32, 64), model.normalization, epoch=3, metrics={"best": {"miou": 0.5}}
    )
    save_checkpoint(path, model, meta, dtype=dtype)
    return model


def test_round_trip_rebuilds_the_model_from_the_file_alone(tmp_path):
    path = tmp_path / "a.safetensors"
    model = _save_tiny(path, "unetpp")
    ckpt = load_checkpoint(path)
    assert ckpt.metadata["model"] == "unetpp" and ckpt.metadata["epoch"] == 3
    assert ckpt.label_set.num_classes == 19 and ckpt.input_size == (32, 64)
    x = torch.randn(1, 3, 32, 64)
    model.eval()
    assert torch.equal(ckpt.model(x), model(x))


def test_fp16_storage_loads_back_as_fp32_and_is_half_the_size(tmp_path):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    _save_tiny(full)
    _save_tiny(half, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    ckpt = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in ckpt.model.parameters())
    assert ckpt.metadata["storage_dtype"] == "float16"


def test_truncated_file_gives_one_clear_error(tmp_path):
    path = tmp_path / "a.safetensors"
    _save_tiny(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="a.safetensors"):
        load_checkpoint(path)


def test_other_class_count_or_architecture_is_named(tmp_path):
    path = tmp_path / "road.safetensors"
    _save_tiny(path, label_set="road")
    with pytest.raises(CheckpointError, match="predicts 2 classes but 19"):
        load_checkpoint(path, expected_num_classes=19)
    with pytest.raises(CheckpointError, match="holds a unet model, not unetpp"):
        load_checkpoint(path, expected_model="unetpp")


def test_weights_that_do_not_fit_the_metadata_are_refused(tmp_path):
    path = tmp_path / "a.safetensors"
    _save_tiny(path)
    meta = checkpoints.read_metadata(path)
    # Weights of a 2-class model under metadata claiming 19 classes.
    model = create_model("unet", 2, base_width=4)
    tensors = {"model/" + k: v for k, v in model.state_dict().items()}
    save_file(tensors, tmp_path / "bad.safetensors", metadata={"segdemo": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"has shape .* needs"):
        load_checkpoint(tmp_path / "bad.safetensors")
    # Weights of another architecture entirely.
    other = create_model("unetpp", 19, base_width=4)
    tensors = {"model/" + k: v for k, v in other.state_dict().items()}
    save_file(tensors, tmp_path / "arch.safetensors", metadata={"segdemo": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not fit unet"):
        load_checkpoint(tmp_path / "arch.safetensors")


def test_file_without_metadata_is_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="no segdemo metadata"):
        load_checkpoint(tmp_path / "plain.safetensors")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"segdemo": "{}", "state_dict": _Evil(marker)}, f)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_safe_pt_file_with_metadata_loads(tmp_path):
    path = tmp_path / "a.safetensors"
    model = _save_tiny(path)
    meta = checkpoints.read_metadata(path)
    torch.save({"segdemo": json.dumps(meta), "state_dict": model.state_dict()}, tmp_path / "a.pt")
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert ckpt.metadata["model"] == "unet"


def test_plain_state_dict_pt_explains_what_is_missing(tmp_path):
    torch.save(create_model("unet", 19, base_width=4).state_dict(), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="without segdemo metadata"):
        load_checkpoint(tmp_path / "w.pth")


def test_failed_write_leaves_the_previous_checkpoint_whole(tmp_path):
    import resource

    path = tmp_path / "last.safetensors"
    _save_tiny(path)
    before = path.read_bytes()
    # A file-size limit below the new checkpoint's size: the write fails part-way, as on a
    # full disk (Python ignores SIGXFSZ, so the write raises).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, hard))
    try:
        with pytest.raises(OSError, match="File too large"):
            _save_tiny(path, "unetpp")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert path.read_bytes() == before
    assert load_checkpoint(path).metadata["model"] == "unet"
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temp file left


def test_optimizer_state_round_trips(tmp_path):
    model = create_model("unet", 2, base_width=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    tensors, rest = checkpoints.flatten_optimizer_state(opt)
    restored = checkpoints.unflatten_optimizer_state(tensors, json.loads(json.dumps(rest)))
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(restored)
    for a, b in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_checkpoint_files_are_readable_by_others(tmp_path):
    path = tmp_path / "a.safetensors"
    _save_tiny(path)
    assert path.stat().st_mode & 0o777 == 0o644


def test_checkpoint_names_are_file_stems_kept_apart_by_their_folders(tmp_path):
    from segdemo.checkpoints import checkpoint_names

    paths = [
        tmp_path / "checkpoints" / "unetpp_lite0_cw.safetensors",
        tmp_path / "checkpoints" / "unet.safetensors",
        tmp_path / "runs" / "uploaded" / "unet.safetensors",
        tmp_path / "runs" / "exp-1" / "best.safetensors",
    ]
    assert checkpoint_names(paths) == [
        "unetpp_lite0_cw", "checkpoints/unet", "uploaded/unet", "exp-1/best"
    ]  # fmt: skip
    assert checkpoint_names(paths[:2]) == ["unetpp_lite0_cw", "unet"]
