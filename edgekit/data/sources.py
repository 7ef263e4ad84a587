"""One DATA concept: resolve a reference to named input arrays, optional labels, and a description.

``load_data(ref)`` understands:

- ``example:fashion-mnist``: the bundled data set (``split="train"`` for calibration and
  fine-tuning, ``"test"`` for evaluation);
- a directory of images: class subfolders give labels (torchvision's ImageFolder layout: class
  names sorted, images found recursively inside each), a flat folder is unlabeled; images pass
  through a :class:`~edgekit.data.preprocess.Preprocess`;
- ``FILE.npz``: one array per input name, optional ``y`` for labels (a single array fits a
  single-input model); never unpickled;
- ``FILE.npy``: one array for a single-input model;
- a factory ``pkg.module:fn`` taking no arguments and returning one array, a dict name→array, a
  tuple ``(x, y)`` (``x`` an array or a dict), or any other iterable of such batches, concatenated
  (a DataLoader's ``[x, y]`` lists work). Torch tensors are converted to numpy.

Every sample is held in memory, in one array per input: 10,000 RGB images at 224×224 take 6 GB
as float32, so pass ``limit`` for large folders (images beyond it are not decoded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from edgekit.data.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_PREPROCESS, load_fashion_mnist
from edgekit.data.preprocess import Preprocess
from edgekit.errors import DataError
from edgekit.refs import import_ref, is_ref

# torchvision's ImageFolder extensions (matched case-insensitively)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
EXAMPLE_DATA = {"fashion-mnist": "Fashion-MNIST"}
LABELS_KEY = "y"
LIMIT_SEED = 0  # a limit on an image folder keeps a seeded choice: its first files are one class
_FACTORY_RETURNS = "an array, a dict name→array, (x, y), or an iterable of such batches"

ShapeSpec = Sequence[Any]  # a model input shape; None, a string or a negative number is a free dimension


@dataclass(frozen=True, eq=False)  # eq would compare arrays; identity is what we want
class Dataset:
    """Named input arrays (all with the same first dimension N), optional labels, and what they are.

    ``summary`` is fixed when loaded ("1,000 images, 10 classes"); ``notes`` record how the data
    was cut afterwards (a split, a head), so both parts of a split describe the same split.
    """

    name: str
    source: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    preprocess: Preprocess | None = None
    classes: tuple[str, ...] | None = None
    unit: str = "samples"
    summary: str = ""
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.inputs:
            raise DataError(f"{self.name}: no input arrays", "give at least one array")
        sizes = {name: len(array) for name, array in self.inputs.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"{self.name}: inputs differ in length ({_fmt_sizes(sizes)})",
                            "give every input the same number of samples")
        n = next(iter(sizes.values()))
        if n == 0:
            raise DataError(f"{self.name} has no samples", "give at least one sample")
        if self.labels is not None and len(self.labels) != n:
            raise DataError(f"{self.name}: {len(self.labels)} labels for {n} samples", "give one label per sample")
        if not self.summary:
            object.__setattr__(self, "summary", self._summary())

    def _summary(self) -> str:
        text = f"{len(self):,} {self.unit}"
        if self.classes is not None:
            text += f", {len(self.classes)} classes"
        elif self.labels is not None:
            text += ", labeled"
        return text

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    def description(self) -> str:
        """For reports: ``images/ (1,000 images, 10 classes), seeded split 0: 256 for calibration, 744 for evaluation``."""
        return f"{self.name} ({self.summary})" + "".join(f", {note}" for note in self.notes)

    def to_dict(self) -> dict[str, Any]:
        """What a JSON report records about the data."""
        return {
            "name": self.name, "source": self.source, "description": self.description(), "samples": len(self),
            "labeled": self.labels is not None, "classes": list(self.classes) if self.classes else None,
            "notes": list(self.notes), "preprocess": self.preprocess.to_manifest() if self.preprocess else None,
        }

    def only_input(self) -> np.ndarray:
        """The array of a single-input data set."""
        if len(self.inputs) != 1:
            raise DataError(f"{self.name} has {len(self.inputs)} inputs ({', '.join(self.inputs)})",
                            "this use takes a single-input model's data")
        return next(iter(self.inputs.values()))

    def take(self, indices: Sequence[int] | np.ndarray, note: str | None = None) -> "Dataset":
        """The samples at ``indices`` (in that order), with ``note`` added to the description."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            inputs={name: array[idx] for name, array in self.inputs.items()},
            labels=None if self.labels is None else self.labels[idx],
            notes=self.notes + ((note,) if note else ()),
        )

    def head(self, n: int) -> "Dataset":
        """The first ``n`` samples (all of them when there are fewer)."""
        if n < 1:
            raise DataError(f"cannot keep {n} samples of {self.name}", "give a limit of at least 1")
        if n >= len(self):
            return self
        return self.take(np.arange(n), note=f"first {n:,}")

    def split(self, n: int | None = None, *, fraction: float | None = None, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """``(calibration, evaluation)``: disjoint, seeded, each in the original order.

        Give ``n`` samples for calibration, or a ``fraction`` of them; the rest is for evaluation.
        Both parts' descriptions state the split.
        """
        count = _split_count(len(self), n, fraction)
        order = np.random.default_rng(seed).permutation(len(self))
        cal, ev = np.sort(order[:count]), np.sort(order[count:])
        note = f"seeded split {seed}: {len(cal):,} for calibration, {len(ev):,} for evaluation"
        return self.take(cal, note), self.take(ev, note)

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Dicts name→array of up to ``batch_size`` samples, in order."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1 (got {batch_size})", "use e.g. 32")
        for start in range(0, len(self), batch_size):
            yield {name: array[start : start + batch_size] for name, array in self.inputs.items()}


