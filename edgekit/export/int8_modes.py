"""Which int8 mode for this model? Export each one, judge it on held-out calibration samples, pick.

Transformers lose most in full-integer int8 (a 6-layer sentence encoder, cosine of its embedding
to float: TFLite full-integer 0.945, ONNX static 0.842, ONNX dynamic 0.992, TFLite dynamic-range
0.998), while CNNs need static/full int8 (dynamic leaves convolutions float: no smaller, no
faster). So ``choose_int8_mode`` measures instead of guessing:

1. The calibration Dataset is split, seeded: 75 % calibrate every candidate, 25 % judge them
   (never the user's eval set, which stays for the final report).
2. Candidates: ONNX ``static`` (QDQ) and ``dynamic``; TFLite ``full`` (full-integer) and
   ``dynamic`` (dynamic-range); plus ONNX ``static+float``: static with the most sensitive layers
   kept float (``float_modules``). TFLite has no such variant: its full-integer export
   (edgekit.export.tflite) offers no option to keep named modules float, so it is not tried there.
3. Each candidate is exported (``edgekit.export.api.export``), then run through the device runner
   (1 thread): its task metric on the held-out samples (``evaluate_metric``), its max/mean |Δ| to
   float torch, its host p50 latency (the runner's own bind + time loop, a few dozen runs).
4. The winner is the best metric among candidates whose file is at most ``max_size_ratio`` × the
   fp32 file; equal metrics go to the earlier candidate in the order above (the format's default
   mode first: whole-integer graphs are what device int8 kernels and accelerators run best).
   When no candidate is small enough, the most accurate exported one is taken (equal metrics:
   the smaller file) and ``because`` says so. A mode whose file cannot fit (``estimated_size_ratio``
   over the limit: e.g. TFLite full-integer keeps embedding tables float, 0.65× fp32 for a
   sentence encoder) is not exported unless no other mode fits: a skipped row says why, and
   the search skips its conversion (minutes for such a model). A candidate that fails to export or to run is a row with its error; when every
   candidate fails, an ExportError names each failure. A bad option (UsageError) is raised as is.

Which layers the ``static+float`` variant keeps float: the GPTQ record in
``artifact.calibration["weight_rounding"]`` holds only the summed layer error, not one figure
per layer, and first/last layers are a guess. So each Conv/Linear layer is measured directly, one
at a time, in torch on up to 32 calibration samples: its weights rounded to per-channel int8 and
its input to 8 bits over the calibration range (what static int8 does to that layer), the
model's relative output error recorded. That is L+1 forward passes of 32 samples (milliseconds
for the example CNN) and it ranks the layers by what int8 costs the *output*, activations
included (transformer outliers show up there, not in the weights). The top
``MAX_FLOAT_MODULES`` layers are kept float, skipping any whose float weights would push the
estimated file (the static file + 3 bytes per kept weight) over ``max_size_ratio``.

``options["int8_mode"]`` forces one mode: no search, that candidate alone, chosen whatever its
size; its export error is raised.
"""

from __future__ import annotations

import copy
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.errors import DataError, EdgekitError, ExportError, MissingDependencyError, UsageError
from edgekit.export import calibration as cal
from edgekit.export.base import Artifact

FLOAT_SUFFIX = "+float"
JUDGE_FRACTION = 0.25
SPLIT_SEED = 0
MIN_SAMPLES = 4
MAX_FLOAT_MODULES = 2
SENSITIVITY_SAMPLES = 32
# ... or fewer, down to SENSITIVITY_MIN_SAMPLES, so that the one-layer-at-a-time passes cost at most
# SENSITIVITY_MACS multiply-adds: the ranking needs few samples, and on ResNet-18 at 224x224 the 21
# passes over 32 samples were a third of the whole int8 choice.
SENSITIVITY_MACS = 4e11
SENSITIVITY_MIN_SAMPLES = 8
LATENCY_WARMUP = 5
LATENCY_RUNS = 30
TIE = 1e-9  # metric values this close are equal (classification counts give exact ties)

Say = Callable[[str], None]


