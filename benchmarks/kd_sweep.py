"""Distillation sweep: the benchmark's ¼-size student trained with and without KD, per variant and seed.

    python benchmarks/kd_sweep.py --seeds 0 --epochs 10 \\
        --variant 'plain' --variant 'kd:{"temperature": 4, "alpha": 0.9}' \\
        --variant 'kd:{"temperature": 4, "alpha": 0.9, "training": {"augment": {"shift": 2, "flip": true}}}'

A variant is ``plain`` or ``kd``, optionally followed by ``:`` and a JSON object: for ``kd`` fields of
``DistillConfig`` (``training`` merges into the base training config), for ``plain`` fields of
``FinetuneConfig``. Every run uses the benchmark's data (55k training images, shift-2 loader), the
same optimizer and schedule (AdamW, lr 3e-3, onecycle, no restore of the best epoch) and prints
one JSON line with the test accuracy (10,000 images). ``--log`` appends those lines to a file.
``--student '{"widths": [16, 32, 32], "hidden": 32}'`` trains a FashionCNN of another shape (default:
the benchmark's student; a warning if it has over ¼ of the teacher's params).
``--teacher-stats`` prints the teacher's accuracy, mean max-probability and entropy (at T 1 and 4)
on 20,000 training images and on the test set: how much softer than one-hot its answers are.
One torch thread per process.

``--study`` runs the paired KD study instead (docs/compress.md, "Where distillation helps"):

    python benchmarks/kd_sweep.py --study --seeds 0,1,2,3,4 --epochs 3 --jobs 2

For each seed and regime, the same student is trained twice, with and without KD, from the same
initial weights and seeded data order; the figure is the mean of the per-seed differences with a
95 % paired Student-t interval (benchmarks/stats.py), and a target is met only when the whole
interval clears its limit. Regimes: ``few`` — a seeded 5 % of the 55k training images keep their
labels (``--label-fraction``), the other 95 % are the distill step's unlabeled ``transfer:`` set
(an ``.npz`` without ``y``, as a user would pass it); the plain student trains on the labelled
images alone for as many optimizer steps as the KD run takes; ``full`` — all 55k labels, both arms
``--epochs`` epochs (the regime of the older claim). The teacher is the bundled example model.
Writes ``benchmarks/results/kd_study.json`` (rows stamped with the host kind) and logs each run to
``--log`` (default ``benchmarks/results/kd_study.jsonl``) as it ends; ``--resume`` skips the runs
that log already holds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.compress import DistillConfig, FinetuneConfig, distill, finetune  # noqa: E402
from edgekit.compress.measure import evaluate  # noqa: E402
from edgekit.data import FASHION_MNIST_PREPROCESS, load_fashion_mnist  # noqa: E402
from edgekit.data.training import FASHION_MNIST_VAL_SIZE, ArrayLoader, TrainData, train_data  # noqa: E402
from edgekit.examples.fashion_cnn import FashionCNN, build  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from hostkind import stamp  # noqa: E402
from stats import paired, target_met  # noqa: E402

STUDENT = {"widths": (8, 16, 32), "hidden": 60}  # benchmarks/compression.py's KD student (23,894 params)


def run(variant: str, seed: int, epochs: int, teacher_ref: str | None = None, shape: dict | None = None) -> dict:
    kind, _, extra = variant.partition(":")
    options = json.loads(extra) if extra else {}
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = train_data("example:fashion-mnist", seed=seed)
    training = {"epochs": epochs, "lr": 3e-3, "schedule": "onecycle", "restore_best": False}
    shape = shape or STUDENT
    student = FashionCNN(**shape)
    start = time.perf_counter()
    if kind == "plain":
        student, _ = finetune(student, data, FinetuneConfig(**(training | options)))
    elif kind == "kd":
        training |= options.pop("training", {})
        teacher = build()
        if teacher_ref:
            teacher.load_state_dict(torch.load(teacher_ref, weights_only=True))
        student, _ = distill(student, teacher, data, DistillConfig(**options, training=training))
    else:
        raise SystemExit(f"unknown variant kind {kind!r}: use plain or kd")
    test = load_fashion_mnist("test")
    acc = evaluate(student, ArrayLoader(test.x, test.y, batch_size=1000))
    return {"variant": variant, "seed": seed, "epochs": epochs, "teacher": teacher_ref or "bundled",
            "student": {"widths": list(shape["widths"]), "hidden": shape["hidden"]},
            "student_params": sum(p.numel() for p in student.parameters()),
            "test_accuracy": acc, "seconds": round(time.perf_counter() - start, 1)}


@torch.no_grad()
def teacher_stats(teacher_ref: str | None) -> list[dict]:
    teacher = build()
    if teacher_ref:
        teacher.load_state_dict(torch.load(teacher_ref, weights_only=True))
    teacher.eval()
    out = []
    for split, limit in (("train", 20_000), ("test", None)):
        images = load_fashion_mnist(split, limit=limit)
        logits = torch.cat([teacher(torch.from_numpy(images.x[i : i + 2000])) for i in range(0, len(images), 2000)])
        row = {"split": split, "images": len(images),
               "accuracy": float((logits.argmax(1).numpy() == images.y).mean())}
        for t in (1, 4):
            p = torch.softmax(logits / t, 1)
            row[f"mean_max_prob_T{t}"] = float(p.max(1).values.mean())
            row[f"mean_entropy_T{t}"] = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
        out.append(row)
    return out


# --- the paired KD study (--study) ---------------------------------------------------------------

STUDY_STUDENT = {"widths": (16, 32, 32), "hidden": 32}  # compression.py's KD student: 23,706 params, 0.24× the teacher
STUDY_KD = {"temperature": 4.0, "alpha": 0.9}
# The KD gain (pt) the whole 95 % interval must clear, set before the runs: +1 pt is worth a
# distill step to someone with few labels; +0.3 pt is the older full-label target.
STUDY_TARGETS = {"few": 1.0, "full": 0.3}
STUDY_VAL = 1000  # validation images evaluated after each epoch (monitoring only; the test set gives the figures)
BATCH = 128
RESULTS = ROOT / "benchmarks" / "results"


def labelled_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """The few-labels regime's labelled images: a seeded choice of round(fraction·n) of n, sorted."""
    return np.sort(np.random.default_rng(seed).choice(n, max(1, round(n * fraction)), replace=False))


