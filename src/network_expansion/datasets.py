"""Datasets: ImageFolder trees (one sub-folder of images per class) and in-memory arrays.

`ImageFolder` indexes a tree the way `mindspore.dataset.ImageFolderDataset` does (class
folders in sorted order, labels 0, 1, ...), but keeps the file names, so that a damaged
image is reported by name and the other images still go through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError
from .images import load_image
from .preprocess import DataConfig, host_transforms, normalize_transforms

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif")


def image_files(folder) -> list:
    """The image files below `folder` (by suffix), sorted."""
    return sorted(path for path in Path(folder).rglob("*")
                  if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class ImageFolder:
    """The files of an ImageFolder tree: `samples` [(path, label)], `classes` [folder name]."""

    root: Path
    classes: list = field(default_factory=list)
    samples: list = field(default_factory=list)

    @classmethod
    def scan(cls, root) -> "ImageFolder":
        root = Path(root)
        if not root.is_dir():
            raise ImageError(f"{root}: no such folder; expected one sub-folder of images per class")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise ImageError(f"{root}: no class folders; expected {root}/<class name>/<image files>")
        samples = [(path, label) for label, name in enumerate(classes) for path in image_files(root / name)]
        if not samples:
            raise ImageError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
        return cls(root=root, classes=classes, samples=samples)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        """(RGB uint8 HWC image, label); a damaged file raises `ImageError` naming it."""
        path, label = self.samples[index]
        return load_image(path), np.int32(label)


def imagefolder_dataset(root, config: DataConfig, *, batch_size: int = 32, workers: int = 2,
                        shuffle: bool = False, drop_remainder: bool = False, augment=None,
                        num_shards=None, shard_id=None):
    """A batched `mindspore.dataset` pipeline of (image CHW float32, label int32).

    Decoding (with `load_image`) and the host transforms run in `workers` parallel
    workers. `augment`: transforms to run on the RGB uint8 image before the resize (e.g.
    random crops for training); `num_shards`/`shard_id` split it for data parallelism.
    `root` may also be an `ImageFolder` already scanned.
    """
    import mindspore.dataset as ds

    folder = root if isinstance(root, ImageFolder) else ImageFolder.scan(root)
    # Threads, not processes: decoding releases the GIL, and a signal to the process group
    # (Ctrl-C, a scheduler's SIGTERM) then reaches the trainer, which saves, instead of
    # killing worker processes under a pipeline that would then fail.
    dataset = ds.GeneratorDataset(folder, column_names=["image", "label"], shuffle=shuffle,
                                  num_parallel_workers=workers, num_shards=num_shards, shard_id=shard_id,
                                  python_multiprocessing=False)
    transforms = list(augment) + normalize_transforms(config) if augment else host_transforms(config)
    dataset = dataset.map(operations=transforms, input_columns="image", num_parallel_workers=workers)
    return dataset.batch(batch_size, drop_remainder=drop_remainder)