@dataclass
class Int8Row:
    """One candidate: what was tried and what it measured (None where it failed or was skipped)."""

    mode: str  # "static", "dynamic", "full", "static+float"; "fp32" for the reference row
    options: dict[str, Any]
    status: str = "ok"  # "ok", "failed" (error says why), "skipped" (not tried; error says why)
    error: str | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None  # vs the fp32 file
    metric: str | None = None
    headline: str | None = None  # the metric's headline figure ("top1", "mean_cosine", ...)
    value: float | None = None
    higher_is_better: bool = True
    metric_text: str | None = None  # every figure of the metric: "top-1 92.19 % · top-5 100.00 %"
    headline_text: str | None = None  # the headline's display name: "top-1", "mean cosine"
    percent: bool = False  # the headline is a fraction shown as %
    max_abs_diff: float | None = None  # vs float torch on the held-out samples
    mean_abs_diff: float | None = None
    p50_ms: float | None = None  # host, 1 thread, the runner
    export_seconds: float | None = None
    chosen: bool = False

    @property
    def exported(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exported": self.exported}


@dataclass
class Int8Choice:
    """The chosen int8 artifact (in ``out_dir``, manifest written) and every mode's measurements."""

    artifact: Artifact
    rows: list[Int8Row]
    because: str
    reference: Int8Row  # the fp32 file: the size reference, its latency and metric
    max_size_ratio: float
    calibration_samples: int
    held_out_samples: int
    sensitivity: dict[str, float] = field(default_factory=dict)  # layer → relative output error
    seconds: float = 0.0

    @property
    def chosen(self) -> Int8Row:
        return next(row for row in self.rows if row.chosen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact.path.name, "mode": self.chosen.mode, "because": self.because,
            "rows": [row.to_dict() for row in self.rows], "reference": self.reference.to_dict(),
            "max_size_ratio": self.max_size_ratio, "calibration_samples": self.calibration_samples,
            "held_out_samples": self.held_out_samples, "sensitivity": dict(self.sensitivity),
            "seconds": self.seconds,
        }


def choose_int8_mode(
    model: Any,
    example_inputs: Any,
    fmt: str,
    calibration: Any,
    out_dir: str | Path,
    name: str,
    *,
    metric: str | None = None,
    options: dict[str, Any] | None = None,
    max_size_ratio: float = 0.30,
    say: Say | None = None,
) -> Int8Choice:
    """Export ``model`` to ``fmt`` in each int8 mode that applies, judge each on held-out
    calibration samples and keep the most accurate one no larger than ``max_size_ratio`` × fp32
    as ``out_dir/<name><suffix>`` (see the module docstring).

    ``calibration``: an ``edgekit.data.Dataset`` (labels, when present, make the metric
    classification-like; ``metric`` names one of ``edgekit.metrics``). ``options``: export options
    for every candidate (``int8_mode`` forces that mode alone).
    """
    from edgekit.data import Dataset
    from edgekit.export.api import choose
    from edgekit.outputs import check_output_dir, missing_folders, remove_folders

    started = time.perf_counter()
    say = say or (lambda _text: None)
    choose(fmt, "int8")
    if not isinstance(calibration, Dataset):
        raise UsageError("choosing an int8 mode needs the calibration data as an edgekit.data.Dataset",
                         "load it with edgekit.data.load_data(...)")
    if len(calibration) < MIN_SAMPLES:
        raise DataError(f"choosing an int8 mode needs at least {MIN_SAMPLES} calibration samples "
                        f"(got {len(calibration)})", "pass 100-500 representative inputs")
    if not 0 < max_size_ratio:
        raise UsageError(f"max_size_ratio must be positive (got {max_size_ratio})")
    options = dict(options or {})
    forced = options.pop("int8_mode", None)
    examples = cal.as_tuple(example_inputs)
    names = list(options.get("input_names") or cal.input_names(model, len(examples)))
    calibrate, judge = calibration.split(fraction=1 - JUDGE_FRACTION, seed=SPLIT_SEED)
    data = _Data(model, examples, names, calibrate, judge)
    out_dir = check_output_dir(out_dir, "out_dir")
    created = missing_folders(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".int8-modes.", dir=out_dir))  # same file system: the winner is renamed
    done = False
    try:
        search = _Search(fmt, data, options, work, name, metric, max_size_ratio, say)
        reference = search.reference()
        if forced is not None:
            rows = [search.candidate(str(forced), {**options, "int8_mode": forced}, raise_errors=True)]
        else:
            rows = search.candidates()
        best, because = _pick(rows, max_size_ratio, len(judge), forced is not None)
        best.chosen = True
        artifact = _publish(search.artifacts[best.mode], out_dir, because)
        done = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not done:
            remove_folders(created)
    say(f"int8 mode: {because}")
    return Int8Choice(artifact, rows, because, reference, max_size_ratio, len(calibrate), len(judge),
                      search.sensitivity, time.perf_counter() - started)