def _split_count(total: int, n: int | None, fraction: float | None) -> int:
    if (n is None) == (fraction is None):
        raise DataError("a split takes either a count or a fraction for calibration", "give one of them")
    if fraction is not None:
        if not 0 < fraction < 1:
            raise DataError(f"calibration fraction must be between 0 and 1 (got {fraction})", "e.g. 0.25")
        n = int(round(total * fraction))
    if not 1 <= n < total:  # type: ignore[operator]
        raise DataError(f"cannot take {n} of {total} samples for calibration and keep some for evaluation",
                        f"use between 1 and {total - 1} samples for calibration, or separate data sets")
    return int(n)  # type: ignore[arg-type]


# --- load_data --------------------------------------------------------------------------------


def load_data(ref: "str | os.PathLike[str] | Dataset", *, input_names: Sequence[str] | None = None,
              input_shapes: Mapping[str, ShapeSpec] | Sequence[ShapeSpec] | None = None,
              preprocess: Preprocess | None = None, limit: int | None = None, split: str = "test") -> Dataset:
    """Resolve a DATA reference (see the module docstring) into a :class:`Dataset`.

    ``input_names``/``input_shapes`` are the model's (shapes with their batch dimension, which is
    ignored); given, the arrays are named and checked against them. ``preprocess`` applies to
    image folders only (default: RGB, [0, 1], NCHW float32); arrays are taken as they are, except
    float64, which becomes float32. ``limit`` keeps at most that many samples: the first ones of
    arrays, a seeded choice of an image folder's files. ``split`` picks the example data's part.
    """
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1 (got {limit})", "omit it to use every sample")
    names, shapes = _model_inputs(input_names, input_shapes)
    if isinstance(ref, Dataset):
        dataset = ref
    else:
        dataset = _resolve(os.fspath(ref), names, preprocess, limit, split)
    if limit is not None:
        dataset = dataset.head(limit)
    if names is not None:
        dataset = _renamed(dataset, names)
    if shapes is not None:
        _check_shapes(dataset, shapes)
    return dataset


