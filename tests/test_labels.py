import json

import numpy as np
import pytest

from segdemo import labels as labels_module
from segdemo.labels import (
    CITYSCAPES19,
    CITYSCAPES_LABELS,
    ROAD,
    LabelSet,
    get_label_set,
    list_label_sets,
)

TRAIN_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDEMO_CACHE", str(tmp_path / "cache"))


def test_table_matches_cityscapesscripts():
    cs = pytest.importorskip("cityscapesscripts.helpers.labels")
    ours = [(lb.name, lb.id, lb.train_id, lb.category, lb.color) for lb in CITYSCAPES_LABELS]
    theirs = [(lb.name, lb.id, lb.trainId, lb.category, tuple(lb.color)) for lb in cs.labels]
    assert ours == theirs


def test_label_ids_to_train_ids_match_cityscapesscripts():
    cs = pytest.importorskip("cityscapesscripts.helpers.labels")
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    train = CITYSCAPES19.from_label_ids(ids)
    assert train.dtype == np.uint8 and train.shape == (16, 16)
    for label_id in range(256):
        expected = cs.id2label[label_id].trainId if label_id in cs.id2label else 255
        expected = 255 if expected < 0 else expected
        assert train.reshape(-1)[label_id] == expected, label_id
    # Other integer dtypes, negative and out-of-range ids.
    wide = np.array([[-1, 7, 26, 300, 33]], dtype=np.int32)
    assert CITYSCAPES19.from_label_ids(wide).tolist() == [[255, 0, 13, 255, 18]]


def test_cityscapes19_classes_and_colors():
    cs = pytest.importorskip("cityscapesscripts.helpers.labels")
    assert CITYSCAPES19.names == TRAIN_NAMES
    assert CITYSCAPES19.num_classes == 19 and CITYSCAPES19.ignore_index == 255
    for train_id, color in enumerate(CITYSCAPES19.colors):
        assert tuple(cs.trainId2label[train_id].color) == color


def test_road_label_set():
    ids = np.array([7, 8, 11, 26, 9, 0, 1, 5, 6, 23], dtype=np.uint8)
    # road -> 1; annotated classes (even parking) -> 0; void (unlabeled, ego, dynamic, ground) -> ignore
    assert ROAD.from_label_ids(ids).tolist() == [1, 0, 0, 0, 0, 255, 255, 255, 255, 0]
    assert ROAD.num_classes == 2 and ROAD.colors[1] == (128, 64, 128)


def test_from_colors_exact_palette_and_duplicates():
    colors = [
        (128, 64, 128),  # road
        (153, 153, 153),  # pole == polegroup -> pole
        (0, 0, 142),  # car == license plate -> car
        (250, 170, 160),  # parking: not a train class -> ignore
        (0, 0, 0),  # void
        (230, 150, 140),  # rail track -> ignore
        (119, 11, 32),  # bicycle
    ]
    rgb = np.array([colors], dtype=np.uint8)
    train, n_far = CITYSCAPES19.from_colors(rgb, max_distance=0)
    assert train.tolist() == [[0, 5, 13, 255, 255, 255, 18]]
    assert n_far == 0
    road, _ = ROAD.from_colors(rgb)
    assert road.tolist() == [[1, 0, 0, 0, 255, 0, 0]]


def test_from_colors_far_pixels_are_ignored_and_counted():
    rgb = np.array([[(130, 66, 126), (255, 255, 255), (128, 60, 135), (40, 240, 40)]], np.uint8)
    train, n_far = CITYSCAPES19.from_colors(rgb, max_distance=20)
    assert train.tolist() == [[0, 255, 0, 255]]
    assert n_far == 2
    loose, n_far = CITYSCAPES19.from_colors(rgb, max_distance=None)
    assert n_far == 0 and loose[0, 3] == 8 and loose[0, 0] == 0  # (40, 240, 40) -> vegetation


def test_from_colors_agrees_with_brute_force_nearest():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    train, _ = CITYSCAPES19.from_colors(rgb)
    palette = np.array([lb.color for lb in CITYSCAPES_LABELS if lb.id >= 0], dtype=np.int64)
    label_ids = np.array([lb.id for lb in CITYSCAPES_LABELS if lb.id >= 0])
    d2 = ((rgb[:, :, None, :].astype(np.int64) - palette[None, None]) ** 2).sum(-1)
    nearest = label_ids[d2.argmin(-1)]
    best = d2.min(-1)
    expected = CITYSCAPES19.from_label_ids(nearest.astype(np.uint8))
    # Exact ties between two palette colours may resolve either way; there are none here.
    ties = (d2 == best[..., None]).sum(-1) > 1
    assert (train[~ties] == expected[~ties]).all()


def test_colorize_round_trip():
    rng = np.random.default_rng(1)
    train = rng.integers(0, 19, (8, 9)).astype(np.uint8)
    train[0, :3] = 255
    rgb = CITYSCAPES19.colorize(train)
    assert rgb.shape == (8, 9, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[train == 0][0].tolist() == [128, 64, 128]
    back, n_far = CITYSCAPES19.from_colors(rgb, max_distance=0)
    assert (back == train).all() and n_far == 0
    road = np.array([[0, 1, 255]], dtype=np.uint8)
    assert (ROAD.from_colors(ROAD.colorize(road))[0] == road).all()


def test_dict_round_trip_is_json_able():
    for name in list_label_sets():
        label_set = get_label_set(name)
        d = json.loads(json.dumps(label_set.to_dict()))
        again = LabelSet.from_dict(d)
        assert again == label_set
        ids = np.arange(34, dtype=np.uint8)
        assert (again.from_label_ids(ids) == label_set.from_label_ids(ids)).all()
    with pytest.raises(ValueError, match="names"):
        LabelSet.from_dict({"name": "x"})


def test_unknown_label_set_lists_valid_names():
    with pytest.raises(ValueError, match="cityscapes19.*road"):
        get_label_set("nope")
    assert get_label_set(CITYSCAPES19) is CITYSCAPES19
    assert list_label_sets() == ["cityscapes19", "road"]


def test_lut_cached_on_disk_and_corrupt_file_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(labels_module, "_LUTS", {})
    rgb = np.array([[(128, 64, 128), (70, 70, 70)]], dtype=np.uint8)
    assert CITYSCAPES19.from_colors(rgb)[0].tolist() == [[0, 2]]
    (lut_file,) = (tmp_path / "cache" / "lut").glob("*.npy")
    lut_file.write_bytes(b"garbage")
    monkeypatch.setattr(labels_module, "_LUTS", {})
    assert CITYSCAPES19.from_colors(rgb)[0].tolist() == [[0, 2]]
    assert np.load(lut_file).shape == (256**3,)
