"""Training data for compression (``edgekit compress``, recipes, every step): DATA as batches.

``train_data(ref)`` resolves DATA into a :class:`TrainData` (a training and a validation
iterable of ``(inputs, targets)`` batches): the bundled example's training split, a seeded split
of any other DATA of :func:`edgekit.data.load_data`, or a factory's own ``(train_loader,
val_loader)``. Distillation's unlabeled transfer set and the checks of DATA against a model live
here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgekit.data.fashion_mnist import FASHION_MNIST_PREPROCESS, load_fashion_mnist
from edgekit.data.preprocess import Preprocess
from edgekit.data.sources import Dataset, call_factory, dataset_from_factory_result, load_data
from edgekit.errors import DataError
from edgekit.refs import is_ref

if TYPE_CHECKING:
    import torch


TRAIN_DATASETS = {"example:fashion-mnist": "Fashion-MNIST train (last 5,000 images held out for validation)"}
FASHION_MNIST_VAL_SIZE = 5000
VAL_FRACTION = 0.1  # of a labelled DATA held out for validation (early stopping, step reports, calibration) ...
MAX_VAL_SAMPLES = 5000  # ... at most this many: a figure to compare steps by, cheap to evaluate every epoch
VAL_BATCH = 256
UNLABELED = -1  # the target of a sample without a label: distillation's transfer set (the teacher labels it)
_FORMS = "example:fashion-mnist, a folder of images, an .npz, an .npy, or a factory pkg.module:fn"
_FACTORY_RETURNS = ("(train_loader, val_loader), or data: an array, a dict name→array, (x, y), "
                    "or an iterable of such batches")


class ArrayLoader:
    """Batches of ``(inputs, targets)`` tensors from numpy arrays; re-iterable once per epoch.

    ``y`` None makes unlabeled batches: every target is ``UNLABELED`` (-1), which distillation
    reads as "taught by the teacher alone". ``shuffle`` draws a new order every epoch from
    ``seed``; ``shift_pixels`` rolls each batch by up to that many pixels (the augmentation the
    example model was trained with).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, batch_size: int = 128, shuffle: bool = False,
                 shift_pixels: int = 0, seed: int = 0) -> None:
        if y is not None and len(x) != len(y):
            raise DataError(f"inputs and targets differ in length ({len(x)} vs {len(y)})", "pass matching arrays")
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1 (got {batch_size})", "use e.g. 128")
        self.x = x
        self.y = y if y is not None else np.full(len(x), UNLABELED, np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shift_pixels = shift_pixels
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self):  # noqa: ANN204 - yields (torch.Tensor, torch.Tensor)
        import torch

        order = self._rng.permutation(len(self.y)) if self.shuffle else np.arange(len(self.y))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.shuffle:
                idx = np.sort(idx)  # contiguous reads; the order within a batch does not matter
            xb = torch.from_numpy(self.x[idx])
            if self.shift_pixels:
                dy, dx = (int(v) for v in self._rng.integers(-self.shift_pixels, self.shift_pixels + 1, size=2))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            yield xb, torch.from_numpy(self.y[idx])


class MixedLoader:
    """The batches of several loaders in one epoch, interleaved in a seeded order.

    With lengths known, each epoch is a random permutation of every loader's batches (so each
    loader's share of the epoch is even throughout); without, the loaders take turns.
    """

    def __init__(self, *loaders: Any, seed: int = 0) -> None:
        self.loaders = loaders
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    def __iter__(self):  # noqa: ANN204 - yields the loaders' batches
        try:
            order = self._rng.permutation(np.repeat(np.arange(len(self.loaders)), [len(x) for x in self.loaders]))
        except TypeError:  # a loader without len(): take turns
            order = None
        iterators = [iter(loader) for loader in self.loaders]
        live = list(range(len(iterators)))
        step = 0
        while live:
            pick = int(order[step]) if order is not None and step < len(order) else live[step % len(live)]
            step += 1
            if pick not in live:
                continue
            try:
                yield next(iterators[pick])
            except StopIteration:
                live.remove(pick)


