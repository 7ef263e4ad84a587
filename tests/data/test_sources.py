"""DATA references: every loader on real files, the split, the shape checks and every error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_PREPROCESS,
    Dataset,
    Preprocess,
    load_data,
    load_fashion_mnist,
)
from edgekit.data.fashion_mnist import FASHION_MNIST_DIR, _read_idx
from edgekit.errors import DataError


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, value // 2, 255 - value)
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """cats/ (3 images, one nested), dogs/ (2 images), plus files a loader must skip."""
    root = tmp_path / "pets"
    for i in range(2):
        write_image(root / "cats" / f"c{i}.png", 10 + i)
    write_image(root / "cats" / "more" / "c9.JPG", 30)
    for i in range(2):
        write_image(root / "dogs" / f"d{i}.bmp", 200 + i)
    (root / "cats" / "notes.txt").write_text("not an image")
    write_image(root / ".hidden" / "x.png", 0)
    return root


# --- example data ------------------------------------------------------------------------------


def test_example_fashion_mnist_test_and_train() -> None:
    test = load_data("example:fashion-mnist", limit=100)
    direct = load_fashion_mnist("test", limit=100)
    assert np.array_equal(test.inputs["input"], direct.x) and np.array_equal(test.labels, direct.y)
    assert test.preprocess == FASHION_MNIST_PREPROCESS and test.classes == FASHION_MNIST_CLASSES
    assert test.description() == "Fashion-MNIST test (100 images, 10 classes), first 100"
    train = load_data("example:fashion-mnist", split="train", limit=10)
    assert train.name == "Fashion-MNIST train"
    assert np.array_equal(train.inputs["input"], load_fashion_mnist("train", limit=10).x)
    assert not np.array_equal(train.inputs["input"], test.inputs["input"][:10])


def test_example_data_takes_the_model_input_name() -> None:
    data = load_data("example:fashion-mnist", input_names=["x"], input_shapes={"x": (1, 1, 28, 28)}, limit=5)
    assert list(data.inputs) == ["x"]


def test_unknown_example_data() -> None:
    with pytest.raises(DataError, match="unknown example data 'example:cifar'") as info:
        load_data("example:cifar")
    assert "example:fashion-mnist" in info.value.hint
    with pytest.raises(DataError, match="unknown Fashion-MNIST split"):
        load_data("example:fashion-mnist", split="val")


# --- image folders -----------------------------------------------------------------------------


def test_fashion_pngs_in_class_folders_load_to_the_same_arrays(tmp_path: Path) -> None:
    """The acceptance check's core: 50 test images as PNGs give load_fashion_mnist's arrays and labels."""
    pixels = _read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:50]
    reference = load_fashion_mnist("test", limit=50)
    for i, (image, label) in enumerate(zip(pixels, reference.y)):
        write_dir = tmp_path / "fashion" / str(label)
        write_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(write_dir / f"{i:03d}.png")
    data = load_data(tmp_path / "fashion", preprocess=FASHION_MNIST_PREPROCESS, input_shapes=[(1, 1, 28, 28)])
    # ImageFolder order: by class, then file name; file names carry the test-set index
    order = [int(path.stem) for label in data.classes for path in sorted((tmp_path / "fashion" / label).iterdir())]
    assert np.array_equal(data.inputs["input"], reference.x[order])  # bit for bit
    assert np.array_equal(data.labels, reference.y[order])
    assert data.inputs["input"].dtype == np.float32
    assert data.description() == f"fashion/ (50 images, {len(data.classes)} classes)"


def test_class_folders_give_sorted_classes_and_labels(class_folder: Path) -> None:
    data = load_data(class_folder)
    assert data.classes == ("cats", "dogs") and data.labels.tolist() == [0, 0, 0, 1, 1]
    assert data.inputs["input"].shape == (5, 3, 8, 8)
    assert data.preprocess == Preprocess()  # default: RGB, [0, 1], NCHW float32
    # files in a class sort by name, a nested folder after them (os.walk order)
    np.testing.assert_allclose(data.inputs["input"][:3, 0, 0, 0], [10 / 255, 11 / 255, 30 / 255], atol=2 / 255)
    assert data.description() == "pets/ (5 images, 2 classes)"


def test_flat_folder_is_unlabeled(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "flat" / f"{i}.jpeg", 50 * i, size=(6, 4))
    data = load_data(tmp_path / "flat", preprocess=Preprocess(layout="nhwc", scale=1.0))
    assert data.labels is None and data.classes is None
    assert data.inputs["input"].shape == (3, 4, 6, 3)
    assert data.description() == "flat/ (3 images, unlabeled)"


def test_image_folder_limit_is_a_seeded_choice_across_classes(tmp_path: Path) -> None:
    for label in ("a", "b"):
        for i in range(10):
            write_image(tmp_path / "set" / label / f"{i}.png", 5 * i + (100 if label == "b" else 0))
    first = load_data(tmp_path / "set", limit=6)
    again = load_data(tmp_path / "set", limit=6)
    assert len(first) == 6 and np.array_equal(first.inputs["input"], again.inputs["input"])
    assert set(first.labels.tolist()) == {0, 1}  # the first 6 files would all be class "a"
    assert first.description() == "set/ (6 images, 2 classes), 6 of 20 chosen with seed 0"


def test_images_of_different_sizes_need_a_resize(tmp_path: Path) -> None:
    write_image(tmp_path / "mixed" / "a.png", size=(8, 8))
    write_image(tmp_path / "mixed" / "b.png", size=(9, 8))
    with pytest.raises(DataError, match=r"b.png becomes 3×8×9, a.png 3×8×8") as info:
        load_data(tmp_path / "mixed")
    assert "--resize" in info.value.hint
    assert load_data(tmp_path / "mixed", preprocess=Preprocess(resize=(4, 4))).inputs["input"].shape == (2, 3, 4, 4)


def test_undecodable_image_names_the_file(tmp_path: Path) -> None:
    write_image(tmp_path / "bad" / "ok.png")
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot decode image .*broken.png"):
        load_data(tmp_path / "bad")


def test_preprocess_error_names_the_file(tmp_path: Path) -> None:
    write_image(tmp_path / "small" / "tiny.png", size=(4, 4))
    with pytest.raises(DataError, match=r"tiny.png: image is 4×4 after resizing, smaller than center_crop"):
        load_data(tmp_path / "small", preprocess=Preprocess(center_crop=8))


def test_folder_with_images_and_class_folders_is_refused(class_folder: Path) -> None:
    write_image(class_folder / "stray.png")
    with pytest.raises(DataError, match="has both images and class subfolders"):
        load_data(class_folder)


def test_empty_class_folder_is_refused(class_folder: Path) -> None:
    (class_folder / "birds").mkdir()
    with pytest.raises(DataError, match=r"class folder .*birds has no images"):
        load_data(class_folder)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no images in") as info:
        load_data(tmp_path / "empty")
    assert ".png" in info.value.hint


@pytest.mark.parametrize(
    ("spec", "model_shape", "hint"),
    [
        (Preprocess(), (1, 1, 8, 8), "--grayscale"),
        (Preprocess(), (1, 3, 16, 16), "--resize 16,16"),
        (Preprocess(), (1, 8, 8, 3), "--layout nhwc"),
        (Preprocess(grayscale=True), (1, 3, 8, 8), "no --grayscale"),
    ],
)
def test_image_shape_mismatch_suggests_the_flag(class_folder: Path, spec: Preprocess, model_shape: tuple,
                                                hint: str) -> None:
    with pytest.raises(DataError, match="per sample, the model takes") as info:
        load_data(class_folder, preprocess=spec, input_shapes=[model_shape])
    assert hint in info.value.hint


def test_free_dimensions_match_anything(class_folder: Path) -> None:
    data = load_data(class_folder, input_shapes={"pixels": ("batch", 3, None, -1)})
    assert list(data.inputs) == ["pixels"]


# --- .npz and .npy -----------------------------------------------------------------------------


def test_npz_with_named_inputs_and_labels(tmp_path: Path) -> None:
    a, b = np.ones((4, 3), np.float32), np.arange(8, dtype=np.int64).reshape(4, 2)
    np.savez(tmp_path / "d.npz", b=b, a=a, y=np.array([0, 1, 2, 1]))
    data = load_data(tmp_path / "d.npz", input_names=["a", "b"], input_shapes=[(1, 3), (1, 2)])
    assert list(data.inputs) == ["a", "b"] and data.labels.tolist() == [0, 1, 2, 1]
    assert data.inputs["b"].dtype == np.int64  # integer inputs stay integers
    assert data.description() == "d.npz (4 samples, labeled)"


def test_npz_single_array_fits_a_single_input_model(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", images=np.zeros((5, 1, 2, 2)))
    data = load_data(tmp_path / "one.npz", input_names=["input"])
    assert list(data.inputs) == ["input"] and data.labels is None
    assert data.inputs["input"].dtype == np.float32  # float64 becomes what models take


def test_npz_wrong_names_list_expected_and_found(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 1)), c=np.zeros((2, 1)))
    with pytest.raises(DataError, match=r"has arrays \['a', 'c'\], the model's inputs are \['a', 'b'\]"):
        load_data(tmp_path / "d.npz", input_names=["a", "b"])


def test_npz_input_named_y_is_an_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", y=np.zeros((2, 3), np.float32))
    data = load_data(tmp_path / "d.npz", input_names=["y"])
    assert list(data.inputs) == ["y"] and data.labels is None
    with pytest.raises(DataError, match="has only labels"):
        load_data(tmp_path / "d.npz")


def test_npz_object_arrays_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="cannot read .*obj.npz as .npz") as info:
        load_data(tmp_path / "obj.npz")
    assert "object arrays are refused" in info.value.hint


def test_npz_corrupt_and_non_numeric(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read .*bad.npz"):
        load_data(tmp_path / "bad.npz")
    np.savez(tmp_path / "text.npz", x=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"text.npz: x holds <U1 values"):
        load_data(tmp_path / "text.npz")


def test_npz_labels_must_match_the_samples(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="2 labels for 3 samples"):
        load_data(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", a=np.zeros((3, 2)), b=np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"inputs differ in length \(a: 3, b: 4\)"):
        load_data(tmp_path / "e.npz")


def test_npy_one_input_with_limit(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(24, dtype=np.float32).reshape(6, 4))
    data = load_data(tmp_path / "x.npy", limit=4, input_names=["features"], input_shapes=[(1, 4)])
    assert data.inputs["features"].shape == (4, 4) and data.inputs["features"][3, 0] == 12
    assert type(data.inputs["features"]) is np.ndarray  # a copy, not a view of the mapped file


def test_npy_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object))
    with pytest.raises(DataError, match="cannot read .*obj.npy as .npy"):
        load_data(tmp_path / "obj.npy")
    np.save(tmp_path / "scalar.npy", np.float32(3))
    with pytest.raises(DataError, match="is a single number"):
        load_data(tmp_path / "scalar.npy")
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(DataError, match=r"input 'input' is 5 per sample, the model takes 4") as info:
        load_data(tmp_path / "x.npy", input_shapes=[(1, 4)])
    assert "(N, 4)" in info.value.hint
    with pytest.raises(DataError, match="has arrays"):
        load_data(tmp_path / "x.npy", input_names=["a", "b"])


# --- factories ---------------------------------------------------------------------------------

FACTORY_MODULE = '''
import numpy as np
import torch

X = np.arange(20, dtype=np.float32).reshape(10, 2)
Y = np.arange(10) % 3

def array():
    return X

def named():
    return {"a": X, "y": Y}

def pair():
    return torch.from_numpy(X), torch.from_numpy(Y)

def batch_list():
    return [X[:4], X[4:]]

def loader():
    # what a torch DataLoader yields: [inputs, targets] lists of tensors
    for i in range(0, 10, 3):
        yield [torch.from_numpy(X[i:i + 3]), torch.from_numpy(Y[i:i + 3])]

def endless():
    while True:
        yield X[:2]

def mixed():
    yield X[:2]
    yield (X[2:4], Y[2:4])

def ragged():
    yield X[:2]
    yield np.zeros((2, 5), np.float32)

def empty():
    return iter(())

def text():
    return "data"

def triple():
    return (X, Y, Y)

def broken():
    raise RuntimeError("disk on fire")

NOT_CALLABLE = 3
'''


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "userpkg_data.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userpkg_data"


X = np.arange(20, dtype=np.float32).reshape(10, 2)
Y = np.arange(10) % 3


@pytest.mark.parametrize(
    ("fn", "has_labels"),
    [("array", False), ("named", True), ("pair", True), ("batch_list", False), ("loader", True)],
)
def test_factory_forms(factory: str, fn: str, has_labels: bool) -> None:
    data = load_data(f"{factory}:{fn}", input_names=["input"], input_shapes=[(1, 2)])
    assert np.array_equal(data.inputs["input"], X)
    assert (data.labels is not None) == has_labels
    if has_labels:
        assert np.array_equal(data.labels, Y)
    assert data.name == f"{factory}:{fn}"


def test_factory_dict_keeps_its_names(factory: str) -> None:
    assert list(load_data(f"{factory}:named").inputs) == ["a"]


def test_endless_factory_stops_at_the_limit(factory: str) -> None:
    data = load_data(f"{factory}:endless", limit=5)
    assert len(data) == 5


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        ("mixed", "batch 1 differs in its inputs or labels"),
        ("ragged", "batches do not stack"),
        ("empty", "gave no batches"),
        ("text", r"returned str"),
        ("triple", "tuple of 3 items"),
        ("broken", r"broken\(\) raised RuntimeError: disk on fire"),
        ("NOT_CALLABLE", "is a int, not a function"),
        ("missing", "has no attribute 'missing'"),
    ],
)
def test_factory_errors(factory: str, fn: str, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        load_data(f"{factory}:{fn}")
    assert info.value.hint


def test_factory_module_not_importable() -> None:
    with pytest.raises(DataError, match="cannot import no_such_module_xyz"):
        load_data("no_such_module_xyz:data")


# --- references --------------------------------------------------------------------------------


def test_unknown_references(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data not found: nothing/here"):
        load_data("nothing/here")
    (tmp_path / "notes.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="cannot read .*notes.csv as data"):
        load_data(tmp_path / "notes.csv")
    with pytest.raises(DataError, match="limit must be at least 1"):
        load_data("example:fashion-mnist", limit=0)


def test_shapes_and_names_must_agree() -> None:
    with pytest.raises(DataError, match="input shapes are given for"):
        load_data("example:fashion-mnist", input_names=["a"], input_shapes={"b": (1, 1, 28, 28)}, limit=2)
    with pytest.raises(DataError, match="2 input shapes for 1 inputs"):
        load_data("example:fashion-mnist", input_names=["a"], input_shapes=[(1,), (1,)], limit=2)


def test_a_dataset_passes_through_with_a_limit(class_folder: Path) -> None:
    data = load_data(class_folder)
    assert load_data(data) is data
    assert len(load_data(data, limit=2)) == 2


# --- Dataset -----------------------------------------------------------------------------------


def make_dataset(n: int = 1000, classes: int = 10) -> Dataset:
    x = np.arange(n, dtype=np.float32)[:, None]  # each sample's value is its index
    return Dataset(name="images/", source="images", inputs={"input": x}, labels=np.arange(n) % classes,
                   classes=tuple(str(c) for c in range(classes)), unit="images")


def test_split_is_disjoint_complete_and_described() -> None:
    data = make_dataset()
    cal, ev = data.split(256, seed=0)
    cal_ids, ev_ids = cal.inputs["input"][:, 0], ev.inputs["input"][:, 0]
    assert len(cal) == 256 and len(ev) == 744
    assert not set(cal_ids) & set(ev_ids) and len(set(cal_ids) | set(ev_ids)) == 1000
    assert np.all(np.diff(cal_ids) > 0) and np.all(np.diff(ev_ids) > 0)  # original order kept
    assert np.array_equal(cal.labels, cal_ids.astype(np.int64) % 10)  # labels follow their samples
    expected = "images/ (1,000 images, 10 classes), seeded split 0: 256 for calibration, 744 for evaluation"
    assert cal.description() == expected and ev.description() == expected


def test_split_is_deterministic_per_seed() -> None:
    data = make_dataset()
    a, _ = data.split(100, seed=1)
    b, _ = data.split(100, seed=1)
    c, _ = data.split(100, seed=2)
    assert np.array_equal(a.inputs["input"], b.inputs["input"])
    assert not np.array_equal(a.inputs["input"], c.inputs["input"])


def test_split_by_fraction() -> None:
    cal, ev = make_dataset(200).split(fraction=0.25, seed=3)
    assert (len(cal), len(ev)) == (50, 150)
    assert "seeded split 3: 50 for calibration, 150 for evaluation" in ev.description()


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0,), {}, "cannot take 0 of 10"),
        ((10,), {}, "cannot take 10 of 10"),
        ((), {}, "either a count or a fraction"),
        ((3,), {"fraction": 0.5}, "either a count or a fraction"),
        ((), {"fraction": 1.0}, "between 0 and 1"),
        ((), {"fraction": 0.01}, "cannot take 0 of 10"),
    ],
)
def test_split_errors(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        make_dataset(10).split(*args, **kwargs)


def test_head_take_and_batches() -> None:
    data = make_dataset(10)
    assert data.head(20) is data
    head = data.head(3)
    assert head.inputs["input"][:, 0].tolist() == [0, 1, 2] and head.description().endswith(", first 3")
    picked = data.take([7, 2], note="picked")
    assert picked.labels.tolist() == [7, 2] and picked.description().endswith(", picked")
    sizes = [len(b["input"]) for b in data.batches(4)]
    assert sizes == [4, 4, 2]
    assert np.array_equal(np.concatenate([b["input"] for b in data.batches(4)]), data.inputs["input"])
    with pytest.raises(DataError, match="batch size must be at least 1"):
        next(data.batches(0))
    with pytest.raises(DataError, match="cannot keep 0 samples"):
        data.head(0)


def test_dataset_validation_and_single_input() -> None:
    with pytest.raises(DataError, match="no input arrays"):
        Dataset(name="d", source="d", inputs={})
    with pytest.raises(DataError, match="has no samples"):
        Dataset(name="d", source="d", inputs={"x": np.zeros((0, 2))})
    two = Dataset(name="d", source="d", inputs={"a": np.zeros((2, 1)), "b": np.zeros((2, 1))})
    with pytest.raises(DataError, match=r"d has 2 inputs \(a, b\)"):
        two.only_input()
    assert make_dataset(4).only_input().shape == (4, 1)


def test_to_dict_is_json(class_folder: Path) -> None:
    record = json.loads(json.dumps(load_data(class_folder).split(2)[1].to_dict()))
    assert record["samples"] == 3 and record["classes"] == ["cats", "dogs"] and record["labeled"] is True
    assert record["notes"] == ["seeded split 0: 2 for calibration, 3 for evaluation"]
    assert record["preprocess"]["formula"].startswith("x = p * ")