def few_label_data(seed: int, fraction: float, folder: Path) -> tuple[TrainData, Path, int]:
    """The labelled subset as TrainData (shift-2 loader seeded by ``seed``, validation held out as
    usual), and the other training images written as an unlabeled ``.npz`` (the transfer set) with
    their number."""
    full = load_fashion_mnist("train")
    cut = len(full) - FASHION_MNIST_VAL_SIZE
    keep = labelled_indices(cut, fraction, seed)
    rest = np.setdiff1d(np.arange(cut), keep)
    transfer = folder / f"unlabeled-seed{seed}.npz"
    np.savez(transfer, input=full.x[rest])  # no "y": DATA without labels
    data = TrainData(f"Fashion-MNIST train, {len(keep):,} labelled (seed {seed})",
                     ArrayLoader(full.x[keep], full.y[keep], batch_size=BATCH, shuffle=True, shift_pixels=2, seed=seed),
                     ArrayLoader(full.x[cut:cut + STUDY_VAL], full.y[cut:cut + STUDY_VAL], batch_size=1000),
                     preprocess=FASHION_MNIST_PREPROCESS)
    return data, transfer, len(rest)


def study_job(job: dict) -> dict:
    """One training run of the study (its own process under --jobs): the row with its test accuracy."""
    torch.set_num_threads(1)
    regime, seed, arm, epochs = job["regime"], job["seed"], job["arm"], job["epochs"]
    torch.manual_seed(seed)  # both arms of a seed start from the same weights
    np.random.seed(seed)
    student = FashionCNN(widths=tuple(job["student"]["widths"]), hidden=job["student"]["hidden"])
    training = {"lr": 3e-3, "schedule": "onecycle", "restore_best": False}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-kd-study-") as tmp:
        transfer, transfer_batches = None, 0
        if regime == "few":
            data, transfer, unlabeled = few_label_data(seed, job["fraction"], Path(tmp))
            transfer_batches = math.ceil(unlabeled / BATCH)
        else:
            data = train_data("example:fashion-mnist", seed=seed, val_limit=STUDY_VAL)
        if arm == "kd":
            config = DistillConfig(**job["kd"], transfer=str(transfer) if transfer else None,
                                   training=FinetuneConfig(epochs=epochs, **training))
            student, report = distill(student, build(), data, config)
            steps = epochs * (len(data.train) + transfer_batches)
        else:
            # few labels: as many optimizer steps as the KD run, over the labelled images alone
            plain_epochs = math.ceil(epochs * (1 + transfer_batches / len(data.train))) if transfer else epochs
            student, report = finetune(student, data, FinetuneConfig(epochs=plain_epochs, **training))
            steps = plain_epochs * len(data.train)
    history = [h for h in report.details["history"] if "val_accuracy" in h]
    test = load_fashion_mnist("test")
    return {**job, "labelled_images": len(data.train.x), "steps": steps,
            "training_epochs": len(history),
            "val_accuracy_last": history[-1]["val_accuracy"] if history else None,
            "val_accuracy_best": max(h["val_accuracy"] for h in history) if history else None,
            "test_accuracy": evaluate(student, ArrayLoader(test.x, test.y, batch_size=1000)),
            "seconds": round(time.perf_counter() - start, 1)}


