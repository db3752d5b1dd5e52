"""The training input pipeline, in the same run: FolderData's C++ pipeline against
FolderData before it (a version of the package from before 2026-12-06: PIL decoding in a
threaded GeneratorDataset) and torchvision's ImageFolder + DataLoader.

    .venv/bin/python benchmarks/input_pipeline.py [--images 1024] [--batch-size 128] [--workers 2 4]
        [--rounds 4] [--baseline OTHER/src] [--peer-python .venv-peer/bin/python] [--data DIR]

What each side does per epoch, on the same JPEG files (generated from scikit-image's photos
at ImageNet's sizes, 4 classes, unless --data names an ImageFolder tree): shuffle, decode,
random resized crop to 224 (5% to 100% of the area), flip, normalise, CHW, batches of 128;
every batch is taken out of the pipeline as the Trainer takes it. The package's sides build
one `mindspore.dataset` pipeline an epoch, as the Trainer does (its start-up counts);
torchvision keeps its workers between epochs (`persistent_workers=True`). "+ mixup" is the
C++ pipeline with the recipe's label smoothing and mixup/cutmix made in the pipeline's
workers (`recipe.BatchTargets`), as a run with --mixup/--cutmix trains.

Each side runs in a worker process of its own (benchmarks/turns.py) and they take turns,
one epoch each per round; the first round is a warm-up and is not counted. Prints images/s
(median over the rounds), each side as a multiple of the PIL pipeline's, the slowest wait
after an epoch's last batch, and peak memory.

A second table: what the thread that feeds the device spends on one batch of 128 x 224 px
before the step, the old way (`ms.Tensor(array)`: a copy; mixup/cutmix in NumPy) and the
new (a pipeline's Tensor handed on as it is; `ms.from_numpy` for arrays: no copy).

torchvision is not a dependency: put it in a venv of its own (see train_step.py) and name
its python with --peer-python.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from turns import Worker, serve  # benchmarks/turns.py

SIZE = 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_images(root: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEGs (quality 90) of ImageNet's sizes (shorter side 333 to 500) cut from
    scikit-image's photos, in 4 class folders."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = Image.fromarray(np.ascontiguousarray(photos[i % len(photos)][..., :3]))
        w, h = photo.size
        box_w, box_h = int(w * rng.uniform(0.6, 1)), int(h * rng.uniform(0.6, 1))
        left, top = int(rng.integers(0, w - box_w + 1)), int(rng.integers(0, h - box_h + 1))
        short = int(rng.integers(333, 501))
        scale = short / min(box_w, box_h)
        picture = photo.crop((left, top, left + box_w, top + box_h)).resize(
            (int(box_w * scale), int(box_h * scale)), Image.BILINEAR)
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"{i:05d}.jpg", quality=90)
    return root


# -- workers ---------------------------------------------------------------------------------

def package_worker(kind: str, root: str, batch_size: int, workers: int) -> None:
    import mindspore as ms
    import numpy as np

    from network_expansion.config import TrainConfig
    from network_expansion.datasets import FolderData
    from network_expansion.preprocess import DataConfig
    from network_expansion.recipe import soft_targets

    config = DataConfig(input_size=SIZE, resize_size=256, interpolation="bilinear", mean=MEAN, std=STD)
    data = FolderData(root, config, batch_size, workers=workers)
    recipe = TrainConfig(mixup=0.8, cutmix=1.0)
    epoch = 0

    def answer(command):
        nonlocal epoch
        if command["do"] == "host":
            return host_costs(ms, np, soft_targets, recipe)
        options = {}
        if kind == "mixup":
            from network_expansion.recipe import BatchTargets
            options["mix"] = BatchTargets(4, recipe, epoch)
        started, images, last = time.perf_counter(), 0, None
        for batch in data.batches(epoch, 0, **options):
            images += len(batch[-1])
            last = time.perf_counter()
        epoch += 1
        ended = time.perf_counter()
        return {"seconds": ended - started, "images": images, "tail": ended - last}

    serve(answer)


def host_costs(ms, np, soft_targets, recipe) -> dict:
    """Milliseconds the feeding thread spends on a batch of 128 x 224 px: median of 15."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((128, 3, SIZE, SIZE)).astype(np.float32)
    labels = rng.integers(0, 1000, 128).astype(np.int32)
    pipeline_tensor = ms.Tensor(images)

    def median_ms(function):
        times = []
        for _ in range(15):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    def old():
        inputs, targets = soft_targets(labels, 1000, recipe, rng, images)
        ms.Tensor(inputs), ms.Tensor(targets)

    def new_tensor():
        from network_expansion.graphs import as_input
        as_input(pipeline_tensor), as_input(pipeline_tensor)

    def new_array():
        from network_expansion.graphs import as_input
        as_input(images), as_input(labels)

    return {"old: ms.Tensor copy + mixup/cutmix on the thread": median_ms(old),
            "new: a pipeline's Tensor (C++ pipeline)": median_ms(new_tensor),
            "new: from_numpy of an array (ArrayData)": median_ms(new_array)}


