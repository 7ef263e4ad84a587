"""The one place that knows the order: resolve → (compress) → export → parity → target.run → report."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np

from edgekit import __version__
from edgekit._callable import make_module_callable
from edgekit.data import load_npz_inputs
from edgekit.data.plan import DataPlan, plan_data
from edgekit.data.sources import Dataset
from edgekit.devices import DeviceProfile
from edgekit.devices import get as get_profile
from edgekit.errors import DataError, UsageError
from edgekit.export import get_format
from edgekit.export.base import Artifact, TensorSpec
from edgekit.inputspec import InputSpec, parse_inputs, random_feeds, runner_ranges
from edgekit.models import ResolvedModel, resolve_model
from edgekit.outputs import check_output_dir, check_output_file, publish_files
from edgekit.notes import split_notes
from edgekit.report.schema import (
    AccuracySummary,
    ArtifactSummary,
    DeployReport,
    LatencySummary,
    MemorySummary,
    ParitySummary,
    RuntimeSummary,
    TargetSummary,
)
from edgekit.report.progress import Progress, as_progress
from edgekit.report.stats import latency_summary
from edgekit.resources import runner_path
from edgekit.targets import RunJob, SSHOptions, Target, create_target

PARITY_SAMPLES = 64
ARTIFACTS = "artifacts"  # the work folder's subfolder the artifacts are exported into
DEFAULT_RUNS = 200
DEFAULT_WARMUP = 20


@dataclass
class DeployOptions:
    """Everything ``edgekit deploy`` takes beyond MODEL and --device (CLI flags map 1:1)."""

    emulate: bool = False
    host: str | None = None
    format: str | None = None
    precision: str | None = None
    weights: str | None = None
    input_shape: str | Sequence[int] | None = None
    runs: int | None = None
    warmup: int | None = None
    min_seconds: float = 0.0
    threads: int | None = None
    inputs: str | None = None
    save_outputs: str | None = None
    out_dir: str | None = None
    profile_files: Sequence[str] = ()
    eval_limit: int | None = None
    strict: bool = False
    profile_ops: bool = False  # per-operator times after the timed runs (ONNX Runtime)
    recipe: str | None = None
    recipe_data: str | None = None
    # your data (DATA: example:NAME, a folder of images, .npz, .npy, pkg.module:fn; edgekit.data)
    calibration: str | None = None  # int8 calibration samples
    eval_data: str | None = None  # evaluation samples (--eval); the same DATA as calibration is split
    metric: str | None = None  # classification | agreement | embedding | regression (default: inferred)
    preprocess: Any = None  # edgekit.data.Preprocess for image folders (default: the model's own)
    input_specs: Sequence[str | InputSpec] | None = None  # --input NAME:SHAPE[:DTYPE[:LOW..HIGH]]
    # how to reach a device (SSHOptions; a mapping of its fields is taken too)
    ssh: SSHOptions = field(default_factory=SSHOptions)

    def __post_init__(self) -> None:
        self.ssh = SSHOptions.coerce(self.ssh)


@dataclass
class Choice:
    format: str
    precision: str
    because: str
    options: dict[str, Any] = field(default_factory=dict)  # the profile's export options for this choice


def choose_format(profile: DeviceProfile, fmt: str | None, precision: str | None) -> Choice:
    """The first of the profile's preferences this install can export, or the user's override."""
    if fmt or precision:
        fmt = fmt or next((p.format for p in profile.preferred if not precision or p.precision == precision),
                          profile.preferred[0].format)
        precision = precision or next((p.precision for p in profile.preferred if p.format == fmt), "fp32")
        _require_exportable(fmt, precision)
        options = next((p.options for p in profile.preferred if (p.format, p.precision) == (fmt, precision)), {})
        return Choice(fmt, precision, "set on the command line", dict(options))
    skipped: list[str] = []
    for pref in profile.preferred:
        exporter = get_format(pref.format)
        if pref.precision not in exporter.precisions:
            skipped.append(f"{pref.format}/{pref.precision} (not supported by the exporter)")
        elif not exporter.available():
            skipped.append(f"{pref.format}/{pref.precision} (install edgekit[{exporter.extra}])")
        else:
            because = f"first of {profile.name}'s preferred formats this install can export"
            if skipped:
                because += f"; skipped {', '.join(skipped)}"
            return Choice(pref.format, pref.precision, because, dict(pref.options))
    raise UsageError(
        f"none of {profile.name}'s preferred formats can be exported here: {', '.join(skipped)}",
        "install the missing extra or pass --format/--precision",
    )


def _require_exportable(fmt: str, precision: str) -> None:
    get_format(fmt).require(precision)


def deploy(model: str, device: str, options: DeployOptions | None = None,
           progress: Progress | Callable[[str], None] | None = None,
           prepare_lock: ContextManager[Any] | None = None) -> DeployReport:
    """Export MODEL for DEVICE, run it on the target, and return the measured report.

    ``prepare_lock`` (optimize on a fleet) is held while the host prepares (compress, export), so
    concurrent deploys take turns on the host and overlap only on their devices.
    """
    options = options or DeployOptions()
    say = as_progress(progress)
    if options.emulate == bool(options.host):
        raise UsageError("choose where to run: --emulate or --host [user@]addr[:port]", "pass exactly one of them")
    with tempfile.TemporaryDirectory(prefix="edgekit-deploy-") as tmp:
        with prepare_lock or contextlib.nullcontext():
            prepared = prepare_deploy(model, device, options, say, Path(tmp), publish=False)
        target = create_target(prepared.profile, emulate=options.emulate, host=options.host, progress=say,
                               ssh=options.ssh)
        report = measure_on_target(prepared, target, options, say)
        if options.out_dir:  # only a run that succeeded leaves its artifacts behind
            publish_artifacts(prepared, Path(options.out_dir))
        return report


def check_options(options: DeployOptions) -> None:
    """Counts and output paths, checked before any work: a run never ends by losing its results."""
    for name, value, minimum in (("runs", options.runs, 1), ("warmup", options.warmup, 0),
                                 ("threads", options.threads, 1), ("eval_limit", options.eval_limit, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise UsageError(f"{name} must be an integer >= {minimum}, not {value!r}")
    seconds = options.min_seconds
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"min_seconds must be a number >= 0, not {seconds!r}")
    if options.save_outputs:
        if not options.inputs:
            raise UsageError("save_outputs needs inputs", "pass the .npz whose outputs you want back")
        check_output_file(options.save_outputs, "save_outputs")
    if options.out_dir:
        check_output_dir(options.out_dir, "out_dir")


def publish_artifacts(prepared: "PreparedDeploy", out_dir: Path) -> list[Path]:
    """Copy the exported artifacts and their manifests into ``out_dir`` (``-o``)."""
    folder = prepared.work / ARTIFACTS
    return publish_files(sorted(p for p in folder.iterdir() if p.is_file()), out_dir) if folder.is_dir() else []


@dataclass
class PreparedDeploy:
    """The host-side half of a deploy, made once and shared by every target (``edgekit.fleet``).

    The exported artifact and every file a target gets, written once (so they are hashed and
    pushed once per device, and a device's cache can reuse them). Reference outputs and
    accuracy are computed on first use, once, thread-safely.
    """

    model: str
    profile: DeviceProfile
    resolved: ResolvedModel
    artifact: Artifact
    reference_size: int | None
    because: str
    evaluation: Dataset | None
    parity_inputs: dict[str, np.ndarray]
    parity_npz: Path
    user_inputs_npz: Path | None
    eval_npz: Path | None
    work: Path
    data: dict[str, Any] = field(default_factory=dict)  # DataPlan.describe(), plus what parity used
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reference_outputs(self) -> tuple[str, list[np.ndarray]]:
        with self._lock:
            if "reference" not in self._memo:
                self._memo["reference"] = _reference_outputs(self.artifact, self.resolved, self.parity_inputs)
            return self._memo["reference"]

    def reference_eval_outputs(self) -> list[np.ndarray] | None:
        """The float model's outputs on the evaluation samples (None for a file deployed as is)."""
        with self._lock:
            if "eval_reference" not in self._memo:
                self._memo["eval_reference"] = (_torch_outputs(self.resolved, self.evaluation, self.artifact)
                                                if self.evaluation is not None and self.resolved.module is not None
                                                else None)
            return self._memo["eval_reference"]


def prepare_deploy(model: str, device: str, options: DeployOptions, say: Progress, work: Path,
                   publish: bool = True) -> PreparedDeploy:
    """Resolve, compress, export, and write the inputs, parity and eval files into ``work``.

    The artifacts are exported into ``work``; ``publish`` copies them to ``options.out_dir`` once
    this host-side half succeeded (``deploy`` publishes only after the run on the device).
    """
    check_options(options)
    profile = get_profile(device, options.profile_files)
    specs = _input_specs(options)
    resolved = resolve_model(model, weights=options.weights, input_shape=options.input_shape, inputs=specs)
    user_inputs = load_npz_inputs(options.inputs) if options.inputs else None
    if user_inputs is not None and resolved.module is not None:
        check_user_inputs(torch_input_specs(resolved), user_inputs)  # before the export, not after
    out_dir = work / ARTIFACTS
    out_dir.mkdir(parents=True, exist_ok=True)
    if options.recipe and resolved.module is not None:
        say("compressing with the recipe")
        resolved.module = _run_recipe(resolved, options)
    choice = None if resolved.is_file else choose_format(profile, options.format, options.precision)
    plan = _plan_data(resolved, choice, options)
    if choice is not None and choice.precision == "int8" and plan.calibration is None:
        choice = _without_calibration(profile, choice, options)
    artifact, reference_size, because = _artifact_for(resolved, choice, options, out_dir, plan, say)
    if user_inputs is not None:
        user_inputs = match_inputs(artifact, user_inputs)
    parity_x, parity_what = _parity_inputs(artifact, plan, user_inputs, resolved.input_specs)
    evaluation = _evaluation_for(artifact, plan.evaluation)
    data = {**plan.describe(), "parity": parity_what}
    prepared = PreparedDeploy(
        model=model, profile=profile, resolved=resolved, artifact=artifact, reference_size=reference_size,
        because=because, evaluation=evaluation, parity_inputs=parity_x,
        parity_npz=save_npz(work / "parity_inputs.npz", parity_x),
        user_inputs_npz=(save_npz(work / "user_inputs.npz", _one_batch(artifact, user_inputs))
                         if user_inputs is not None else None),
        eval_npz=save_npz(work / "eval.npz", evaluation.inputs) if evaluation is not None else None,
        work=work, data=data,
    )
    if publish and options.out_dir:
        publish_artifacts(prepared, Path(options.out_dir))
    return prepared


def measure_on_target(prepared: PreparedDeploy, target: Target, options: DeployOptions, say: Progress,
                      local: Path | None = None) -> DeployReport:
    """Run the benchmark, parity and accuracy jobs on ``target`` over ONE connection; the report.

    ``local`` receives the fetched files (default: ``prepared.work``; a fleet gives each device
    its own folder).
    """
    local = Path(local) if local is not None else prepared.work
    with target:
        say(f"running on {target.describe().address}")
        bench = _run_benchmark(target, prepared, options, local)
        parity = _run_parity(target, prepared, options, local)
        accuracy = _run_accuracy(target, prepared, options, local) if prepared.evaluation is not None else None
    if parity is not None:
        parity.inputs = prepared.data.get("parity")
    report = _build_report(prepared.model, prepared.profile, target, prepared.artifact, prepared.reference_size,
                           prepared.because, bench, parity, accuracy, options)
    report.data = prepared.data
    if options.strict and parity and not parity.passed:
        from edgekit.errors import ParityError

        raise ParityError(f"parity failed on the device: max|Δ| {parity.max_abs_diff:.3g} > {parity.tolerance:.3g}",
                          "try a higher precision, or calibrate with real data")
    return report


def _run_recipe(resolved: ResolvedModel, options: DeployOptions) -> Any:
    from edgekit.compress.recipe import load_recipe, run_recipe
    from edgekit.data.training import model_preprocess, train_data_for_model

    recipe = load_recipe(options.recipe)
    data = options.recipe_data or resolved.dataset
    if data is None:
        raise UsageError("--recipe needs data to fine-tune and calibrate on",
                         "pass --data DATA: example:fashion-mnist, a folder of images, an .npz, or pkg.module:fn")
    # any DATA, checked against the model; image folders read with the model's own preprocessing
    data = train_data_for_model(data, resolved.module, resolved.example_inputs, preprocess=model_preprocess(resolved))
    model, _steps = run_recipe(resolved.module, recipe, data, example_inputs=resolved.example_inputs)
    return model


def _input_specs(options: DeployOptions) -> list[InputSpec] | None:
    if not options.input_specs:
        return None
    if options.input_shape:
        raise UsageError("--input and --input-shape both describe the inputs", "give one of them")
    specs = [s for s in options.input_specs if isinstance(s, InputSpec)]
    texts = [s for s in options.input_specs if not isinstance(s, InputSpec)]
    return specs + parse_inputs(texts)


def _plan_data(resolved: ResolvedModel, choice: "Choice | None", options: DeployOptions) -> DataPlan:
    """The run's calibration, evaluation and parity samples (edgekit.data.plan has the rules)."""
    if resolved.is_file:
        names = None
        shapes = None
    else:
        specs = torch_input_specs(resolved)
        names = [s.name for s in specs]
        shapes = {s.name: s.shape for s in specs}
    return plan_data(
        calibration=options.calibration, evaluation=options.eval_data, own_data=resolved.dataset,
        input_names=names, input_shapes=shapes, preprocess=options.preprocess or resolved.preprocess,
        eval_limit=options.eval_limit, need_calibration=choice is not None and choice.precision == "int8",
    )


def _without_calibration(profile: DeviceProfile, choice: Choice, options: DeployOptions) -> Choice:
    """int8 chosen and no calibration data: never calibrate on made-up inputs.

    ``--precision int8`` is refused; the profile's own int8 preference falls back to its best
    non-int8 one, and the report says why (docs: "Your own model and data").
    """
    if options.precision == "int8":
        raise UsageError("int8 needs calibration data for this model (none is known, and edgekit never "
                         "calibrates on random inputs)",
                         "pass --calibration DATA (100-500 representative samples), or choose --precision fp16/fp32")
    fmt = options.format
    for pref in profile.preferred:
        if pref.precision != "int8" and (fmt is None or pref.format == fmt):
            exporter = get_format(pref.format)
            if pref.precision in exporter.precisions and exporter.available():
                return Choice(pref.format, pref.precision,
                              f"{profile.name}'s int8 preference needs calibration data and none was given "
                              f"(--calibration DATA): chose {pref.format}/{pref.precision}, its next preference",
                              dict(pref.options))
    fallback = fmt or choice.format
    return Choice(fallback, "fp32", "int8 needs calibration data and none was given (--calibration DATA): "
                  f"chose {fallback}/fp32")


def _artifact_for(
    resolved: ResolvedModel,
    choice: Choice | None,
    options: DeployOptions,
    out_dir: Path,
    plan: DataPlan,
    say: Progress,
) -> tuple[Artifact, int | None, str]:
    if resolved.is_file or choice is None:
        return inspect_model_file(resolved), None, "deployed as given"
    from edgekit.export.api import export

    calibration = plan.calibration if choice.precision == "int8" else None
    export_options = dict(choice.options)
    if calibration is not None and "int8_mode" not in export_options:
        return _int8_by_measurement(resolved, choice, options, out_dir, plan, say)
    say(f"exporting {choice.format}/{choice.precision}")
    artifact = export(
        resolved.module, resolved.example_inputs, format=choice.format, precision=choice.precision,
        calibration=calibration.inputs if calibration is not None else None, out_dir=out_dir,
        name=f"{resolved.name}.{choice.precision}", check_parity=True, strict=options.strict,
        options=export_options or None,
        calibration_source=calibration.description() if calibration is not None else None,
        parity_inputs=_parity_samples(plan),
    )
    if plan.preprocess is not None:
        artifact.preprocess = plan.preprocess.to_manifest()
        artifact.write_manifest()
    reference_size = None
    if choice.precision != "fp32":
        reference = export(resolved.module, resolved.example_inputs, format=choice.format, precision="fp32",
                           out_dir=out_dir, name=f"{resolved.name}.fp32", check_parity=False)
        reference_size = reference.size_bytes
    return artifact, reference_size, choice.because


def _int8_by_measurement(resolved: ResolvedModel, choice: Choice, options: DeployOptions, out_dir: Path,
                         plan: DataPlan, say: Progress) -> tuple[Artifact, int | None, str]:
    """int8 without a forced mode: every mode that applies, judged on held-out calibration samples
    (edgekit.export.int8_modes); the rows go into the manifest and the report."""
    from edgekit.export.api import check_calibration
    from edgekit.export.int8_modes import choose_int8_mode

    check_calibration(plan.calibration.inputs, resolved.module, resolved.example_inputs)
    say(f"exporting {choice.format}/int8: trying each int8 mode on held-out calibration samples")
    picked = choose_int8_mode(resolved.module, resolved.example_inputs, choice.format, plan.calibration, out_dir,
                              f"{resolved.name}.int8", metric=options.metric, options=dict(choice.options) or None)
    artifact = picked.artifact
    artifact.calibration = {**(artifact.calibration or {}), "int8_modes": picked.to_dict(),
                            "data": f"{plan.calibration.description()}: {picked.calibration_samples} calibrated, "
                                    f"{picked.held_out_samples} held out to choose the int8 mode"}
    if plan.preprocess is not None:
        artifact.preprocess = plan.preprocess.to_manifest()
    artifact.write_manifest()
    return artifact, picked.reference.size_bytes, f"{choice.because}; int8 mode {picked.chosen.mode} by measurement"


def _parity_samples(plan: DataPlan) -> dict[str, np.ndarray] | None:
    parity = plan.parity_set(PARITY_SAMPLES)
    return dict(parity.inputs) if parity is not None else None


def _parity_inputs(artifact: Artifact, plan: DataPlan, user_inputs: dict[str, np.ndarray] | None,
                   specs: Sequence[InputSpec] | None) -> tuple[dict[str, np.ndarray], str]:
    """Inputs compared between the device and the reference, and what they are: the user's."""
    if user_inputs is not None:
        n = len(next(iter(user_inputs.values())))
        return user_inputs, f"{n:,} samples of --inputs"
    parity = plan.parity_set(PARITY_SAMPLES)
    if parity is not None:
        return _by_artifact_names(artifact, parity.inputs), plan.parity_description(PARITY_SAMPLES)
    if specs:
        feeds = random_feeds(specs, PARITY_SAMPLES)
        return _by_artifact_names(artifact, feeds), f"{PARITY_SAMPLES} seeded random inputs in the --input ranges (no data given)"
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in artifact.inputs:
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        dtype = np.dtype(spec.dtype) if spec.dtype else np.dtype(np.float32)
        if dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 10, size=(PARITY_SAMPLES, *shape[1:])).astype(dtype)
        else:
            feeds[spec.name] = rng.standard_normal((PARITY_SAMPLES, *shape[1:])).astype(np.float32)
    return feeds, f"{PARITY_SAMPLES} seeded random inputs (no data given: pass --eval DATA to check real samples)"


