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
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.compress import DistillConfig, FinetuneConfig, distill, finetune  # noqa: E402
from edgekit.compress.measure import evaluate  # noqa: E402
from edgekit.data import load_fashion_mnist  # noqa: E402
from edgekit.datasets import ArrayLoader, train_data  # noqa: E402
from edgekit.examples.fashion_cnn import FashionCNN, build  # noqa: E402

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
    args = parser.parse_args()
    torch.set_num_threads(1)
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
