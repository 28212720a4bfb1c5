"""Dataset formats, written into tmp_path in their exact on-disk layouts (tiny images)."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import segdemo.data.cache as cache_module
from segdemo.data import (
    class_frequencies,
    collate_fn,
    detect_format,
    format_inspection,
    inspect_dataset,
    open_dataset,
)
from segdemo.labels import CITYSCAPES19, LabelSet

H, W = 32, 64
LABEL_ID = {"road": 7, "sidewalk": 8, "building": 11, "sky": 23, "car": 26, "parking": 9}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDEMO_CACHE", str(tmp_path / "cache"))


def blocky_train_ids(seed: int, h: int = H, w: int = W, block: int = 8) -> np.ndarray:
    """A mask of 8x8 blocks of random cityscapes19 train ids (some ignore)."""
    rng = np.random.default_rng(seed)
    classes = np.array([0, 1, 2, 8, 10, 11, 13, 255], dtype=np.uint8)
    coarse = rng.choice(classes, (h // block, w // block))
    return np.kron(coarse, np.ones((block, block), dtype=np.uint8))


def photo(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed + 100).integers(0, 256, (h, w, 3), dtype=np.uint8)


def label_ids_image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.array(list(LABEL_ID.values()) + [0], dtype=np.uint8)
    return np.kron(rng.choice(ids, (h // 8, w // 8)), np.ones((8, 8), dtype=np.uint8))


def write_pairs(root, split: str, names, size: int = 32, quality: int = 75):
    """Kaggle layout: <split>/<n>.jpg, photo | colour label, JPEG-compressed together."""
    (root / split).mkdir(parents=True, exist_ok=True)
    truths = {}
    for k, name in enumerate(names):
        train = blocky_train_ids(k, size, size)
        pair = np.concatenate([photo(k, size, size), CITYSCAPES19.colorize(train)], axis=1)
        Image.fromarray(pair).save(root / split / f"{name}.jpg", quality=quality)
        truths[name] = train
    return truths


# --- pairs ---------------------------------------------------------------------------------------


def test_pairs_recovers_blurred_colours_and_sorts_numerically(tmp_path):
    truths = write_pairs(tmp_path, "train", ["1", "2", "10", "3"])
    write_pairs(tmp_path, "val", ["1"])
    assert detect_format(tmp_path) == "pairs"
    ds = open_dataset(tmp_path, split="train")
    assert ds.format == "pairs" and len(ds) == 4 and ds.split == "train"
    assert [os.path.basename(p) for p in map(str, ds.files)] == [
        "1.jpg",
        "2.jpg",
        "3.jpg",
        "10.jpg",
    ]
    for i, name in enumerate(["1", "2", "3", "10"]):
        image, mask = ds.read_raw(i)
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32) and mask.dtype == np.uint8
        # JPEG (with 4:2:0 chroma) blurs block edges; block interiors must map exactly.
        agreement = (mask == truths[name]).mean()
        inside_block = (np.arange(32) % 8 >= 2) & (np.arange(32) % 8 <= 5)
        interior = inside_block[:, None] & inside_block[None, :]
        assert agreement > 0.85, (name, agreement)
        assert (mask == truths[name])[interior].mean() > 0.97, name
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64 and item["path"].endswith("1.jpg")
    assert len(open_dataset(tmp_path, split="val")) == 1


def test_pairs_under_cityscapes_data_parent(tmp_path):
    write_pairs(tmp_path / "cityscapes_data", "train", ["1", "2"])
    assert detect_format(tmp_path) == "pairs"
    assert len(open_dataset(tmp_path)) == 2


def test_normalization_and_size(tmp_path):
    write_pairs(tmp_path, "train", ["1"])
    ds = open_dataset(tmp_path, normalization={"mean": (0, 0, 0), "std": (1, 1, 1)})
    image, _ = ds.read_raw(0)
    assert torch.allclose(ds[0]["image"], torch.from_numpy(image).permute(2, 0, 1) / 255.0)
    imagenet = open_dataset(tmp_path)[0]["image"]
    expected = (image[..., 0] / 255.0 - 0.485) / 0.229
    assert np.allclose(imagenet[0].numpy(), expected, atol=1e-5)
    resized = open_dataset(tmp_path, size=(16, 24))[0]
    assert resized["image"].shape == (3, 16, 24) and resized["mask"].shape == (16, 24)
    with pytest.raises(ValueError, match="normalization"):
        open_dataset(tmp_path, normalization={"mean": (0, 0)})


def test_truncated_jpeg_is_named_and_skipped(tmp_path):
    write_pairs(tmp_path, "train", ["1", "2", "3"])
    data = (tmp_path / "train" / "2.jpg").read_bytes()
    (tmp_path / "train" / "2.jpg").write_bytes(data[: len(data) // 2])
    ds = open_dataset(tmp_path)
    with pytest.raises(ValueError, match="2.jpg"):
        ds.read_raw(1)
    assert ds[1] is None
    assert any("2.jpg" in p for p in ds.problems)
    batch = collate_fn([ds[0], ds[1], ds[2]])
    assert batch["image"].shape == (2, 3, 32, 32) and len(batch["path"]) == 2
    assert collate_fn([ds[1]]) is None
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_fn)
    assert [b["mask"].shape[0] for b in loader] == [2]
    with pytest.raises(ValueError, match="2.jpg"):
        open_dataset(tmp_path, on_error="raise")[1]


def test_colour_cache_second_read_does_not_recompute(tmp_path, monkeypatch):
    write_pairs(tmp_path, "train", ["1", "2"])
    calls = []
    original = LabelSet.from_colors

    def counting(self, rgb, max_distance=None):
        calls.append(1)
        return original(self, rgb, max_distance)

    monkeypatch.setattr(LabelSet, "from_colors", counting)
    first = [open_dataset(tmp_path).read_raw(i)[1] for i in range(2)]
    assert len(calls) == 2
    assert len(list((tmp_path / "cache" / "masks").rglob("*.png"))) == 2
    second = [open_dataset(tmp_path).read_raw(i)[1] for i in range(2)]
    assert len(calls) == 2  # served from the cache
    assert all((a == b).all() for a, b in zip(first, second, strict=True))
    # A corrupt entry is recomputed (and rewritten), not a crash.
    entry = cache_module.mask_cache_path(tmp_path / "train" / "1.jpg", _pairs_variant(tmp_path))
    assert entry.exists()
    entry.write_bytes(b"not a png")
    again = open_dataset(tmp_path).read_raw(0)[1]
    assert len(calls) == 3 and (again == first[0]).all()
    assert open_dataset(tmp_path).read_raw(0)[1] is not None and len(calls) == 3
    # A changed source file is a new key.
    write_pairs(tmp_path, "train", ["1"], quality=90)
    os.utime(tmp_path / "train" / "1.jpg", ns=(1, 10**18))
    open_dataset(tmp_path).read_raw(0)
    assert len(calls) == 4
    # cache=False bypasses it.
    open_dataset(tmp_path, cache=False).read_raw(1)
    assert len(calls) == 5


def _pairs_variant(root):
    ds = open_dataset(root)
    from segdemo.data.formats import hash_label_set

    return f"pairs|{ds.label_set.name}|{hash_label_set(ds.label_set)}|{ds._max_color_distance}"


def test_fingerprint_stable_and_sensitive(tmp_path):
    write_pairs(tmp_path, "train", ["1", "2"])
    a, b = open_dataset(tmp_path).fingerprint(), open_dataset(tmp_path).fingerprint()
    assert a == b and len(a) == 12
    write_pairs(tmp_path, "train", ["3"])
    assert open_dataset(tmp_path).fingerprint() != a
    assert (
        open_dataset(tmp_path, label_set="road").fingerprint()
        != open_dataset(tmp_path).fingerprint()
    )


# --- cityscapes ---------------------------------------------------------------------------------


def write_cityscapes(root, split: str, cities: list[str | None], per_city: int = 2):
    truths = []
    for city in cities:
        img_dir = root / "leftImg8bit" / split
        gt_dir = root / "gtFine" / split
        if city:
            img_dir, gt_dir = img_dir / city, gt_dir / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for k in range(per_city):
            stem = f"{city or 'flat'}_{k:06d}_000019"
            ids = label_ids_image(len(truths))
            Image.fromarray(photo(k)).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
            # The official release also ships colour and instance files: they are not masks.
            Image.fromarray(CITYSCAPES19.colorize(ids)).save(gt_dir / f"{stem}_gtFine_color.png")
            truths.append((stem, ids))
    return truths


@pytest.mark.parametrize("cities", [["aachen", "bremen"], [None]], ids=["city", "flat"])
def test_cityscapes_layouts(tmp_path, cities):
    truths = dict(write_cityscapes(tmp_path, "val", cities))
    assert detect_format(tmp_path) == "cityscapes"
    ds = open_dataset(tmp_path, split="val")
    assert ds.format == "cityscapes" and len(ds) == len(truths)
    for i in range(len(ds)):
        stem = os.path.basename(ds.item_path(i))[: -len("_leftImg8bit.png")]
        _, mask = ds.read_raw(i)
        assert (mask == CITYSCAPES19.from_label_ids(truths[stem])).all()
        # parking (label id 9) is not a cityscapes19 class
        assert (mask[truths[stem] == 9] == 255).all()
    road = open_dataset(tmp_path, split="val", label_set="road")
    assert set(np.unique(road.read_raw(0)[1])) <= {0, 1, 255}


def test_cityscapes_image_without_label(tmp_path):
    write_cityscapes(tmp_path, "train", ["aachen"], per_city=3)
    for f in (tmp_path / "gtFine" / "train" / "aachen").glob("*000001*labelIds.png"):
        f.unlink()
    with pytest.raises(ValueError, match=r"gtFine.*aachen_000001_000019_leftImg8bit\.png"):
        open_dataset(tmp_path)


# --- kitti --------------------------------------------------------------------------------------


def write_kitti(root, n: int = 10, mismatch: tuple[int, ...] = ()):
    (root / "training" / "image_2").mkdir(parents=True)
    (root / "training" / "semantic").mkdir(parents=True)
    for k in range(n):
        Image.fromarray(photo(k, 30, 70)).save(root / "training" / "image_2" / f"{k:06d}_10.png")
        ids = label_ids_image(k, 32, 72)
        if k not in mismatch:
            ids = np.ascontiguousarray(ids[:30, :70])
        Image.fromarray(ids).save(root / "training" / "semantic" / f"{k:06d}_10.png")


def test_kitti_split_and_size_mismatch_noted_once(tmp_path, caplog):
    write_kitti(tmp_path, n=10, mismatch=(0, 1, 2))
    assert detect_format(tmp_path) == "kitti"
    train = open_dataset(tmp_path, split="train")
    val = open_dataset(tmp_path, split="val")
    assert len(train) == 8 and len(val) == 2
    assert [os.path.basename(val.item_path(i)) for i in range(2)] == [
        "000004_10.png",
        "000009_10.png",
    ]
    for i in range(3):
        image, mask = train.read_raw(i)
        assert image.shape == (30, 70, 3) and mask.shape == (30, 70)
    notes = [p for p in train.problems if "differ in size" in p]
    assert len(notes) == 1 and "semantic/000000_10.png is 72x32" in notes[0]
    assert "image_2/000000_10.png is 70x30" in notes[0]
    assert sum("differ in size" in r.message for r in caplog.records) == 1
    report = inspect_dataset(tmp_path)
    assert report["splits"]["train"]["count"] == 8 and report["splits"]["val"]["count"] == 2
    assert any("3 masks differ in size" in p for p in report["problems"])


# --- folder -------------------------------------------------------------------------------------


def write_folder(root, n: int = 5, colour: bool = False, ext: str = ".png"):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    truths = {}
    for k in range(n):
        train = blocky_train_ids(k)
        Image.fromarray(photo(k)).save(root / "images" / f"img{k}{ext}")
        mask = CITYSCAPES19.colorize(train) if colour else train
        Image.fromarray(mask).save(root / "masks" / f"img{k}.png")
        truths[f"img{k}"] = train
    return truths


@pytest.mark.parametrize("colour", [False, True], ids=["train_ids", "colour"])
def test_folder_masks(tmp_path, colour):
    truths = write_folder(tmp_path, n=10, colour=colour, ext=".jpg")
    assert detect_format(tmp_path) == "folder"
    train, val = open_dataset(tmp_path), open_dataset(tmp_path, split="val")
    assert len(train) == 8 and len(val) == 2
    for ds in (train, val):
        for i in range(len(ds)):
            stem = os.path.basename(ds.item_path(i)).rsplit(".", 1)[0]
            assert (ds.read_raw(i)[1] == truths[stem]).all()
    assert not train.problems
    if colour:
        assert list((tmp_path / "cache" / "masks").rglob("*.png"))


def test_folder_with_split_subfolders_and_bad_train_ids(tmp_path):
    write_folder(tmp_path / "train", n=3)
    write_folder(tmp_path / "val", n=2)
    bad = blocky_train_ids(0)
    bad[:4, :4] = 40  # not a cityscapes19 train id
    Image.fromarray(bad).save(tmp_path / "val" / "masks" / "img0.png")
    assert detect_format(tmp_path) == "folder"
    assert len(open_dataset(tmp_path)) == 3
    val = open_dataset(tmp_path, split="val")
    assert len(val) == 2
    assert (val.read_raw(0)[1][:4, :4] == 255).all()
    assert any("40" in p and "img0.png" in p for p in val.problems)


# --- bad input ----------------------------------------------------------------------------------


def test_empty_and_unknown_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*is empty"):
        open_dataset(empty)
    odd = tmp_path / "odd"
    odd.mkdir()
    for name in ("notes.txt", "a.csv", "b.csv", "c.csv", "d.csv", "e.csv"):
        (odd / name).write_text("x")
    with pytest.raises(ValueError, match=r"odd.*a\.csv.*and 1 more") as err:
        open_dataset(odd)
    assert "pairs" in str(err.value) and "images/" in str(err.value)
    with pytest.raises(ValueError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "emptypairs" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"emptypairs.*train.*no images"):
        open_dataset(tmp_path / "emptypairs", fmt="pairs")


def test_images_without_masks_and_masks_without_images(tmp_path):
    write_folder(tmp_path / "a", n=8)
    for k in range(7):
        (tmp_path / "a" / "masks" / f"img{k}.png").unlink()
    with pytest.raises(ValueError) as err:
        open_dataset(tmp_path / "a")
    message = str(err.value)
    assert "7 images" in message and str(tmp_path / "a" / "masks") in message
    assert "img0.png" in message and "img4.png" in message and "and 2 more" in message
    assert "img5.png" not in message

    write_folder(tmp_path / "b", n=3)
    (tmp_path / "b" / "images" / "img1.png").unlink()
    with pytest.raises(ValueError, match=r"1 masks in .*b/masks have no image.*img1\.png"):
        open_dataset(tmp_path / "b")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset format"):
        open_dataset("synthetic", fmt="coco")
    with pytest.raises(ValueError, match="unknown label set"):
        open_dataset("synthetic", label_set="ade20k")
    with pytest.raises(ValueError, match="split"):
        open_dataset("synthetic", split="test")
    with pytest.raises(ValueError, match="option"):
        open_dataset("synthetic", colour=True)


# --- augmentation -------------------------------------------------------------------------------


def test_augmentation_keeps_image_and_mask_aligned(tmp_path):
    # The photo encodes its mask: class 0 (road) is red, class 10 (sky) is blue, 255 is green.
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        mask = np.kron(rng.choice([0, 10, 255], (6, 12)), np.ones((8, 8))).astype(np.uint8)
        image = np.zeros((48, 96, 3), dtype=np.uint8)
        image[mask == 0] = (220, 20, 20)
        image[mask == 10] = (20, 20, 220)
        image[mask == 255] = (20, 220, 20)
        Image.fromarray(image).save(tmp_path / "images" / f"{k}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{k}.png")
    ds = open_dataset(
        tmp_path, size=(32, 40), augment=True, normalization={"mean": (0, 0, 0), "std": (1, 1, 1)}
    )
    torch.manual_seed(0)
    np.random.seed(0)
    variants = set()
    for _ in range(8):
        for i in range(len(ds)):
            item = ds[i]
            image, mask = item["image"], item["mask"]
            assert image.shape == (3, 32, 40) and mask.shape == (32, 40)
            assert set(mask.unique().tolist()) <= {0, 10, 255}
            dominant = image.argmax(0)  # 0 red, 1 green, 2 blue
            predicted = torch.full_like(mask, 255)
            predicted[dominant == 0] = 0
            predicted[dominant == 2] = 10
            # Compare away from class boundaries, where resampling mixes colours.
            padded = torch.nn.functional.pad(
                mask[None, None].float(), (1, 1, 1, 1), mode="replicate"
            )
            window = padded.unfold(2, 3, 1).unfold(3, 3, 1)[0, 0].reshape(32, 40, 9)
            interior = (window == mask[..., None]).all(-1)
            assert interior.float().mean() > 0.3
            assert (predicted == mask)[interior].float().mean() > 0.99
            if i == 0:
                variants.add(mask.numpy().tobytes())
    assert len(variants) > 2  # the random crops and flips really vary
    # Augmentation follows torch's seed (and so DataLoader workers' seeds).
    torch.manual_seed(123)
    first = [ds[i]["image"] for i in range(3)]
    torch.manual_seed(123)
    again = open_dataset(tmp_path, size=(32, 40), augment=True, normalization=ds.normalization)
    second = [again[i]["image"] for i in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    plain = open_dataset(tmp_path, size=(24, 48))[0]["mask"]
    assert set(plain.unique().tolist()) <= {0, 10, 255} and plain.shape == (24, 48)


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_deterministic_and_varied():
    ds = open_dataset("synthetic", split="train", length=6, seed=3)
    assert ds.format == "synthetic" and len(ds) == 6
    a_img, a_mask = ds.read_raw(2)
    b_img, b_mask = open_dataset("synthetic", length=6, seed=3).read_raw(2)
    assert a_img.shape == (128, 256, 3) and a_mask.shape == (128, 256)
    assert (a_img == b_img).all() and (a_mask == b_mask).all()
    c_img, c_mask = ds.read_raw(3)
    assert (a_img != c_img).any() and (a_mask != c_mask).any()
    d_img, _ = open_dataset("synthetic", split="val", length=6, seed=3).read_raw(2)
    e_img, _ = open_dataset("synthetic", length=6, seed=4).read_raw(2)
    assert (a_img != d_img).any() and (a_img != e_img).any()
    item = open_dataset("synthetic", size=(64, 96), length=2)[1]
    assert item["image"].shape == (3, 64, 96) and item["mask"].dtype == torch.int64
    assert open_dataset("synthetic").fingerprint() == open_dataset("synthetic").fingerprint()
    assert (
        open_dataset("synthetic", seed=1).fingerprint() != open_dataset("synthetic").fingerprint()
    )
    assert (
        len(open_dataset("synthetic")) == 512 and len(open_dataset("synthetic", split="val")) == 64
    )


def test_synthetic_masks_hold_street_classes_and_colours_overlap():
    ds = open_dataset("synthetic", length=8, native_size=(64, 128))
    counts = class_frequencies(ds)
    names = CITYSCAPES19.names
    for name in ("road", "sidewalk", "building", "sky", "car", "person", "pole", "vegetation"):
        assert counts[names.index(name)] > 0, name
    # Every pixel is labelled with a class (no ignore), and classes share colours.
    means = {}
    for i in range(len(ds)):
        image, mask = ds.read_raw(i)
        assert (mask < 19).all()
        for t in (0, 2, 10):  # road, building, sky
            if (mask == t).any():
                means.setdefault(t, []).append(image[mask == t].mean(0))
    spread = {t: np.ptp(np.array(v), axis=0).max() for t, v in means.items()}
    assert all(s > 20 for s in spread.values()), spread  # no flat colour per class
    road = open_dataset("synthetic", length=2, label_set="road")
    assert set(np.unique(road.read_raw(0)[1])) <= {0, 1} and road.label_set.name == "road"


# --- inspection and frequencies ----------------------------------------------------------------


def test_inspect_pairs(tmp_path):
    write_pairs(tmp_path, "train", ["1", "2", "3"])
    write_pairs(tmp_path, "val", ["1", "2"])
    report = inspect_dataset(tmp_path)
    json.dumps(report)
    assert report["format"] == "pairs" and report["label_set"] == "cityscapes19"
    assert report["splits"]["train"]["count"] == 3 and report["splits"]["val"]["count"] == 2
    assert report["splits"]["train"]["image_sizes"] == {"32x32": 3}
    text = format_inspection(report)
    assert "pairs" in text and "3 items" in text and "2 items" in text
    synthetic = inspect_dataset("synthetic", length=3)
    assert synthetic["splits"]["train"]["count"] == 3 and synthetic["format"] == "synthetic"
    with pytest.raises(ValueError, match="does not exist"):
        inspect_dataset(tmp_path / "nope")


def test_class_frequencies_match_masks(tmp_path):
    truths = write_folder(tmp_path, n=5)
    ds = open_dataset(tmp_path)
    expected = np.zeros(19, dtype=np.int64)
    for k in range(len(ds)):
        stem = os.path.basename(ds.item_path(k)).rsplit(".", 1)[0]
        expected += np.bincount(truths[stem].reshape(-1), minlength=256)[:19]
    counts = class_frequencies(ds)
    assert counts.dtype == np.int64 and counts.shape == (19,)
    assert (counts == expected).all()
    assert class_frequencies(ds, max_items=1).sum() == (truths["img0"] < 19).sum()
