"""Top-1 / top-5 accuracy on an ImageFolder tree, with per-class accuracy."""

from __future__ import annotations

import csv
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import ImageFolder


@dataclass
class Evaluation:
    """Accuracy over the images that could be read; `errors` lists the others by file."""

    top1: float
    top5: float
    count: int
    classes: list
    per_class: list = field(default_factory=list)  # (class, images, top-1 accuracy)
    errors: list = field(default_factory=list)     # (path, message)

    def __str__(self):
        text = f"top-1 {self.top1:.2%}  top-5 {self.top5:.2%}  on {self.count} images, {len(self.classes)} classes"
        if self.errors:
            text += f"; {len(self.errors)} unreadable file(s) left out"
        return text

    def write_csv(self, path) -> Path:
        """Per-class accuracy to `path` (written to a temporary file, then renamed)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "images", "top1"])
            writer.writerows([(name, count, f"{accuracy:.6f}") for name, count, accuracy in self.per_class])
        os.replace(temporary, path)
        return path


def evaluate(classifier, root, *, label_map=None, workers: int = 2, progress: bool = True) -> Evaluation:
    """Evaluate `classifier` (a `predict.Classifier`) on the ImageFolder tree at `root`.

    Folder `i` (in sorted order) is label `i` of the network, unless `label_map` maps
    folder names to output indices (e.g. ImageNet WordNet ids for a subset of classes).
    Images are decoded and preprocessed by `workers` threads while the network runs.
    """
    from tqdm.auto import tqdm

    folder = ImageFolder.scan(root)
    targets = [label_map[c] if label_map else i for i, c in enumerate(folder.classes)]
    hits1, hits5, seen, errors = [], [], [], []
    batch_size = classifier.batch_size

    def load(sample):
        path, label = sample
        image, error = classifier.try_prepare(path)
        return image, label, (str(path), error) if error else None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(folder), unit="img", desc="evaluate", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(folder), batch_size):
            loaded = list(pool.map(load, folder.samples[start:start + batch_size]))
            errors += [error for _, _, error in loaded if error]
            good = [(image, label) for image, label, error in loaded if not error]
            if good:
                probabilities = classifier.probabilities(np.stack([image for image, _ in good]))
                top5 = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
                for (_, label), row in zip(good, top5):
                    target = targets[label]
                    hits1.append(row[0] == target)
                    hits5.append(target in row)
                    seen.append(label)
            bar.update(len(loaded))
    seen, hits1 = np.array(seen, dtype=int), np.array(hits1, dtype=bool)
    per_class = [(name, int((seen == i).sum()), float(hits1[seen == i].mean()) if (seen == i).any() else 0.0)
                 for i, name in enumerate(folder.classes)]
    for path, message in errors:
        print(f"network_expansion: skipped unreadable image: {message}", file=sys.stderr)
    count = len(seen)
    return Evaluation(top1=float(hits1.mean()) if count else 0.0, top5=float(np.mean(hits5)) if count else 0.0,
                      count=count, classes=folder.classes, per_class=per_class, errors=errors)