class _NoLabels:
    """The train/val loaders of unlabeled data: iterating one is a DataError, never a crash in a loss."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __iter__(self):  # noqa: ANN204 - raises before yielding
        raise no_labels_error(self.name, "this step")


def no_labels_error(name: str, step: str) -> DataError:
    return DataError(f"{step} needs labelled data, and {name} has no labels",
                     "pass labelled DATA (a folder with one subfolder per class, an .npz with 'y', (x, y) from a "
                     "factory); unlabeled data fits distill only, as --data or as its transfer: set")


@dataclass
class TrainData:
    """What fine-tuning, distillation and calibration take: a training and a validation iterable.

    Each is re-iterable and yields ``(inputs, targets)`` batches of tensors. Validation data
    measures accuracy during compression (early stopping, step reports) and calibrates; keep the
    test set for the final figures.

    Unlabeled data has ``labeled=False``: ``train`` and ``val`` then refuse to be iterated (a
    DataError), and ``unlabeled`` yields every sample with targets ``UNLABELED``, for distillation.
    ``preprocess`` is the spec images were read with (a distillation transfer folder is read with
    the same).
    """

    name: str
    train: Any
    val: Any
    labeled: bool = True
    preprocess: Preprocess | None = None
    unlabeled: Any = None

    def require_labels(self, step: str) -> None:
        """A DataError naming ``step`` when this data has no labels."""
        if not self.labeled:
            raise no_labels_error(self.name, step)

    def sample_inputs(self, n: int = 1) -> "torch.Tensor":
        """The first ``n`` inputs of the validation data (of every sample when unlabeled)."""
        import torch

        source = self.val if self.labeled else self.unlabeled
        if isinstance(source, ArrayLoader):
            return torch.from_numpy(source.x[:n])
        for batch in source:
            return batch[0][:n]
        raise DataError(f"{self.name} has no validation batches", "give the validation loader at least one batch")


def train_data(ref: "str | os.PathLike[str] | Dataset | TrainData", *, batch_size: int = 128,
               limit: int | None = None, val_limit: int | None = None, seed: int = 0,
               preprocess: Preprocess | None = None, input_shapes: Sequence[Sequence[Any]] | None = None,
               num_classes: int | None = None) -> TrainData:
    """Resolve DATA for training (``edgekit compress``, recipes, every compression step).

    - a :class:`TrainData` is returned as is;
    - ``example:fashion-mnist``: the training split, its last 5,000 images held out for validation;
    - any other DATA of :func:`edgekit.data.load_data` (a folder of images, ``.npz``, ``.npy``, a
      factory's arrays or batches, a :class:`Dataset`). Labelled, a seeded split (``seed``) holds
      out 10 % of it, at most 5,000 samples, for validation; ``name`` states the split. Unlabeled
      (a flat folder, an ``.npz`` without ``y``) gives ``labeled=False``, which only distillation
      takes. Arrays DATA is for single-input models and float inputs;
    - a factory ``pkg.module:fn`` returning two iterables of batches, each a loader rather than an
      array, tensor or dict (two DataLoaders, two lists of ``(x, y)``), is ``(train_loader,
      val_loader)``, used as is (the way to train a multi-input model).

    ``preprocess`` turns an image folder's images into inputs (the model's own, or the user's
    spec); ``input_shapes`` (the model's, batch dimension ignored) and ``num_classes`` (its
    outputs) check the data before anything trains. ``limit``/``val_limit`` cap the training and
    validation parts (given both, at most their sum is loaded: an image folder decodes no more).
    """
    if isinstance(ref, TrainData):
        return ref
    if input_shapes is not None and len(input_shapes) > 1:
        raise DataError(f"the model takes {len(input_shapes)} inputs; DATA arrays train single-input models",
                        "pass a factory pkg.module:fn returning (train_loader, val_loader) of (inputs, targets) batches")
    if isinstance(ref, str) and ref in TRAIN_DATASETS:
        return _example_train_data(ref, batch_size, limit, val_limit, seed, input_shapes, num_classes)
    load_limit = limit + val_limit if limit is not None and val_limit is not None else None
    loaded = _load_training_data(ref, preprocess, load_limit)
    if isinstance(loaded, TrainData):
        return loaded
    dataset = load_data(loaded, input_shapes=input_shapes)  # checked against the model's inputs
    return _from_dataset(dataset, batch_size, limit, val_limit, seed, num_classes, preprocess)


def _example_train_data(ref: str, batch_size: int, limit: int | None, val_limit: int | None, seed: int,
                        input_shapes: Sequence[Sequence[Any]] | None, num_classes: int | None) -> TrainData:
    full = load_fashion_mnist("train")
    if input_shapes is not None:
        load_data(Dataset(name=TRAIN_DATASETS[ref], source=ref, inputs={"input": full.x}), input_shapes=input_shapes)
    _check_label_range(full.y, TRAIN_DATASETS[ref], num_classes)
    cut = len(full) - FASHION_MNIST_VAL_SIZE
    tx, ty = full.x[:cut], full.y[:cut]
    vx, vy = full.x[cut:], full.y[cut:]
    if limit is not None:
        tx, ty = tx[:limit], ty[:limit]
    if val_limit is not None:
        vx, vy = vx[:val_limit], vy[:val_limit]
    return TrainData(
        TRAIN_DATASETS[ref],
        ArrayLoader(tx, ty, batch_size=batch_size, shuffle=True, shift_pixels=2, seed=seed),
        ArrayLoader(vx, vy, batch_size=1000),
        preprocess=FASHION_MNIST_PREPROCESS,
    )


def _load_training_data(ref: "str | os.PathLike[str] | Dataset", preprocess: Preprocess | None,
                        limit: int | None) -> "Dataset | TrainData":
    """A Dataset, or the TrainData of a factory that returned ``(train_loader, val_loader)``.

    The factory is called once, here: its result decides which of the two contracts it follows.
    """
    if isinstance(ref, Dataset):
        return ref
    if not isinstance(ref, (str, os.PathLike)):
        raise DataError(f"training data is a {type(ref).__name__}", f"pass a TrainData, a Dataset, or DATA: {_FORMS}")
    text = os.fspath(ref)
    if is_ref(text) and not Path(text).exists():
        result = call_factory(text, _FACTORY_RETURNS)
        if _is_loader_pair(result):
            return TrainData(text, result[0], result[1])
        return dataset_from_factory_result(result, text, limit=limit)
    if text.startswith("example:") or Path(text).exists():
        return load_data(text, preprocess=preprocess, limit=limit, split="train")
    raise DataError(f"unknown training data {text!r}", f"use {_FORMS}")


def _is_loader_pair(result: Any) -> bool:
    return isinstance(result, (tuple, list)) and len(result) == 2 and all(_is_loader(part) for part in result)


def _is_loader(value: Any) -> bool:
    """An iterable of batches (a DataLoader, a list of ``(x, y)``), not one batch's array, dict or labels."""
    if isinstance(value, (str, bytes, dict)) or _is_array_like(value):
        return False
    if isinstance(value, (tuple, list)):
        return bool(value) and all(isinstance(item, (tuple, list, dict)) for item in value)
    return hasattr(value, "__iter__")


