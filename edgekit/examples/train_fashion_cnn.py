"""Train the bundled example CNN on the full Fashion-MNIST training set and save its weights.

    python -m edgekit.examples.train_fashion_cnn --epochs 10

Prints the test accuracy (the figure recorded in the README) and writes fashion_cnn.pt and
fashion_cnn.json (accuracy, epochs, seed) beside this file.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from edgekit.data import load_fashion_mnist
from edgekit.examples.fashion_cnn import WEIGHTS, FashionCNN
from edgekit.outputs import write_json_atomic


def random_shift(x: torch.Tensor, pixels: int = 2) -> torch.Tensor:
    dx, dy = np.random.randint(-pixels, pixels + 1, size=2)
    return torch.roll(x, shifts=(int(dy), int(dx)), dims=(2, 3))


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        logits = model(torch.from_numpy(x[i : i + batch]))
        correct += int((logits.argmax(1).numpy() == y[i : i + batch]).sum())
    return correct / len(y)


def train(epochs: int, seed: int, batch: int = 128, lr: float = 3e-3) -> tuple[FashionCNN, float]:
    torch.manual_seed(seed)
    np.random.seed(seed)
    train_set, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
    model = FashionCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(train_set) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    x_all, y_all = torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y_all))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = nn.functional.cross_entropy(model(random_shift(x_all[idx])), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{epochs}: test accuracy {accuracy(model, test_set.x, test_set.y):.4f}", flush=True)
    return model.eval(), accuracy(model, test_set.x, test_set.y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    model, acc = train(args.epochs, args.seed)
    torch.save(model.state_dict(), WEIGHTS)
    info = {"test_accuracy": acc, "epochs": args.epochs, "seed": args.seed,
            "seconds": round(time.perf_counter() - start, 1)}
    write_json_atomic(WEIGHTS.with_suffix(".json"), info)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
