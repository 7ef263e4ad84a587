"""DATA for compression: image folders, .npz, factories (old and new contracts), unlabeled transfer sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekit.cli import main
from edgekit.compress import DistillConfig, distill, finetune
from edgekit.compress.distill import logit_loss, soft_loss
from edgekit.compress.measure import evaluate
from edgekit.data import FASHION_MNIST_PREPROCESS, load_fashion_mnist
from edgekit.data.fashion_mnist import FASHION_MNIST_DIR, _read_idx
from edgekit.data.training import UNLABELED, ArrayLoader, MixedLoader, train_data, train_data_for_model
from edgekit.errors import DataError, ExitCode
from edgekit.models import resolve_model

LABELLED = 300  # Fashion-MNIST training images 0..299, as PNGs in class folders
UNLABELED_IMAGES = 400  # images 300..699, as PNGs in one flat folder


@pytest.fixture(scope="module")
def pixels() -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = _read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return images[: LABELLED + UNLABELED_IMAGES], labels[: LABELLED + UNLABELED_IMAGES]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, pixels) -> tuple[Path, Path]:
    """``fashion/<label>/NNNNN.png`` (real Fashion-MNIST PNGs; folder names 0..9 are the model's
    output indices) and ``flat/NNNNN.png`` (unlabeled)."""
    images, labels = pixels
    root = tmp_path_factory.mktemp("data")
    for i in range(LABELLED + UNLABELED_IMAGES):
        folder = root / "fashion" / str(labels[i]) if i < LABELLED else root / "flat"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i], "L").save(folder / f"{i:05d}.png")
    return root / "fashion", root / "flat"


@pytest.fixture(scope="module")
def example():
    return resolve_model("example:fashion-cnn")


def _recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def _student():
    from edgekit.examples.fashion_cnn import FashionCNN

    torch.manual_seed(0)
    return FashionCNN(widths=(4, 8, 16), hidden=32)


# --- labelled DATA ------------------------------------------------------------------------------


def test_image_folder_gets_the_models_preprocessing_and_a_seeded_split(folders, example) -> None:
    data = train_data_for_model(str(folders[0]), example.module, example.example_inputs, model="example:fashion-cnn")
    assert data.name == f"fashion/ ({LABELLED} images, 10 classes): seeded split 0, 270 train / 30 validation"
    assert data.labeled and data.preprocess == FASHION_MNIST_PREPROCESS
    # the PNGs, read with the example's preprocessing, are the training set's arrays bit for bit
    train_x = np.concatenate([x.numpy() for x, _ in data.train])
    val_x = np.concatenate([x.numpy() for x, _ in data.val])
    reference = load_fashion_mnist("train", limit=LABELLED)
    order = [int(p.stem) for c in sorted(p.name for p in folders[0].iterdir()) for p in sorted((folders[0] / c).iterdir())]
    pool = reference.x[order]
    assert {a.tobytes() for a in np.concatenate([train_x, val_x])} == {a.tobytes() for a in pool}
    val_y = np.concatenate([y.numpy() for _, y in data.val])
    assert np.array_equal(val_y, reference.y[order][np.sort(np.random.default_rng(0).permutation(LABELLED)[:30])])
    # the bundled model knows these images: the preprocessing is the one it was trained with
    assert evaluate(example.module, data.val) >= 0.8
    again = train_data_for_model(str(folders[0]), example.module, example.example_inputs, model="example:fashion-cnn")
    assert np.array_equal(again.val.x, data.val.x)  # the split is seeded


def test_compress_fine_tunes_the_example_on_an_image_folder(folders, tmp_path) -> None:
    recipe = _recipe(tmp_path, "- finetune: {epochs: 1}\n")
    out = tmp_path / "out"
    code = main(["--quiet", "compress", "example:fashion-cnn", "--recipe", recipe, "--data", str(folders[0]),
                 "-o", str(out), "--json"])
    assert code == ExitCode.OK
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == (f"fashion/ ({LABELLED} images, 10 classes): seeded split 0, 270 train / 30 validation "
                                 "(validation split)")
    step = report["steps"][0]
    assert step["before"]["accuracy"] >= 0.8 and step["after"]["accuracy"] is not None
    assert (out / "model.pt").is_file()


def test_preprocess_flag_replaces_the_models_own(folders, tmp_path, capsys) -> None:
    recipe = _recipe(tmp_path, "- finetune: {epochs: 1}\n")
    out = tmp_path / "out"
    # RGB [0, 1] images do not fit the example's 1×28×28 input: refused before anything trains
    code = main(["compress", "example:fashion-cnn", "--recipe", recipe, "--data", str(folders[0]), "--preprocess", "0-1",
                 "-o", str(out)])
    assert code == ExitCode.USAGE
    assert "input 'input' is 3×28×28 per sample, the model takes 1×28×28" in capsys.readouterr().err
    assert main(["compress", "example:fashion-cnn", "--recipe", recipe, "--data", str(folders[0]), "--preprocess",
                 "nope", "-o", str(out)]) == ExitCode.USAGE
    assert "unknown preprocess preset 'nope'" in capsys.readouterr().err
    assert not out.exists()


def test_npz_with_labels(tmp_path, example) -> None:
    train = load_fashion_mnist("train", limit=200)
    path = tmp_path / "d.npz"
    np.savez(path, input=train.x, y=train.y.astype(np.int32))
    data = train_data_for_model(str(path), example.module, example.example_inputs)
    assert data.name == "d.npz (200 samples, labeled): seeded split 0, 180 train / 20 validation"
    assert next(iter(data.train))[1].dtype == torch.int64  # int32 labels become cross-entropy's type
    model, report = finetune(example.module, data, {"epochs": 1})
    assert report.before.accuracy >= 0.8 and report.after.accuracy is not None


@pytest.mark.parametrize("arrays, match", [
    ({"input": np.zeros((20, 1, 28, 28), np.uint8), "y": np.zeros(20)}, "inputs are uint8, and torch models train on float"),
    ({"input": np.zeros((20, 1, 28, 28), np.float32), "y": np.full(20, 12)},
     "labels go up to 12, and the model has 10 outputs"),
    ({"input": np.zeros((20, 1, 28, 28), np.float32), "y": np.full(20, 0.5)}, "labels are not whole numbers"),
    ({"input": np.zeros((20, 1, 28, 28), np.float32), "y": np.zeros((20, 10))}, "labels are shaped 20×10"),
    ({"input": np.zeros((20, 3, 28, 28), np.float32), "y": np.zeros(20)}, "is 3×28×28 per sample, the model takes 1×28×28"),
    ({"input": np.zeros((1, 1, 28, 28), np.float32), "y": np.zeros(1)}, "too few to hold some out for validation"),
])
def test_bad_npz_is_a_data_error_before_training(tmp_path, example, arrays, match) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match):
        train_data_for_model(str(path), example.module, example.example_inputs)


def test_multi_input_models_need_the_loader_factory(tmp_path) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, a=np.zeros((4, 3), np.float32), b=np.zeros((4, 3), np.float32), y=np.zeros(4))
    with pytest.raises(DataError, match="has 2 inputs .*single-input") as info:
        train_data(str(path))
    assert "(train_loader, val_loader)" in info.value.hint
    with pytest.raises(DataError, match="the model takes 2 inputs"):
        train_data(str(path), input_shapes=[(1, 3), (1, 3)])


def test_unknown_training_data_lists_the_forms() -> None:
    with pytest.raises(DataError, match="unknown training data 'mnist'") as info:
        train_data("mnist")
    assert "a folder of images, an .npz" in info.value.hint


# --- factories: the old (train_loader, val_loader) contract and DATA ---------------------------


def pair_of_loaders():
    """The old contract: two loaders, used as they are."""
    train = load_fashion_mnist("train", limit=64)
    return ArrayLoader(train.x[:48], train.y[:48], batch_size=16), ArrayLoader(train.x[48:], train.y[48:], batch_size=16)


def pair_of_batch_lists():
    """The old contract with lists of (x, y) batches: two batches for training, one for validation."""
    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64)
    return [(x, y), (x, y)], [(x, y)]


def xy_arrays():
    """DATA: one (x, y) pair of arrays."""
    train = load_fashion_mnist("train", limit=50)
    return train.x, train.y


def two_batches():
    """DATA: a list of two (x, y) batches (a pair, but of batches, not of loaders)."""
    train = load_fashion_mnist("train", limit=40)
    return [(train.x[:20], train.y[:20]), (train.x[20:], train.y[20:])]


def test_factory_returning_loaders_is_used_as_is() -> None:
    data = train_data("tests.compress.test_data:pair_of_loaders")
    assert data.name == "tests.compress.test_data:pair_of_loaders" and isinstance(data.train, ArrayLoader)
    assert len(data.train.y) == 48 and len(data.val.y) == 16  # not re-split
    lists = train_data("tests.compress.test_data:pair_of_batch_lists")
    assert len(lists.train) == 2 and len(lists.val) == 1


@pytest.mark.parametrize("factory, samples", [("xy_arrays", 50), ("two_batches", 40)])
def test_factory_returning_data_is_split(factory, samples) -> None:
    data = train_data(f"tests.compress.test_data:{factory}")
    n_val = round(samples * 0.1)
    assert data.name.endswith(f"seeded split 0, {samples - n_val} train / {n_val} validation")
    assert len(data.train.y) + len(data.val.y) == samples


def test_old_factory_form_runs_a_recipe_from_the_cli(tmp_path) -> None:
    recipe = _recipe(tmp_path, "- finetune: {epochs: 1}\n")
    out = tmp_path / "out"
    assert main(["--quiet", "compress", "example:fashion-cnn", "--recipe", recipe, "--data",
                 "tests.compress.test_data:pair_of_loaders", "-o", str(out)]) == ExitCode.OK
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "tests.compress.test_data:pair_of_loaders (validation split)"


# --- unlabeled DATA: refused where labels are needed, a transfer set for distillation ---------


def test_unlabeled_folder_is_refused_by_finetune(folders, tmp_path, capsys, example) -> None:
    recipe = _recipe(tmp_path, "- finetune: {epochs: 1}\n")
    out = tmp_path / "out"
    code = main(["compress", "example:fashion-cnn", "--recipe", recipe, "--data", str(folders[1]), "-o", str(out)])
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"recipe step 1 (finetune) needs labelled data, and flat/ ({UNLABELED_IMAGES} images, unlabeled) has no labels" in err
    assert "distill" in err and not out.exists()
    # called directly, the step refuses too (a DataError, not a crash inside the loss)
    data = train_data_for_model(str(folders[1]), example.module, example.example_inputs, model="example:fashion-cnn")
    with pytest.raises(DataError, match="needs labelled data"):
        finetune(_student(), data, {"epochs": 1})


def test_unlabeled_data_only_fits_recipes_of_distill_steps(folders, tmp_path, capsys) -> None:
    recipe = _recipe(tmp_path, "- distill: {student: tests.compress.test_data:_student, training: {epochs: 0}}\n"
                               "- quantize: {}\n")
    assert main(["compress", "example:fashion-cnn", "--recipe", recipe, "--data", str(folders[1]),
                 "-o", str(tmp_path / "out")]) == ExitCode.USAGE
    assert "recipe step 2 (quantize) needs labelled data" in capsys.readouterr().err
    recipe = _recipe(tmp_path, "- distill: {student: tests.compress.test_data:_student, transfer: missing/}\n")
    assert main(["compress", "example:fashion-cnn", "--recipe", recipe, "--data", str(folders[0]),
                 "-o", str(tmp_path / "out")]) == ExitCode.USAGE
    assert "recipe step 1 (distill): transfer: data not found: missing/" in capsys.readouterr().err


def test_distill_takes_an_unlabeled_transfer_set_beside_labelled_data(folders, tmp_path, example) -> None:
    recipe = _recipe(tmp_path, "- distill:\n"
                               "    student: edgekit.examples.fashion_cnn:FashionCNN\n"
                               "    student_kwargs: {widths: [4, 8, 16], hidden: 32}\n"
                               f"    transfer: {folders[1]}\n"
                               "    training: {epochs: 1}\n")
    out = tmp_path / "out"
    assert main(["--quiet", "compress", "example:fashion-cnn", "--recipe", recipe, "--data", str(folders[0]),
                 "-o", str(out)]) == ExitCode.OK
    step = json.loads((out / "report.json").read_text())["steps"][0]
    assert step["extra"]["transfer"] == [{"data": f"flat/ ({UNLABELED_IMAGES} images, unlabeled)",
                                          "samples": UNLABELED_IMAGES}]
    assert step["before"]["accuracy"] >= 0.8 and step["after"]["accuracy"] is not None  # the labelled validation split
    history = step["extra"]["history"]
    assert history[-1]["mean_hard_loss"] > 0  # the labelled batches' cross-entropy counted too


def test_unlabeled_data_alone_teaches_the_student_from_the_teacher(folders, example) -> None:
    data = train_data_for_model(str(folders[1]), example.module, example.example_inputs, model="example:fashion-cnn")
    student, report = distill(_student(), example.module, data, {"training": {"epochs": 2, "lr": 3e-3}})
    losses = [r["train_loss"] for r in report.details["history"] if "train_loss" in r]
    assert len(losses) == 2 and losses[1] < losses[0]  # the soft loss alone falls
    assert report.details["history"][-1]["mean_hard_loss"] is None  # no labels, no cross-entropy
    assert report.after.accuracy is None and "no accuracy was measured" in report.notes[0]
    assert report.details["transfer"][0]["samples"] == UNLABELED_IMAGES


def test_an_unlabeled_sample_is_taught_by_the_soft_loss_alone() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    cfg = DistillConfig(alpha=0.7, temperature=4)
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    loss, soft, hard = logit_loss(s, t, labels, cfg)  # all labelled: the classic loss
    expected = 0.7 * soft_loss(s, t, 4) + 0.3 * torch.nn.functional.cross_entropy(s, labels)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    none = torch.full((6,), UNLABELED)
    loss, soft, hard = logit_loss(s, t, none, cfg)  # none labelled: the soft loss, weight 1
    assert hard is None and float(loss) == pytest.approx(float(soft_loss(s, t, 4)), rel=1e-5)
    some = torch.tensor([3, UNLABELED, 4, UNLABELED, 5, 9])
    loss, _, hard = logit_loss(s, t, some, cfg)
    per_soft = [float(soft_loss(s[i : i + 1], t[i : i + 1], 4)) for i in range(6)]
    per_hard = [float(torch.nn.functional.cross_entropy(s[i : i + 1], some[i : i + 1])) if some[i] >= 0 else 0.0
                for i in range(6)]
    manual = np.mean([0.7 * per_soft[i] + 0.3 * per_hard[i] if some[i] >= 0 else per_soft[i] for i in range(6)])
    assert float(loss) == pytest.approx(manual, rel=1e-5)
    assert float(hard) == pytest.approx(np.mean([per_hard[i] for i in (0, 2, 4, 5)]), rel=1e-5)


def test_mixed_loader_interleaves_every_batch_once() -> None:
    a = ArrayLoader(np.zeros((50, 2), np.float32), None, batch_size=10)  # 5 unlabeled batches
    b = ArrayLoader(np.ones((30, 2), np.float32), np.zeros(30, np.int64), batch_size=10)  # 3 labelled
    mixed = MixedLoader(a, b)
    batches = list(mixed)
    assert len(mixed) == 8 and len(batches) == 8
    assert sum(int((y == UNLABELED).all()) for _, y in batches) == 5
    first = [bool((y == UNLABELED).all()) for _, y in batches]
    assert first != [True] * 5 + [False] * 3  # interleaved, not one loader after the other (seeded)


# --- deploy --recipe takes the same DATA -------------------------------------------------------


def test_deploy_recipe_data_is_any_data(folders, tmp_path) -> None:
    from edgekit.deploy import DeployOptions, _run_recipe

    resolved = resolve_model("example:fashion-cnn")
    options = DeployOptions(recipe=_recipe(tmp_path, "- finetune: {epochs: 0}\n"), recipe_data=str(folders[0]))
    assert isinstance(_run_recipe(resolved, options), torch.nn.Module)
    options = DeployOptions(recipe=options.recipe, recipe_data=str(folders[1]))
    with pytest.raises(DataError, match=r"recipe step 1 \(finetune\) needs labelled data"):
        _run_recipe(resolved, options)