# -- the data: calibration for the exporters, held-out samples for the judge -------------------


class _Data:
    """The split calibration set in the forms each step takes (inputs in forward() order)."""

    def __init__(self, model: Any, examples: tuple[Any, ...], names: list[str], calibrate: Any, judge: Any) -> None:
        if len(calibrate.inputs) != len(names):
            raise DataError(f"calibration data have {len(calibrate.inputs)} inputs but the model takes {len(names)}",
                            f"give one array per input: {', '.join(names)}")
        self.model = model.eval()
        self.examples = examples
        self.names = names
        self.calibrate = calibrate
        self.export_calibration = _by_names(calibrate.inputs, names)
        self.judge_arrays = [np.asarray(a) for a in _by_names(judge.inputs, names).values()]
        self.labels = judge.labels
        self.source = calibrate.description()

    def judge_inputs(self, artifact: Artifact) -> dict[str, np.ndarray]:
        """The held-out samples keyed by the artifact's own input names (forward() order)."""
        return {spec.name: arr for spec, arr in zip(artifact.inputs, self.judge_arrays)}

    def sensitivity_arrays(self) -> list[np.ndarray]:
        feeds = _by_names(self.calibrate.inputs, self.names)
        return [np.asarray(a[:SENSITIVITY_SAMPLES]) for a in feeds.values()]