def study_jobs(seeds: list[int], regimes: list[str], epochs: int, fraction: float) -> list[dict]:
    """Seed by seed (a study cut short still has whole pairs), the key regime first."""
    return [{"regime": r, "seed": s, "arm": arm, "epochs": epochs, "fraction": fraction if r == "few" else 1.0,
             "student": {"widths": list(STUDY_STUDENT["widths"]), "hidden": STUDY_STUDENT["hidden"]},
             "kd": dict(STUDY_KD)}
            for s in seeds for r in regimes for arm in ("kd", "plain")]


def _job_key(row: dict) -> str:
    return json.dumps({k: row[k] for k in ("regime", "seed", "arm", "epochs", "fraction", "student", "kd")},
                      sort_keys=True)


def summarize(rows: list[dict], teacher_accuracy: float) -> list[dict]:
    """Per regime: the paired KD − plain gain (pt) over the seeds that have both arms, and its target."""
    out = []
    for regime in dict.fromkeys(r["regime"] for r in rows):
        by_seed: dict[int, dict[str, float]] = {}
        for r in rows:
            if r["regime"] == regime:
                by_seed.setdefault(r["seed"], {})[r["arm"]] = r["test_accuracy"]
        seeds = sorted(s for s, arms in by_seed.items() if {"kd", "plain"} <= set(arms))
        kd = [by_seed[s]["kd"] for s in seeds]
        plain = [by_seed[s]["plain"] for s in seeds]
        gain = paired(kd, plain, scale=100)
        limit = STUDY_TARGETS.get(regime, 0.0)
        example = next(r for r in rows if r["regime"] == regime)
        out.append({"regime": regime, "fraction": example["fraction"], "labelled_images": example["labelled_images"],
                    "seeds": seeds, "kd_accuracy": kd, "plain_accuracy": plain,
                    "kd_mean_pct": round(100 * sum(kd) / len(kd), 2) if kd else None,
                    "plain_mean_pct": round(100 * sum(plain) / len(plain), 2) if plain else None,
                    "teacher_accuracy": teacher_accuracy,
                    "gain_pt": gain.to_dict() if seeds else None,
                    "target": {"name": "KD gain over the same student without KD (paired, 95 % CI)",
                               "limit_pt": limit, "rule": "whole CI >= limit",
                               "met": target_met(gain.ci_low, gain.ci_high, limit, at_least=True) if seeds else False},
                    "summary": gain.text(" pt") if seeds else "no complete pair"})
    return out