def _resolve(ref: str, names: list[str] | None, preprocess: Preprocess | None, limit: int | None,
             split: str) -> Dataset:
    if ref.startswith("example:"):
        return _load_example(ref, split, limit)
    path = Path(ref)
    if path.is_dir():
        return load_image_folder(path, preprocess=preprocess, limit=limit, source=ref)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, names, ref)
    if suffix == ".npy":
        return _load_npy(path, limit, ref)
    if path.exists():
        raise DataError(f"cannot read {ref} as data", "use a folder of images, an .npz or an .npy")
    if is_ref(ref):
        return _load_factory(ref, names, limit)
    raise DataError(f"data not found: {ref}",
                    "use example:fashion-mnist, a folder of images, an .npz, an .npy or a factory pkg.module:fn")


def _model_inputs(names: Sequence[str] | None, shapes: Any) -> tuple[list[str] | None, dict[str, tuple] | None]:
    if shapes is None:
        return (None if names is None else list(names)), None
    if isinstance(shapes, Mapping):
        shape_names = list(shapes)
        if names is not None and set(names) != set(shape_names):
            raise DataError(f"input shapes are given for {shape_names}, the inputs are {list(names)}",
                            "give one shape per input name")
        names = list(names) if names is not None else shape_names
        return names, {name: tuple(shapes[name]) for name in names}
    shapes = [tuple(s) for s in shapes]
    names = list(names) if names is not None else _default_names(len(shapes))
    if len(names) != len(shapes):
        raise DataError(f"{len(shapes)} input shapes for {len(names)} inputs", "give one shape per input")
    return names, dict(zip(names, shapes))


def _default_names(count: int) -> list[str]:
    # the names edgekit's exporters give a model's inputs (edgekit.export.calibration.input_names)
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def _renamed(dataset: Dataset, names: list[str]) -> Dataset:
    inputs = _match_names(dataset.inputs, names, dataset.name)
    return dataset if list(inputs) == list(dataset.inputs) else replace(dataset, inputs=inputs)


def _match_names(arrays: dict[str, np.ndarray], names: list[str], where: str) -> dict[str, np.ndarray]:
    """Arrays keyed by the model's input names; one array fits a single-input model whatever its key."""
    if set(arrays) == set(names):
        return {name: arrays[name] for name in names}
    if len(arrays) == 1 and len(names) == 1:
        return {names[0]: next(iter(arrays.values()))}
    raise DataError(f"{where} has arrays {sorted(arrays)}, the model's inputs are {names}",
                    f"give one array per input name, labels as {LABELS_KEY!r}")


def _check_shapes(dataset: Dataset, shapes: dict[str, tuple]) -> None:
    for name, shape in shapes.items():
        expected = tuple(shape[1:])
        actual = tuple(dataset.inputs[name].shape[1:])
        if len(expected) == len(actual) and all(_free(e) or e == a for e, a in zip(expected, actual)):
            continue
        raise DataError(
            f"{dataset.name}: input {name!r} is {_fmt_shape(actual)} per sample, the model takes {_fmt_shape(expected)}",
            _shape_hint(dataset, expected, actual),
        )


def _free(dim: Any) -> bool:
    return dim is None or isinstance(dim, str) or (isinstance(dim, int) and dim < 0)