def torchvision_worker(root: str, batch_size: int, workers: int) -> None:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    recipe = transforms.Compose([transforms.RandomResizedCrop(SIZE, scale=(0.05, 1.0)), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    loader = DataLoader(datasets.ImageFolder(root, recipe), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=True)

    def answer(command):
        started, images, last = time.perf_counter(), 0, None
        for _, labels in loader:
            images += len(labels)
            last = time.perf_counter()
        ended = time.perf_counter()
        return {"seconds": ended - started, "images": images, "tail": ended - last}

    serve(answer)


# -- the coordinator ---------------------------------------------------------------------------

def race(root: Path, batch_size: int, workers: int, rounds: int, peer_python: str | None,
         baseline: str | None) -> list:
    script = str(Path(__file__).resolve())

    def worker(kind, name, source=None, python=sys.executable):
        return Worker([python, script, "--worker", kind, str(root), str(batch_size), str(workers)], name, source)

    sides = {}
    if baseline:
        sides["FolderData before (PIL, threaded GeneratorDataset)"] = worker("before", "before", baseline)
    sides["FolderData, C++"] = worker("cpp", "cpp")
    sides["FolderData, C++ + mixup/cutmix"] = worker("mixup", "mixup")
    if peer_python:
        sides["torchvision ImageFolder + DataLoader"] = worker("torchvision", "torchvision", python=peer_python)
    results = {name: [] for name in sides}
    for round_ in range(rounds + 1):
        for name, worker in sides.items():
            answer = worker.ask({"do": "epoch"})
            if round_:  # round 0 warms up (imports, first pipeline, page cache)
                results[name].append(answer)
    host = sides["FolderData, C++"].ask({"do": "host"})
    rows = []
    for name, worker in sides.items():
        per_second = statistics.median(r["images"] / r["seconds"] for r in results[name])
        rows.append((name, workers, per_second, max(r["tail"] for r in results[name]),
                     worker.ask({"do": "memory"})["peak_mib"]))
        worker.close()
    return rows, host


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({2, os.cpu_count() or 2}))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--peer-python", help="a python with torch and torchvision")
    parser.add_argument("--baseline", help="the src folder of a version of the package to race as 'before'")
    parser.add_argument("--data", help="an ImageFolder tree to read instead of generated JPEGs")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, root, batch_size, workers = args.worker
        if kind == "torchvision":
            torchvision_worker(root, int(batch_size), int(workers))
        else:
            package_worker(kind, root, int(batch_size), int(workers))
        return 0
    with tempfile.TemporaryDirectory(prefix="input-pipeline-") as scratch:
        root = Path(args.data) if args.data else make_images(Path(scratch) / "train", args.images)
        print(f"{sum(1 for _ in root.rglob('*.jpg'))} JPEGs in {root}, batches of {args.batch_size} at {SIZE} px, "
              f"{args.rounds} rounds (after one to warm up), on {os.cpu_count()} cores\n")
        print(f"| pipeline | workers | images/s | x {'before' if args.baseline else 'C++'} | slowest wait after the "
              f"last batch, s | peak MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        host = None
        for workers in args.workers:
            rows, host = race(root, args.batch_size, workers, args.rounds, args.peer_python, args.baseline)
            before = rows[0][2]
            for name, count, per_second, tail, peak in rows:
                print(f"| {name} | {count} | {per_second:.0f} | {per_second / before:.2f}x | {tail:.2f} | {peak:.0f} |",
                      flush=True)
        print("\n| the feeding thread, one batch of 128 x 224 px | ms (median of 15) |")
        print("|---|---:|")
        for name, milliseconds in host.items():
            print(f"| {name} | {milliseconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