def _by_artifact_names(artifact: Artifact, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays keyed by the artifact's input names, in order (data and artifact may name them apart)."""
    names = [spec.name for spec in artifact.inputs]
    if set(arrays) == set(names):
        return {name: arrays[name] for name in names}
    if len(arrays) != len(names):
        raise DataError(f"the data has {len(arrays)} inputs ({', '.join(arrays)}) but the model takes {len(names)} "
                        f"({', '.join(names)})", "give one array per model input")
    return dict(zip(names, arrays.values()))


def _evaluation_for(artifact: Artifact, evaluation: Dataset | None) -> Dataset | None:
    if evaluation is None:
        return None
    from dataclasses import replace

    return replace(evaluation, inputs=_by_artifact_names(artifact, evaluation.inputs))


def match_inputs(artifact: Artifact, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The user's arrays keyed by the artifact's input names (one unnamed array fits a one-input model)."""
    return check_user_inputs(artifact.inputs, arrays)


def check_user_inputs(specs: Sequence[TensorSpec], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` by input name after checking names, sample shapes and dtypes against ``specs``."""
    names = [spec.name for spec in specs]
    if len(names) == 1 and len(arrays) == 1:
        matched = {names[0]: next(iter(arrays.values()))}
    else:
        missing, unexpected = sorted(set(names) - set(arrays)), sorted(set(arrays) - set(names))
        if missing or unexpected:
            raise DataError(f"--inputs do not match the model: missing {missing}, unexpected {unexpected}",
                            f"save one array per input name: {', '.join(names)}")
        matched = {name: arrays[name] for name in names}
    return {spec.name: _checked_input_array(spec, matched[spec.name]) for spec in specs}


def _checked_input_array(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """``array`` if it fits ``spec`` (float64 cast to the model's float32 and the like), else a DataError."""
    want = [d if isinstance(d, int) else None for d in spec.shape]
    batch = want[0] if want and want[0] else 1
    sample = list(array.shape[1:])
    if array.ndim != len(want) or any(w is not None and w != g for w, g in zip(want[1:], sample)):
        shown = ", ".join(["samples"] + ["any" if w is None else str(w) for w in want[1:]])
        raise DataError(f"--inputs array {spec.name!r} has shape {list(array.shape)} but the model takes "
                        f"[{shown}]", "stack samples along axis 0, each shaped like one model input")
    if len(array) < batch:
        raise DataError(f"--inputs array {spec.name!r} has {len(array)} samples but the model's batch is {batch}",
                        f"save at least {batch} samples")
    wanted = np.dtype(spec.dtype)
    float_ok = spec.quantization is not None and array.dtype.kind == "f"  # the runner quantizes float inputs
    if array.dtype.kind != wanted.kind and not float_ok:
        raise DataError(f"--inputs array {spec.name!r} is {array.dtype} but the model takes {wanted}",
                        f"save it as {wanted}")
    if float_ok:
        return array.astype(np.float32, copy=False)
    return array.astype(wanted, copy=False)  # same kind: float64 samples for a float32 model


def torch_input_specs(resolved: ResolvedModel) -> list[TensorSpec]:
    """The inputs a torch model's artifact will have: forward()'s names, the example shapes and dtypes."""
    from edgekit.export.calibration import input_names

    examples = resolved.example_inputs or ()
    names = input_names(resolved.module, len(examples))
    return [TensorSpec(name, list(e.shape), str(e.detach().cpu().numpy().dtype)) for name, e in zip(names, examples)]


def inspect_model_file(resolved: ResolvedModel) -> Artifact:
    """The Artifact of a model file deployed as is; an unreadable or empty file is a bad MODEL."""
    from edgekit.errors import ExportError, ModelError

    path = resolved.file
    try:
        artifact = get_format(resolved.file_format).inspect(path)
    except ExportError as exc:
        raise ModelError(str(exc), f"pass a .{resolved.file_format} file as its converter wrote it") from exc
    if not artifact.inputs or not artifact.outputs:
        raise ModelError(f"{path.name} has no model inputs or outputs: not a usable {resolved.file_format} model",
                         f"pass a .{resolved.file_format} file as its converter wrote it")
    return artifact


def _one_batch(artifact: Artifact, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first batch of the user's inputs: what the benchmark times, one inference at a time."""
    first = {}
    for spec in artifact.inputs:
        batch = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) else 1
        first[spec.name] = arrays[spec.name][:batch]
    return first


def _threads(target: Target, profile: DeviceProfile, options: DeployOptions) -> int | None:
    """--threads, else the profile's as far as the target can give them (emulated: this host's cores)."""
    return options.threads or target.inference_threads(profile.threads)


def _base_job(artifact: Artifact, profile: DeviceProfile, options: DeployOptions, mode: str,
              target: Target) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "mode": mode,
        "model": artifact.path.name,
        "format": artifact.format,
        "precision": artifact.precision,  # the tensorrt runtime builds its engine at this precision
        "runtimes": profile.runtimes.get(artifact.format, []),
        "providers": profile.onnx_providers,
        "threads": _threads(target, profile, options),
        "io_quantization": artifact.io_quantization(),
    }


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` (a ``.npz`` name) for a run's job; returns ``path``."""
    np.savez(path, **arrays)
    return path


def _run_benchmark(target: Target, prepared: PreparedDeploy, options: DeployOptions, work: Path) -> dict[str, Any]:
    artifact, profile = prepared.artifact, prepared.profile
    job = _base_job(artifact, profile, options, "benchmark", target)
    job.update(warmup=DEFAULT_WARMUP if options.warmup is None else options.warmup,
               runs=DEFAULT_RUNS if options.runs is None else options.runs,
               min_seconds=options.min_seconds, inputs=None, save_outputs=None,
               profile_ops=options.profile_ops)
    if prepared.resolved.input_specs:
        job["input_ranges"] = runner_ranges(prepared.resolved.input_specs)
    files = {artifact.path.name: artifact.path}
    if prepared.user_inputs_npz is not None:
        files["inputs.npz"] = prepared.user_inputs_npz
        job["inputs"] = "inputs.npz"
    local = work / "bench"
    local.mkdir(parents=True, exist_ok=True)
    return target.run(RunJob(job=job, files=files), local).result


def _save_npz_atomic(dest: Path, arrays: dict[str, np.ndarray]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _device_outputs(target: Target, artifact: Artifact, profile: DeviceProfile, options: DeployOptions,
                    inputs_npz: Path, work: Path, name: str) -> dict[str, np.ndarray]:
    """The device's outputs for every sample of ``inputs_npz``, by output name in model order."""
    job = _base_job(artifact, profile, options, "outputs", target)
    job.update(inputs="inputs.npz", save_outputs="outputs.npz")
    files = {artifact.path.name: artifact.path, "inputs.npz": inputs_npz}
    local = work / name
    local.mkdir(parents=True, exist_ok=True)
    result = target.run(RunJob(job=job, files=files, fetch=["outputs.npz"]), local)
    names = (result.result.get("outputs") or {}).get("names")
    with np.load(result.files["outputs.npz"], allow_pickle=False) as data:
        return {name: data[name] for name in (names or data.files)}


def _reference_outputs(artifact: Artifact, resolved: ResolvedModel, feeds: dict[str, np.ndarray]) -> tuple[str, list[np.ndarray]]:
    """Torch's outputs when we have the module, else the host runtime's for a file deployed as is."""
    if resolved.module is not None:
        import torch

        with torch.no_grad():
            tensors = [torch.from_numpy(feeds[spec.name]) for spec in artifact.inputs]
            out = resolved.module(*tensors)
        outs = out if isinstance(out, (tuple, list)) else [out]
        return "torch", [o.detach().numpy() for o in outs]
    from edgekit.export.parity import run_artifact

    return "host runtime", run_artifact(artifact, feeds)


def _run_parity(target: Target, prepared: PreparedDeploy, options: DeployOptions, work: Path) -> ParitySummary:
    from edgekit.export.parity import compare_outputs

    artifact = prepared.artifact
    device_out = _device_outputs(target, artifact, prepared.profile, options, prepared.parity_npz, work, "parity")
    if options.save_outputs:
        _save_npz_atomic(Path(options.save_outputs), device_out)
    reference, expected = prepared.reference_outputs()
    stats = compare_outputs(expected, list(device_out.values()), precision=artifact.precision)
    return ParitySummary(reference=reference, **stats)


def _run_accuracy(target: Target, prepared: PreparedDeploy, options: DeployOptions, work: Path) -> AccuracySummary:
    """The artifact's outputs on the evaluation samples, on the target; the task metric here."""
    from edgekit import metrics

    artifact, evaluation = prepared.artifact, prepared.evaluation
    assert evaluation is not None and prepared.eval_npz is not None
    outputs = _device_outputs(target, artifact, prepared.profile, options, prepared.eval_npz, work, "eval")
    first = next(iter(outputs.values()))
    reference = prepared.reference_eval_outputs()
    name = options.metric or metrics.infer_metric(evaluation.labels, first.shape)
    result = metrics.evaluate(name, first, labels=evaluation.labels,
                              reference_outputs=reference[0] if reference else None)
    top1 = result.values.get("top1") if result.metric == "classification" else None
    ref_top1 = result.reference.values.get("top1") if (top1 is not None and result.reference) else None
    return AccuracySummary(
        dataset=evaluation.description(), n=result.samples, accuracy=top1, reference_accuracy=ref_top1,
        metric=result.metric, headline=result.headline, values=dict(result.values),
        reference_values=dict(result.reference.values) if result.reference else None,
        against=result.against, text=result.text(),
    )


def _torch_outputs(resolved: ResolvedModel, evaluation: Dataset, artifact: Artifact) -> list[np.ndarray]:
    """The float torch model's outputs for every evaluation sample (model order)."""
    from edgekit.export.parity import torch_outputs

    return torch_outputs(resolved.module, [evaluation.inputs[spec.name] for spec in artifact.inputs])

def _mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024.0


def _warnings(bench: dict[str, Any], parity: ParitySummary | None, info_representative: bool) -> list[str]:
    warnings = []
    for when in ("state_before", "state_after"):
        state = bench.get(when) or {}
        governor = state.get("governor")
        if governor and governor != "performance":
            warnings.append(f"CPU governor is '{governor}' ({when.replace('_', ' ')} the run), not 'performance': "
                            "latency may vary with the clock")
            break
    throttled = (bench.get("state_after") or {}).get("throttled") or {}
    now = sorted(flag for flag, on in (throttled.get("now") or {}).items() if on)
    since_boot = sorted(flag for flag, on in (throttled.get("since_boot") or {}).items() if on)
    if now:
        warnings.append(f"the device is throttling ({', '.join(now)}; vcgencmd get_throttled "
                        f"{throttled.get('raw')}): latency is not the device's best")
    elif since_boot:
        warnings.append(f"the device throttled since boot ({', '.join(since_boot)}; vcgencmd get_throttled "
                        f"{throttled.get('raw')}): check its power supply and cooling")
    if parity is not None and not parity.passed:
        warnings.append(f"parity over tolerance: max|Δ| {parity.max_abs_diff:.3g} > {parity.tolerance:.3g}")
    if not info_representative:
        warnings.append("latency was measured on this host or under emulation: not the device's")
    return warnings


def _build_report(model: str, profile: DeviceProfile, target: Target, artifact: Artifact, reference_size: int | None,
                  because: str, bench: dict[str, Any], parity: ParitySummary | None,
                  accuracy: AccuracySummary | None, options: DeployOptions) -> DeployReport:
    info = target.describe()
    facts = bench.get("device") or {}
    representative = info.representative_latency and not facts.get("emulated_by")
    timings = bench.get("timings_ms") or {}
    memory = bench.get("memory") or {}
    runtime = bench.get("runtime") or {}
    notes, details = split_notes(list(bench.get("notes") or []) + list(artifact.notes) + info.not_reproduced)
    return DeployReport(
        edgekit_version=__version__,
        model=model,
        device=profile.name,
        profile=profile.model_dump(mode="json"),
        target=TargetSummary(kind=info.kind, address=info.address, reproduced=info.reproduced,
                             not_reproduced=info.not_reproduced, transfer=target.stats()),
        artifact=ArtifactSummary(file=artifact.path.name, format=artifact.format, precision=artifact.precision,
                                 size_bytes=artifact.size_bytes, sha256=artifact.sha256,
                                 reference_size_bytes=reference_size, chosen_because=because,
                                 manifest=artifact.to_dict()),
        runtime=RuntimeSummary(name=runtime.get("name", artifact.format), version=runtime.get("version"),
                               providers=runtime.get("providers") or [], threads=runtime.get("threads")),
        settings={"runs": len(bench.get("samples_ms") or []), "warmup": len(bench.get("warmup_ms") or []),
                  "threads": _threads(target, profile, options), "min_seconds": options.min_seconds},
        latency=LatencySummary(import_ms=timings.get("import"), init_ms=timings.get("init"),
                               first_ms=timings.get("first"), representative=representative,
                               samples_ms=bench.get("samples_ms") or [], warmup_ms=bench.get("warmup_ms") or [],
                               **latency_summary(bench.get("samples_ms") or [])),
        memory=MemorySummary(peak_rss_mib=_mib(memory.get("peak_rss_kib")),
                             baseline_rss_mib=_mib(memory.get("baseline_rss_kib"))),
        parity=parity,
        accuracy=accuracy,
        op_profile=bench.get("op_profile") or [],
        device_facts=facts,
        state_before=bench.get("state_before") or {},
        state_after=bench.get("state_after") or {},
        warnings=_warnings(bench, parity, representative),
        notes=notes,
        details=details,
    )


make_module_callable(__name__, "deploy")

__all__ = ["Choice", "DeployOptions", "choose_format", "deploy"]