def _by_names(inputs: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Dataset arrays keyed by the model's input names: by name where they match, else in order."""
    if set(inputs) == set(names):
        return {n: inputs[n] for n in names}
    return dict(zip(names, inputs.values()))


# -- exporting and judging the candidates --------------------------------------------------------


class _Search:
    def __init__(self, fmt: str, data: _Data, options: dict[str, Any], work: Path, name: str,
                 metric: str | None, max_size_ratio: float, say: Say) -> None:
        self.fmt = fmt
        self.data = data
        self.options = options
        self.work = work
        self.name = name
        self.metric = metric
        self.max_size_ratio = max_size_ratio
        self.say = say
        self.artifacts: dict[str, Artifact] = {}
        self.fp32_size = 0
        self.sensitivity: dict[str, float] = {}
        self._runner: Any = None

    def reference(self) -> Int8Row:
        """The fp32 export: the size every ratio is taken against; its metric fixes the metric."""
        from edgekit.export.api import export

        self.say(f"int8 modes: exporting {self.fmt}/fp32 for reference")
        opts = {k: v for k, v in self.options.items() if k in ("opset", "dynamic_batch", "channels_last",
                                                                  "input_names", "output_names", "optimize",
                                                                  "strip_names")}
        artifact = export(self.data.model, self.data.examples, format=self.fmt, precision="fp32",
                          out_dir=self.work / "fp32", name=self.name, options=opts or None, check_parity=False)
        self.fp32_size = artifact.size_bytes
        row = Int8Row("fp32", opts, size_bytes=artifact.size_bytes, size_ratio=1.0,
                      export_seconds=artifact.export_seconds)
        self._judge(row, artifact)
        if row.metric is not None:
            self.metric = row.metric  # every candidate on the same metric
        return row

    def candidates(self) -> list[Int8Row]:
        from edgekit.export import get_format

        fmt = get_format(self.fmt)
        rows: list[Int8Row] = []
        deferred: dict[int, str] = {}  # row index → mode too large to win while another fits
        for mode in fmt.int8_modes:
            float_types = fmt.int8_float_module_types.get(mode, ())
            estimate = estimated_size_ratio(self.data.model, float_types)
            if estimate > self.max_size_ratio:
                deferred[len(rows)] = mode
                rows.append(Int8Row(mode, _shown(self._options_for(mode)), status="skipped", error=(
                    f"estimated {estimate:.2f}× fp32 > {self.max_size_ratio:.2f}× ({', '.join(float_types) or 'most'} "
                    f"weights stay float in this mode): exported only when no other mode fits")))
                self.say(f"int8 modes: {mode} not exported first: {rows[-1].error}")
                continue
            rows.append(self.candidate(mode, self._options_for(mode)))
            if fmt.float_modules_mode == mode:  # this mode can keep the most sensitive modules float
                rows.append(self._float_variant(mode, rows[-1]))
        if deferred and not any(r.exported and (r.size_ratio or 0) <= self.max_size_ratio for r in rows):
            for index, mode in deferred.items():
                rows[index] = self.candidate(mode, self._options_for(mode))
        return rows

    def _options_for(self, mode: str) -> dict[str, Any]:
        opts = {**self.options, "int8_mode": mode}
        if mode == "dynamic":
            opts.pop("float_modules", None)  # static int8 only (the ONNX exporter refuses it otherwise)
        return opts

    def candidate(self, label: str, opts: dict[str, Any], raise_errors: bool = False) -> Int8Row:
        """Export one candidate and judge it; an export error is the row's unless ``raise_errors``."""
        from edgekit.export.api import export

        row = Int8Row(label, _shown(opts))
        self.say(f"int8 modes: exporting {self.fmt}/int8 {label}")
        try:
            artifact = export(self.data.model, self.data.examples, format=self.fmt, precision="int8",
                              calibration=self.data.export_calibration, options=opts,
                              out_dir=self.work / label.replace("+", "-"), name=self.name, check_parity=False,
                              calibration_source=self.data.source)
        except MissingDependencyError:
            raise
        except EdgekitError as exc:
            if raise_errors or (isinstance(exc, UsageError) and not label.endswith(FLOAT_SUFFIX)):
                raise  # a bad option is the caller's, whichever mode meets it first
            row.status, row.error = "failed", exc.one_line()
            self.say(f"int8 modes: {label} failed: {row.error}")
            return row
        row.size_bytes = artifact.size_bytes
        row.size_ratio = artifact.size_bytes / self.fp32_size if self.fp32_size else None
        row.export_seconds = artifact.export_seconds
        self._judge(row, artifact)
        if row.exported:
            self.artifacts[label] = artifact
        elif raise_errors:
            raise ExportError(f"the {self.fmt} int8 {label} file does not run here: {row.error}")
        return row

    def _judge(self, row: Int8Row, artifact: Artifact) -> None:
        """Metric, |Δ| to float and host p50 of ``artifact`` (1 thread, the runner's code path)."""
        from edgekit.export.converter import quiet
        from edgekit.export.parity import check_parity, evaluate_metric, open_session

        inputs = self.data.judge_inputs(artifact)
        try:
            with quiet():  # the runtimes announce their delegates on stderr
                session = open_session(artifact, threads=1)
                result = evaluate_metric(artifact, self.data.model, inputs, self.data.labels, self.metric,
                                         session=session)
                parity = check_parity(self.data.model, artifact, inputs, session=session)
                row.p50_ms = self._p50_ms(session)
        except (UsageError, MissingDependencyError):
            raise  # a bad metric name, a metric the data cannot give: the caller's, not the candidate's
        except Exception as exc:  # the runtime cannot run what the converter wrote
            row.status, row.error = "failed", f"does not run here: {type(exc).__name__}: {exc}"
            return
        row.metric, row.headline, row.value = result.metric, result.headline, result.value
        row.higher_is_better, row.metric_text = result.higher_is_better, result.figures()
        row.headline_text = result.labels.get(result.headline, result.headline)
        row.percent = result.headline in result.percent
        row.max_abs_diff, row.mean_abs_diff = parity["max_abs_diff"], parity["mean_abs_diff"]
        artifact.parity = {**parity, "inputs": "held-out calibration samples"}
        size = f"{row.size_ratio:.2f}× fp32" if row.size_ratio is not None else f"{row.size_bytes} B"
        self.say(f"int8 modes: {row.mode}: {row.metric_text}, {size}, p50 {row.p50_ms:.3f} ms")

    def _p50_ms(self, session: Any) -> float:
        """Median of LATENCY_RUNS timed inferences after a warm-up (the runner's benchmark loop)."""
        if self._runner is None:
            from edgekit.resources import runner_module

            self._runner = runner_module()
        native = session.prepare(self._runner.random_feeds(session, 0))
        raw = session.run_native(native)
        invoke = session.bind(native, raw)
        self._runner.time_loop(invoke, LATENCY_WARMUP, 0.0, LATENCY_WARMUP)
        return float(statistics.median(self._runner.time_loop(invoke, LATENCY_RUNS, 0.0, LATENCY_RUNS)))

    def _float_variant(self, mode: str, base: Int8Row) -> Int8Row:
        """``mode`` with the most sensitive layers kept float (a skipped row when none fits)."""
        label = mode + FLOAT_SUFFIX
        if not base.exported:
            return Int8Row(label, {}, status="skipped", error=f"not tried: {mode} did not export")
        self.say("int8 modes: measuring each layer's int8 sensitivity")
        try:
            self.sensitivity = layer_sensitivity(self.data.model, self.data.sensitivity_arrays(),
                                                 batch=_batch_of(self.data.examples))
        except Exception as exc:  # torch ran this model for the export: say why, try the other modes
            return Int8Row(label, {}, status="skipped",
                           error=f"not tried: layer sensitivity not measured ({type(exc).__name__}: {exc})")
        already = list(self.options.get("float_modules") or ())
        kept = _float_modules(self.data.model, self.sensitivity, already, base.size_bytes or 0,
                              self.fp32_size, self.max_size_ratio)
        if not kept:
            return Int8Row(label, {}, status="skipped", error=f"not tried: {self._no_float_reason(mode, base)}")
        return self.candidate(label, {**self._options_for(mode), "float_modules": already + kept})

    def _no_float_reason(self, mode: str, base: Int8Row) -> str:
        if not self.sensitivity:
            return "no Conv/Linear layer to keep float"
        if base.size_ratio is not None and base.size_ratio > self.max_size_ratio:
            return f"{mode} is already {base.size_ratio:.2f}× fp32 (> {self.max_size_ratio:.2f}×)"
        return f"no sensitive layer is small enough to keep float within {self.max_size_ratio:.2f}× fp32"


def _shown(opts: dict[str, Any]) -> dict[str, Any]:
    """The options a row reports (lists instead of tuples, for JSON)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}


# -- the choice ----------------------------------------------------------------------------------


def _pick(rows: list[Int8Row], max_ratio: float, n_judge: int, forced: bool) -> tuple[Int8Row, str]:
    exported = [r for r in rows if r.exported]
    if not exported:
        raise _all_failed(rows)
    if forced:
        return exported[0], f"{exported[0].mode}: forced (no search); {_figures(exported[0], max_ratio)}"
    fits = [r for r in exported if r.size_ratio is not None and r.size_ratio <= max_ratio]
    pool = fits or exported
    best = pool[0]
    for row in pool[1:]:  # strictly better only: ties stay with the earlier (default) mode ...
        if _better(row, best) or (not fits and not _better(best, row) and row.size_bytes < best.size_bytes):
            best = row  # ... or, when no file fits, with the smaller one
    others = "; ".join(f"{r.mode} {_figures(r, max_ratio)}" if r.exported else f"{r.mode} {r.status}"
                       for r in rows if r is not best)
    where = f"the most accurate of the modes within {max_ratio:.2f}× fp32" if fits else \
        f"no mode is within {max_ratio:.2f}× fp32: the most accurate exported one"
    because = f"{best.mode}: {where} on {n_judge} held-out calibration samples ({_figures(best, max_ratio)}" + \
        (f"; {others})" if others else ")")
    return best, because


def _better(a: Int8Row, b: Int8Row) -> bool:
    if a.value is None:
        return False
    if b.value is None:
        return True
    delta = a.value - b.value if a.higher_is_better else b.value - a.value
    return delta > TIE


def _figures(row: Int8Row, max_ratio: float) -> str:
    """``top-1 92.19 %, 0.28×`` (the headline figure only; ``> 0.30×`` marks a file too large)."""
    text = "no metric" if row.value is None else f"{row.headline_text} {_fmt(row.value, row.percent)}"
    if row.size_ratio is not None:
        text += f", {row.size_ratio:.2f}×" + (f" (> {max_ratio:.2f}×)" if row.size_ratio > max_ratio else "")
    return text


def _fmt(value: float, percent: bool) -> str:
    # enough digits to show what decided: cosines of int8 modes differ in the 4th-5th digit
    return f"{100 * value:.2f} %" if percent else f"{value:.6g}"


def _all_failed(rows: list[Int8Row]) -> EdgekitError:
    failed = [r for r in rows if r.status == "failed"]
    text = "; ".join(f"{r.mode}: {r.error}" for r in failed)
    return ExportError(f"no int8 mode exported ({text})",
                       "export fp32 or fp16 instead, or another format")


def _publish(artifact: Artifact, out_dir: Path, because: str) -> Artifact:
    """Move the chosen candidate (file, then its manifest, refreshed) to ``out_dir``."""
    dest = out_dir / artifact.path.name
    os.replace(artifact.path, dest)
    artifact.path.with_name(artifact.path.name + ".manifest.json").unlink(missing_ok=True)
    artifact.path = dest
    artifact.notes.append(f"int8 mode chosen by measurement: {because}")
    artifact.write_manifest()
    return artifact


# -- which layers static int8 hurts most ---------------------------------------------------------


def layer_sensitivity(model: Any, arrays: Sequence[np.ndarray], batch: int | None = None) -> dict[str, float]:
    """Relative output error (‖Δ‖² / ‖out‖², all outputs) of ``model`` on ``arrays`` (inputs in
    forward() order, samples on axis 0) with one Conv/Linear layer at a time fake-quantized as
    static int8 quantizes it: per-channel symmetric int8 weights (round-to-nearest) and its input
    on 8 bits over the range seen on these samples. Layers never called are left out; most
    sensitive first. ``batch``: the model's own batch size, used when it refuses all samples at once."""
    import torch

    work = copy.deepcopy(model).eval()
    layers = {n: m for n, m in work.named_modules() if _quantizable(m)}
    ranges: dict[str, list[float]] = {}
    macs = [0]
    hooks = [m.register_forward_pre_hook(_range_hook(ranges, n)) for n, m in layers.items()]
    hooks += [m.register_forward_hook(_macs_hook(macs)) for m in layers.values()]
    try:
        try:
            reference = _run(work, arrays, None)
        except Exception:  # a model written for a fixed batch: feed it that
            if not batch:
                raise
            ranges.clear()
            reference = _run(work, arrays, batch)
        else:
            batch = None
    finally:
        for hook in hooks:
            hook.remove()
    n = _sensitivity_samples(len(arrays[0]), macs[0], len(ranges), batch)
    if n < len(arrays[0]):
        arrays = [a[:n] for a in arrays]
        reference = _run(work, arrays, batch)  # at the passes' own batch size: no batch-size rounding in the error
    ref_energy = sum(float((r.double() ** 2).sum()) for r in reference) or 1.0
    scores = {}
    with torch.no_grad():
        for name, (lo, hi) in ranges.items():
            module = layers[name]
            saved = module.weight.data
            module.weight.data = _fake_weight(saved)
            hook = module.register_forward_pre_hook(_quantize_input_hook(lo, hi))
            try:
                outputs = _run(work, arrays, batch)
            finally:
                hook.remove()
                module.weight.data = saved
            error = sum(float(((o.double() - r.double()) ** 2).sum()) for o, r in zip(outputs, reference))
            scores[name] = error / ref_energy
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))


