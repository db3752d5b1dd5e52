"""Top-1 / top-5 accuracy on an ImageFolder tree, with per-class accuracy."""

from __future__ import annotations

import csv
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .datasets import ImageFolder, imagefolder_dataset, readable_batches
from .encoded import EncodedFiles
from .errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Accuracy over the images that could be read; `errors` lists the others by file."""

    top1: float
    top5: float | None  # None for a network of 5 classes or fewer, where every label is in its top 5
    count: int
    classes: list
    per_class: list = field(default_factory=list)  # (class, images, top-1 accuracy)
    errors: list = field(default_factory=list)     # (path, message)

    def __str__(self):
        top5 = f"  top-5 {self.top5:.2%}" if self.top5 is not None else ""
        text = f"top-1 {self.top1:.2%}{top5}  on {self.count} images, {len(self.classes)} classes"
        if self.errors:
            text += f"; {len(self.errors)} unreadable file(s) left out"
        return text

    def write_csv(self, path) -> Path:
        """Per-class accuracy to `path` (written to a temporary file, then renamed)."""
        path = Path(path)
        with atomic_write(path) as temporary, open(temporary, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "images", "top1"])
            writer.writerows([(name, count, f"{accuracy:.6f}") for name, count, accuracy in self.per_class])
        return path


def evaluate(classifier, root, *, label_map=None, workers: int | None = None, progress: bool = True) -> Evaluation:
    """Evaluate `classifier` (a `predict.Classifier`) on the ImageFolder tree at `root`.

    Each class folder is scored against the output it names (`output_indices`): a subset
    of ImageNet's WordNet-id folders is scored right. `label_map` (folder name -> output
    index, or the path of such a file, see `read_label_map`) overrides that. Images are
    decoded and preprocessed by MindSpore's C++ input pipeline (`workers` threads, one per
    core by default; the classifier's eval recipe) while the network runs; an unreadable
    file is left out, named.
    """
    from tqdm.auto import tqdm

    folder = ImageFolder.scan(root)
    files = EncodedFiles(folder.samples, replace=False)
    if isinstance(label_map, (str, Path)):
        label_map = read_label_map(label_map)
    targets = output_indices(folder.classes, classifier.class_keys, classifier.num_labels, label_map)
    hits1, hits5, seen = [], [], []
    dataset = imagefolder_dataset(files, classifier.data_config, batch_size=classifier.batch_size, workers=workers)
    with tqdm(total=len(folder), unit="img", desc="evaluate", disable=not progress, file=sys.stderr) as bar:
        for images, labels in readable_batches(dataset):
            probabilities = classifier.probabilities(images)
            top5 = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
            for label, row in zip(labels, top5):
                target = targets[label]
                hits1.append(row[0] == target)
                hits5.append(target in row)
                seen.append(label)
            bar.update(len(labels))
    errors = sorted(files.bad.items())
    seen, hits1 = np.array(seen, dtype=int), np.array(hits1, dtype=bool)
    per_class = [(name, int((seen == i).sum()), float(hits1[seen == i].mean()) if (seen == i).any() else 0.0)
                 for i, name in enumerate(folder.classes)]
    count = len(seen)
    top5 = (float(np.mean(hits5)) if count else 0.0) if classifier.num_labels > 5 else None
    return Evaluation(top1=float(hits1.mean()) if count else 0.0, top5=top5,
                      count=count, classes=folder.classes, per_class=per_class, errors=errors)


def output_indices(folders, class_keys, num_labels: int, label_map=None) -> list:
    """The network output each class folder (sorted names) is scored against.

    1. `label_map` {folder name: output index}, when given, for every folder;
    2. else, where every folder name is one of the network's `class_keys` (ImageNet's
       WordNet ids, or the class names a model was trained with), that class's output;
    3. else, with exactly one folder per output, the sorted position (ImageFolder's rule);
    4. else `DataError`: a guess would score the wrong classes without a word.
    """
    if label_map is not None:
        missing = [f for f in folders if f not in label_map]
        wrong = {f: i for f, i in label_map.items()
                 if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_labels}
        if missing or wrong:
            raise DataError("the label map " + "; ".join(
                ([f"has no entry for folder(s) {_some(missing)}"] if missing else [])
                + ([f"gives outputs outside 0..{num_labels - 1}: {_some(wrong)}"] if wrong else [])))
        return [label_map[f] for f in folders]
    if class_keys is not None:
        positions = {key: i for i, key in enumerate(class_keys)}
        unknown = [f for f in folders if f not in positions]
        if not unknown:
            return [positions[f] for f in folders]
        if len(unknown) < len(folders):
            raise DataError(f"{len(unknown)} of {len(folders)} class folders are not classes of the network: "
                            f"{_some(unknown)} (expected names such as {_some(class_keys[:3])}); rename them, "
                            f"or pass a label map (--label-map FILE)")
    if len(folders) == num_labels:
        return list(range(len(folders)))
    expected = f"class names such as {_some(class_keys[:3])}" if class_keys is not None else "no class names"
    raise DataError(
        f"{len(folders)} class folders ({_some(folders)}) cannot be matched to the network's {num_labels} "
        f"outputs: the network knows {expected}, and only a tree with one folder per output is scored by "
        f"sorted position. Name the folders by class, or pass a label map (label_map=, --label-map FILE: "
        f"a JSON object or lines 'folder<TAB>index')")


def read_label_map(path) -> dict:
    """{folder name: output index} from a JSON object or lines `folder<TAB or space>index`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"label map {path}: cannot be read ({error.strerror or error})") from None
    if text.lstrip().startswith("{"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"label map {path}: not valid JSON ({error})") from None
        if not isinstance(mapping, dict):
            raise DataError(f"label map {path}: expected a JSON object of folder name -> output index")
        return mapping
    mapping = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"label map {path}, line {number}: expected 'folder<TAB>index', got {line!r}")
        mapping[parts[0].strip()] = int(parts[1])
    return mapping


def read_class_names(path) -> list:
    """One class name per line (blank lines and '#' comments skipped), in output order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"class names {path}: cannot be read ({getattr(error, 'strerror', None) or error})") from None
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _some(items, count: int = 3) -> str:
    items = list(items.items() if isinstance(items, dict) else items)
    shown = ", ".join(repr(i) if not isinstance(i, tuple) else f"{i[0]!r}: {i[1]!r}" for i in items[:count])
    return shown + (f" and {len(items) - count} more" if len(items) > count else "")