def run_study(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in args.seeds.split(",")]
    regimes = args.regimes.split(",")
    unknown = set(regimes) - {"few", "full"}
    if unknown:
        raise SystemExit(f"unknown regimes {sorted(unknown)}: use few, full")
    log = Path(args.log or RESULTS / "kd_study.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if args.resume and log.is_file() else []
    jobs = study_jobs(seeds, regimes, args.epochs, args.label_fraction)
    wanted = {_job_key(j) for j in jobs}
    rows = [r for r in done if _job_key(r) in wanted]
    have = {_job_key(r) for r in rows}
    todo = [j for j in jobs if _job_key(j) not in have]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already in {log}", flush=True)
    started = time.perf_counter()

    def keep(row: dict) -> None:
        rows.append(row)
        with open(log, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in ("regime", "seed", "arm", "test_accuracy", "steps", "seconds")}),
              flush=True)

    if args.jobs > 1 and len(todo) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for row in pool.imap_unordered(study_job, todo, chunksize=1):
                keep(row)
    else:
        for job in todo:
            keep(study_job(job))
    teacher = build()
    test = load_fashion_mnist("test")
    teacher_accuracy = evaluate(teacher, ArrayLoader(test.x, test.y, batch_size=1000))
    result = {"schema_version": 1, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/kd_sweep.py " + " ".join(sys.argv[1:]),
              "teacher": "bundled example CNN (example:fashion-cnn)", "teacher_accuracy": teacher_accuracy,
              "student_params": sum(p.numel() for p in FashionCNN(**STUDY_STUDENT).parameters()),
              "teacher_params": sum(p.numel() for p in teacher.parameters()),
              "test_images": len(test), "seconds": round(time.perf_counter() - started, 1),
              "regimes": summarize(rows, teacher_accuracy), "rows": rows}
    stamp(result, "rows", "regimes")
    out = Path(args.out or RESULTS / "kd_study.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    for r in result["regimes"]:
        print(f"{r['regime']}: KD {r['kd_mean_pct']} % vs plain {r['plain_mean_pct']} % (teacher "
              f"{100 * teacher_accuracy:.2f} %): gain {r['summary']}; target >= +{r['target']['limit_pt']} pt: "
              f"{'met' if r['target']['met'] else 'MISSED'}", flush=True)
    print(f"host: {result['host_kind']['label']}; wrote {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--teacher-stats", action="store_true")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--teacher", help="a state_dict for FashionCNN() to use instead of the bundled weights")
    parser.add_argument("--student", help='the student\'s FashionCNN shape as JSON, e.g. \'{"widths": [16, 32, 32], '
                        '"hidden": 32}\' (default: the benchmark\'s, {"widths": [8, 16, 32], "hidden": 60})')
    parser.add_argument("--log")
    parser.add_argument("--study", action="store_true", help="the paired KD study (few labels, full labels)")
    parser.add_argument("--regimes", default="few,full", help="--study: few, full, or both")
    parser.add_argument("--label-fraction", type=float, default=0.05, help="--study: labelled share in 'few'")
    parser.add_argument("--jobs", type=int, default=1, help="--study: training runs in parallel (one thread each)")
    parser.add_argument("--resume", action="store_true", help="--study: skip the runs already in --log")
    parser.add_argument("--out", help="--study: the JSON (default benchmarks/results/kd_study.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.study:
        if not 0 < args.label_fraction < 1:
            parser.error("--label-fraction must be between 0 and 1")
        return run_study(args)
    shape = None
    if args.student:
        given = json.loads(args.student)
        shape = {"widths": tuple(given.get("widths", STUDENT["widths"])),
                 "hidden": int(given.get("hidden", STUDENT["hidden"]))}
        params = sum(p.numel() for p in FashionCNN(**shape).parameters())
        if params * 4 > sum(p.numel() for p in build(pretrained=False).parameters()):
            print(f"warning: the student has {params:,} params, over ¼ of the teacher's", file=sys.stderr)
    if args.teacher_stats:
        for row in teacher_stats(args.teacher):
            print(json.dumps(row), flush=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        for variant in args.variant:
            line = json.dumps(run(variant, seed, args.epochs, args.teacher, shape))
            print(line, flush=True)
            if args.log:
                with open(args.log, "a") as fh:
                    fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