def _sensitivity_samples(samples: int, reference_macs: int, layers: int, batch: int | None) -> int:
    """How many samples the per-layer passes use: all, or as many as SENSITIVITY_MACS buy (whole
    batches of a fixed-batch model, never fewer than SENSITIVITY_MIN_SAMPLES)."""
    per_sample = reference_macs / max(samples, 1) * max(layers, 1)
    n = samples if per_sample <= 0 else int(SENSITIVITY_MACS // per_sample)
    n = min(samples, max(n, SENSITIVITY_MIN_SAMPLES))
    if batch:
        n = max(batch, n - n % batch)
    return min(n, samples)


def _macs_hook(total: list[int]) -> Callable[..., None]:
    """Adds a Conv/Linear layer's multiply-adds (outputs × weights per output) to ``total[0]``."""
    def hook(module: Any, _args: tuple[Any, ...], output: Any) -> None:
        total[0] += int(output.numel()) * int(module.weight[0].numel())

    return hook


def estimated_size_ratio(model: Any, float_types: Sequence[str] = ()) -> float:
    """The int8 file's size as a fraction of the fp32 file's, from the parameters alone: one byte
    per weight of a 2-D+ tensor, four for biases, norms and the weights of modules whose type (or a
    base class: EfficientNet's padded convs are Conv2d subclasses) is in ``float_types`` (an int8
    mode that leaves them float). Scales and graph are left out: the
    estimate is a little low, so a mode is never skipped for a size it would not have."""
    total = kept = 0
    for module in model.modules():
        for param in module.parameters(recurse=False):
            total += 4 * param.numel()
            float_weight = param.dim() < 2 or any(c.__name__ in float_types for c in type(module).__mro__)
            kept += (4 if float_weight else 1) * param.numel()
    return kept / total if total else 0.0


def _quantizable(module: Any) -> bool:
    import torch

    weight = getattr(module, "weight", None)
    return (isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))
            and isinstance(weight, torch.nn.Parameter) and weight.is_floating_point())