def _shape_hint(dataset: Dataset, expected: tuple, actual: tuple) -> str:
    if dataset.unit != "images" or len(expected) != 3 or len(actual) != 3:
        return f"give arrays shaped (N, {', '.join(str(d) for d in expected)})"
    spec = dataset.preprocess or Preprocess()
    hints = []
    layout = spec.layout
    other = "nhwc" if layout == "nchw" else "nchw"
    if _channels_of(expected, layout) not in (1, 3) and _channels_of(expected, other) in (1, 3):
        hints.append(f"--layout {other}")
        layout = other
    c_exp, hw_exp = _channels_of(expected, layout), _size_of(expected, layout)
    if c_exp in (1, 3) and c_exp != spec.channels:
        hints.append("--grayscale" if c_exp == 1 else "no --grayscale (the model takes RGB)")
    if hw_exp != _size_of(actual, spec.layout) and not any(_free(d) for d in hw_exp):
        hints.append(f"--resize {hw_exp[0]},{hw_exp[1]} (or --resize and --center-crop)")
    return "preprocess the images to the model's input: " + (", ".join(hints) if hints else "see --resize, --layout")


def _channels_of(shape: tuple, layout: str) -> Any:
    return shape[0] if layout == "nchw" else shape[2]


def _size_of(shape: tuple, layout: str) -> tuple:
    return tuple(shape[1:]) if layout == "nchw" else tuple(shape[:2])


# --- example data ----------------------------------------------------------------------------


def _load_example(ref: str, split: str, limit: int | None) -> Dataset:
    name = ref.split(":", 1)[1]
    if name not in EXAMPLE_DATA:
        raise DataError(f"unknown example data {ref!r}", f"known: {', '.join('example:' + n for n in EXAMPLE_DATA)}")
    data = load_fashion_mnist(split, limit=limit)
    notes = (f"first {len(data):,}",) if limit is not None and len(data) == limit else ()
    return Dataset(
        name=f"Fashion-MNIST {split}", source=ref, inputs={"input": data.x}, labels=data.y,
        preprocess=FASHION_MNIST_PREPROCESS, classes=FASHION_MNIST_CLASSES, unit="images",
        summary=f"{len(data):,} images, {len(FASHION_MNIST_CLASSES)} classes", notes=notes,
    )


# --- image folders ---------------------------------------------------------------------------


def load_image_folder(root: str | os.PathLike[str], *, preprocess: Preprocess | None = None,
                      limit: int | None = None, source: str | None = None) -> Dataset:
    """Decode a folder of images into one array (see the module docstring for the layout)."""
    root = Path(root)
    files, labels, classes = scan_image_folder(root)
    notes: tuple[str, ...] = ()
    if limit is not None and limit < len(files):
        keep = np.sort(np.random.default_rng(LIMIT_SEED).choice(len(files), limit, replace=False))
        notes = (f"{limit:,} of {len(files):,} chosen with seed {LIMIT_SEED}",)
        files = [files[i] for i in keep]
        labels = None if labels is None else labels[keep]
    spec = preprocess or Preprocess()
    name = root.name + "/"
    summary = f"{len(files):,} images" + (f", {len(classes)} classes" if classes else ", unlabeled")
    return Dataset(name=name, source=source or str(root), inputs={"input": _decode_all(files, spec)},
                   labels=labels, preprocess=spec, classes=classes, unit="images", summary=summary, notes=notes)