def _is_array_like(value: Any) -> bool:
    return isinstance(value, np.ndarray) or hasattr(value, "__array__") or hasattr(value, "detach")


def _from_dataset(dataset: Dataset, batch_size: int, limit: int | None, val_limit: int | None, seed: int,
                  num_classes: int | None, preprocess: Preprocess | None) -> TrainData:
    x = training_inputs(dataset)
    spec = dataset.preprocess or preprocess
    if dataset.labels is None:
        name = dataset.description()
        name = name if "unlabeled" in name else f"{name}, unlabeled"
        if limit is not None:
            x = x[:limit]
        loader = ArrayLoader(x, None, batch_size=batch_size, shuffle=True, seed=seed)
        return TrainData(name, _NoLabels(name), _NoLabels(name), labeled=False, preprocess=spec, unlabeled=loader)
    y = class_labels(dataset.labels, dataset.name, num_classes)
    train, val = _split_indices(len(y), seed, limit, val_limit, dataset.name)
    name = f"{dataset.description()}: seeded split {seed}, {len(train):,} train / {len(val):,} validation"
    return TrainData(
        name,
        ArrayLoader(x[train], y[train], batch_size=batch_size, shuffle=True, seed=seed),
        ArrayLoader(x[val], y[val], batch_size=max(batch_size, VAL_BATCH)),
        preprocess=spec,
    )