def _run(model: Any, arrays: Sequence[np.ndarray], batch: int | None) -> list[Any]:
    """The model's tensor outputs for all samples: in one call, or in chunks of ``batch``."""
    import torch

    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]
    step = batch or len(arrays[0])
    parts: list[list[Any]] = []
    with torch.no_grad():
        for start in range(0, len(arrays[0]) - step + 1, step):  # whole chunks only
            tensors = [torch.from_numpy(np.ascontiguousarray(a[start:start + step])) for a in arrays]
            outs = [o.detach() for o in cal.flatten_outputs(model(*tensors)) if isinstance(o, torch.Tensor)]
            parts = parts or [[] for _ in outs]
            for store, out in zip(parts, outs):
                store.append(out)
    return [torch.cat(p) for p in parts]


def _batch_of(examples: tuple[Any, ...]) -> int:
    return int(examples[0].shape[0]) if examples and examples[0].dim() else 1


def _range_hook(ranges: dict[str, list[float]], name: str) -> Callable[..., None]:
    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if x is None or not x.is_floating_point():
            return
        lo, hi = float(x.min()), float(x.max())
        seen = ranges.setdefault(name, [lo, hi])
        seen[0], seen[1] = min(seen[0], lo), max(seen[1], hi)

    return hook


def _quantize_input_hook(lo: float, hi: float) -> Callable[..., Any]:
    """8-bit asymmetric fake quantization of a layer's input over [lo, hi] (zero included)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255 or 1.0
    zero = round(-lo / scale)

    def hook(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        import torch

        q = torch.clamp(torch.round(args[0] / scale) + zero, 0, 255)
        return ((q - zero) * scale, *args[1:])

    return hook


def _fake_weight(weight: Any) -> Any:
    """Per-output-channel symmetric int8, round-to-nearest (the converters' grid)."""
    import torch

    rows = weight.reshape(weight.shape[0], -1)
    scale = rows.abs().amax(dim=1, keepdim=True) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (torch.clamp(torch.round(rows / scale), -127, 127) * scale).reshape(weight.shape)


def _float_modules(model: Any, sensitivity: dict[str, float], already: list[str], static_size: int,
                   fp32_size: int, max_ratio: float) -> list[str]:
    """Up to MAX_FLOAT_MODULES most sensitive layers whose float weights keep the estimated file
    (static file + 3 bytes per kept int8 weight) within ``max_ratio`` × fp32."""
    modules = dict(model.named_modules())
    budget = max_ratio * fp32_size - static_size
    kept: list[str] = []
    for name, score in sensitivity.items():
        if len(kept) == MAX_FLOAT_MODULES or score <= 0:
            break
        if any(name == a or name.startswith(a + ".") for a in already):
            continue
        extra = 3 * modules[name].weight.numel()
        if extra <= budget:
            kept.append(name)
            budget -= extra
    return kept


__all__ = ["Int8Choice", "Int8Row", "choose_int8_mode", "estimated_size_ratio", "layer_sensitivity"]