def scan_image_folder(root: Path) -> tuple[list[Path], np.ndarray | None, tuple[str, ...] | None]:
    """Image files (sorted), labels (class index per file) and class names; unlabeled when flat."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}", "check the path")
    entries = sorted((e for e in os.scandir(root) if not e.name.startswith(".")), key=lambda e: e.name)
    top = [Path(e.path) for e in entries if e.is_file() and _is_image(e.name)]
    class_files = {e.name: _images_under(Path(e.path)) for e in entries if e.is_dir()}
    if not any(class_files.values()):
        if not top:
            raise DataError(f"no images in {root}",
                            f"put images ({', '.join(IMAGE_EXTENSIONS)}) in it, or in one subfolder per class")
        return top, None, None
    if top:
        raise DataError(f"{root} has both images and class subfolders ({top[0].name}, {next(iter(class_files))}/)",
                        "put every image in a class subfolder, or use a flat folder of unlabeled images")
    empty = [name for name, found in class_files.items() if not found]
    if empty:
        raise DataError(f"class folder {root / empty[0]} has no images",
                        "add images to it or remove it (classes are the sorted subfolder names)")
    classes = tuple(class_files)
    files = [f for name in classes for f in class_files[name]]
    labels = np.concatenate([np.full(len(class_files[name]), i, np.int64) for i, name in enumerate(classes)])
    return files, labels, classes


def _images_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if _is_image(f) and not f.startswith(".")]
    return found


def _is_image(filename: str) -> bool:
    return filename.lower().endswith(IMAGE_EXTENSIONS)


def _decode_all(files: list[Path], spec: Preprocess) -> np.ndarray:
    """Preprocess every file into one preallocated array (one copy in memory, not two)."""
    first = _decode(files[0], spec)
    out = np.empty((len(files), *first.shape), dtype=first.dtype)
    out[0] = first
    for i, path in enumerate(files[1:], start=1):
        item = _decode(path, spec)
        if item.shape != first.shape:
            raise DataError(f"{path} becomes {_fmt_shape(item.shape)}, {files[0].name} {_fmt_shape(first.shape)}",
                            "give --resize H,W (or --resize and --center-crop) so all images get one size")
        out[i] = item
    return out


def _decode(path: Path, spec: Preprocess) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return spec.apply(image)
    except DataError as exc:
        raise DataError(f"{path}: {exc.message}", exc.hint) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path}: {' '.join(str(exc).split())}",
                        "remove or replace the file") from None


# --- arrays ----------------------------------------------------------------------------------


def _load_problem(exc: BaseException) -> str:
    """numpy's reason in a few words (its advice to allow pickle is not ours to give)."""
    text = " ".join(str(exc).split())
    return "it holds object arrays" if "Object arrays" in text or "allow_pickle" in text else text


def _load_npz(path: Path, names: list[str] | None, ref: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: _as_input(data[key], f"{path}: {key}") for key in data.files}
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as exc:  # object arrays raise ValueError without pickle
        raise DataError(f"cannot read {path} as .npz: {_load_problem(exc)}",
                        "save numeric arrays with numpy.savez (object arrays are refused)") from None
    labels = None
    if LABELS_KEY in arrays and (names is None or LABELS_KEY not in names):
        labels = arrays.pop(LABELS_KEY)
    if not arrays:
        raise DataError(f"{path} has only labels ({LABELS_KEY!r})", "add one array per model input")
    inputs = arrays if names is None else _match_names(arrays, names, str(path))
    return Dataset(name=path.name, source=ref, inputs=inputs, labels=labels)


def _load_npy(path: Path, limit: int | None, ref: str) -> Dataset:
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")  # mapped: a limit reads only its part
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} as .npy: {_load_problem(exc)}",
                        "save one numeric array with numpy.save (object arrays are refused)") from None
    if limit is not None and array.ndim:
        array = array[:limit]
    return Dataset(name=path.name, source=ref, inputs={"input": _as_input(np.array(array), str(path))})


def _as_input(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where} holds {array.dtype} values", "give numeric arrays")
    if array.ndim == 0:
        raise DataError(f"{where} is a single number", "give arrays with the samples along the first dimension")
    # models take float32; numpy's default float64 would only be cast later, and cost twice the memory
    return array.astype(np.float32) if array.dtype == np.float64 else array


# --- factories -------------------------------------------------------------------------------


def call_factory(ref: str, returns: str) -> Any:
    """Import and call the factory ``pkg.module:fn``; ``returns`` says what it should return, for hints.

    An exception inside it becomes a DataError naming it (the user's code: bad data, not an
    edgekit bug). ``edgekit.data.training.train_data`` calls it itself, once, to tell a
    ``(train_loader, val_loader)`` pair from data.
    """
    factory = import_ref(ref, DataError, attr_hint=f"name a function returning {returns}", function=True)
    try:
        return factory()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: report it as bad data, not an edgekit bug
        raise DataError(f"{ref}() raised {type(exc).__name__}: {' '.join(str(exc).split())}",
                        f"fix the factory; it should take no arguments and return {returns}") from exc