def _split_indices(n: int, seed: int, limit: int | None, val_limit: int | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` indices: a seeded permutation, 10 % (at most 5,000) held out."""
    if n < 2:
        raise DataError(f"{name} has {n} labelled sample: too few to hold some out for validation",
                        "give at least 2 labelled samples (hundreds for a meaningful accuracy)")
    n_val = min(MAX_VAL_SAMPLES, max(1, round(n * VAL_FRACTION)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:n_val], order[n_val:]
    if val_limit is not None:
        val = val[:val_limit]
    if limit is not None:
        train = train[:limit]  # a seeded choice: a folder's files come class by class
    return np.sort(train), np.sort(val)


def training_inputs(dataset: Dataset) -> np.ndarray:
    """The one float32 input array a torch model trains on."""
    if len(dataset.inputs) > 1:
        raise DataError(f"{dataset.name} has {len(dataset.inputs)} inputs ({', '.join(dataset.inputs)}); "
                        "DATA arrays train single-input models",
                        "pass a factory pkg.module:fn returning (train_loader, val_loader) of (inputs, targets) batches")
    x = dataset.only_input()
    if x.dtype.kind != "f":
        raise DataError(f"{dataset.name}: inputs are {x.dtype}, and torch models train on float inputs",
                        "save float32 arrays, preprocessed as the model expects (an image folder is preprocessed "
                        "for you: --preprocess)")
    return np.ascontiguousarray(x, dtype=np.float32)


def class_labels(labels: np.ndarray, name: str, num_classes: int | None = None) -> np.ndarray:
    """Labels as int64 class indices, checked: one per sample, whole, 0 or more, below ``num_classes``."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"{name}: labels are shaped {'×'.join(map(str, y.shape))}; training takes one class index "
                        "per sample", "give labels shaped (N,) of integers 0..C-1")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataError(f"{name}: labels are not whole numbers", "give class indices 0..C-1")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{name}: label {y.min()} is negative", "give class indices 0..C-1")
    _check_label_range(y, name, num_classes)
    return y


def _check_label_range(y: np.ndarray, name: str, num_classes: int | None) -> None:
    if num_classes is not None and len(y) and int(y.max()) >= num_classes:
        raise DataError(f"{name}: labels go up to {int(y.max())}, and the model has {num_classes} outputs",
                        f"give class indices 0..{num_classes - 1}, or a model with one output per class")


# --- distillation's transfer set, and training data checked against a model ---------------------


def transfer_set(ref: "str | os.PathLike[str] | Dataset", *, preprocess: Preprocess | None = None,
                 input_shapes: Sequence[Sequence[Any]] | None = None, limit: int | None = None,
                 batch_size: int = 128, seed: int = 0) -> tuple[ArrayLoader, str]:
    """Distillation's transfer set: every sample of DATA ``ref`` as unlabeled batches, and its description.

    Labels it may have are not used: the teacher labels every sample. ``example:fashion-mnist``
    gives the 55,000 training images ``train_data`` trains on, never the 5,000 it validates on.
    """
    if isinstance(ref, str) and ref in TRAIN_DATASETS:
        full = load_fashion_mnist("train")
        x = full.x[: len(full) - FASHION_MNIST_VAL_SIZE]
        loaded: Any = Dataset(name="Fashion-MNIST train", source=ref, inputs={"input": x}, unit="images",
                              notes=("the images not held out for validation",))
    else:
        loaded = _load_training_data(ref, preprocess, limit)
        if isinstance(loaded, TrainData):
            raise DataError(f"{ref} returned (train_loader, val_loader); a transfer set is data",
                            "return arrays or (x, y) batches from the factory, or use a folder of images or an .npz")
    dataset = load_data(loaded, input_shapes=input_shapes, limit=limit)
    loader = ArrayLoader(training_inputs(dataset), None, batch_size=batch_size, shuffle=True, seed=seed)
    return loader, dataset.description()


def model_preprocess(model: Any) -> Preprocess | None:
    """How images become ``model``'s inputs, where edgekit knows it: a ``preprocess`` attribute (a
    resolved model), or the bundled example's (``example:NAME``, or its ResolvedModel)."""
    spec = getattr(model, "preprocess", None)
    if isinstance(spec, Preprocess):
        return spec
    from edgekit.examples.registry import EXAMPLES

    if isinstance(model, str):
        name = model.split(":", 1)[1] if model.startswith("example:") else None
    else:  # a ResolvedModel of an example is named after it and knows its example data set
        is_example = str(getattr(model, "dataset", None) or "").startswith("example:")
        name = getattr(model, "name", None) if is_example else None
    example = EXAMPLES.get(name) if name else None
    return example.preprocess if example is not None else None


def output_classes(module: "torch.nn.Module", example_inputs: Sequence[Any]) -> int | None:
    """The width of a classifier's N×C output (None when its output is not one N×C tensor)."""
    import torch

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(*example_inputs)
    except Exception:  # noqa: BLE001 - the model's own forward(); its steps report the failure
        return None
    finally:
        module.train(was_training)
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else None


def train_data_for_model(data: Any, module: "torch.nn.Module", example_inputs: Sequence[Any], *,
                         preprocess: Preprocess | None = None, model: Any = None) -> TrainData:
    """``train_data`` checked against a model: its input shapes and outputs; images preprocessed
    with ``preprocess``, else the model's own (``model_preprocess(model)``), else the default."""
    return train_data(data, preprocess=preprocess or model_preprocess(model),
                      input_shapes=[tuple(t.shape) for t in example_inputs],
                      num_classes=output_classes(module, example_inputs))


def check_data_reference(ref: str, what: str) -> None:
    """A DataError when ``ref`` cannot be DATA (no such file or folder, not example:/pkg.module:fn),
    checked before a recipe runs anything rather than when its step comes."""
    if ref.startswith("example:") or Path(ref).exists() or is_ref(ref):
        return
    raise DataError(f"{what}: data not found: {ref}", f"use {_FORMS}")