def _load_factory(ref: str, names: list[str] | None, limit: int | None) -> Dataset:
    return dataset_from_factory_result(call_factory(ref, _FACTORY_RETURNS), ref, names, limit)


def dataset_from_factory_result(result: Any, ref: str, names: list[str] | None = None,
                                limit: int | None = None) -> Dataset:
    """What a factory returned (see the module docstring) as a Dataset; for callers that called it
    themselves (``edgekit.data.training.train_data`` tells its ``(train_loader, val_loader)`` pairs apart)."""
    if _is_array(result) or isinstance(result, (dict, tuple)):
        inputs, labels = _batch_parts(result, ref)
    elif isinstance(result, Iterable) and not isinstance(result, (str, bytes)):
        inputs, labels = _concatenate(result, ref, limit)
    else:
        raise DataError(f"{ref}() returned {type(result).__name__}", f"return {_FACTORY_RETURNS}")
    if names is not None:
        inputs = _match_names(inputs, names, ref)
    return Dataset(name=ref, source=ref, inputs=inputs, labels=labels)


def _batch_parts(batch: Any, ref: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Inputs and labels of one array, dict (``y`` = labels) or ``(x, y)`` pair."""
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            raise DataError(f"{ref} gave a {type(batch).__name__} of {len(batch)} items",
                            "give (x, y) pairs; several inputs go in a dict name→array")
        inputs, extra = _batch_parts(batch[0], ref)
        if extra is not None:
            raise DataError(f"{ref} gave labels twice (a {LABELS_KEY!r} key inside an (x, y) pair)", "give them once")
        return inputs, _to_numpy(batch[1], f"{ref}: labels")
    if isinstance(batch, dict):
        arrays = {str(k): _to_numpy(v, f"{ref}: {k}") for k, v in batch.items()}
        labels = arrays.pop(LABELS_KEY, None)
        return arrays, labels
    if _is_array(batch):
        return {"input": _to_numpy(batch, ref)}, None
    raise DataError(f"{ref} gave a {type(batch).__name__}", f"return {_FACTORY_RETURNS}")


def _concatenate(batches: Iterable[Any], ref: str, limit: int | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    parts: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    count = 0
    for i, batch in enumerate(batches):
        inputs, y = _batch_parts(batch, ref)
        if i and (set(inputs) != set(parts) or (y is None) != (not labels)):
            raise DataError(f"{ref}: batch {i} differs in its inputs or labels from batch 0",
                            "yield the same keys, with or without labels, in every batch")
        for name, array in inputs.items():
            parts.setdefault(name, []).append(array)
        if y is not None:
            labels.append(y)
        count += len(next(iter(inputs.values())))
        if limit is not None and count >= limit:
            break  # an endless generator is fine with a limit
    if not parts:
        raise DataError(f"{ref} gave no batches", "yield at least one batch")
    try:
        inputs = {name: np.concatenate(arrays) for name, arrays in parts.items()}
        return inputs, np.concatenate(labels) if labels else None
    except ValueError as exc:
        raise DataError(f"{ref}: batches do not stack: {exc}", "yield batches of one shape per input") from None


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or hasattr(value, "__array__") or hasattr(value, "detach")


def _to_numpy(value: Any, where: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU or requiring grad
        value = value.detach().cpu().numpy()
    if not _is_array(value) and not isinstance(value, (list, tuple, int, float)):
        raise DataError(f"{where} is a {type(value).__name__}, not an array", "give numpy arrays or torch tensors")
    return _as_input(np.asarray(value), where)


# --- formatting ------------------------------------------------------------------------------


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "×".join(str(d) for d in shape) if shape else "a scalar"


def _fmt_sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{name}: {n:,}" for name, n in sizes.items())
