"""Datasets: ImageFolder trees (one sub-folder of images per class) and in-memory arrays.

`ImageFolder` indexes a tree the way `mindspore.dataset.ImageFolderDataset` does (class
folders in sorted order, labels 0, 1, ...), but keeps the file names, so that a damaged
image is reported by name and the other images still go through.

The batch protocol the `Trainer` reads, which `ArrayData` (arrays in memory) and
`FolderData` (an ImageFolder tree through `mindspore.dataset`) follow:

* `batches(epoch, seed, start)`: the training batches of an epoch, `(images float32 NCHW,
  labels int32)`, from batch `start` on; the same (epoch, seed) gives the same batches, so a
  resumed run sees what the uninterrupted one saw; a short last batch may be dropped;
* `evaluation_batches()`: every sample once, in order, without augmentation;
* `len(data)` training batches per epoch, `batch_size`, `num_samples` (of this process's
  shard), `class_names` (or None), and `shard(size, rank)`, this process's share for
  data parallelism;
* `image_size` and `at_size(size, crops=None)`: the same data as images of another size (a
  schedule that grows the image size switches to it at the growth; below the final size it
  may ask for random resized crops, `TrainConfig.size_crops`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError, ImageError
from .images import load_image
from .preprocess import DataConfig, host_transforms, normalize_transforms
from .ranges import AREA_SHARE, POSITIVE

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


# -- batches for training (the protocol the Trainer reads) ------------------------------

class _Shardable:
    """What both kinds of training data share: a process's share of them."""

    num_shards, shard_id = 1, 0

    def shard(self, size: int, rank: int):
        """This data restricted to process `rank`'s share of `size` (a copy; this one is unchanged)."""
        shard = copy.copy(self)
        shard.num_shards, shard.shard_id = int(size), int(rank)
        return shard


def resize_matrix(size_in: int, size_out: int, start=0.0, length=None) -> np.ndarray:
    """`(size_out, size_in)` weights of a linear (triangle-filter) resize, antialiased when
    shrinking (the filter widened by the ratio, as PIL's BILINEAR does); rows sum to 1.
    `start`, `length`: resize only that window of the input (a crop; pixels, may be
    fractional); arrays of them give one matrix per window, `(windows, size_out, size_in)`."""
    start = np.asarray(start, dtype=np.float64)[..., None, None]
    length = np.asarray(size_in if length is None else length, dtype=np.float64)[..., None, None]
    scale = length / size_out
    support = np.maximum(scale, 1.0)
    centres = start + (np.arange(size_out)[:, None] + 0.5) * scale - 0.5
    distance = np.abs(np.arange(size_in)[None, :] - centres) / support
    weights = np.clip(1.0 - distance, 0.0, None)
    return (weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32)


def random_crops(rng, count: int, size_in: int, smallest: float, ratio=(3 / 4, 4 / 3)):
    """`count` random resized crops' windows of a `size_in` square, as torchvision's
    `RandomResizedCrop` draws them (area a uniform share of the image from `smallest` to 1,
    aspect ratio log-uniform in `ratio`, the window clipped to the image, placed uniformly):
    `(top, left, height, width)`, arrays of floats in pixels."""
    area = rng.uniform(smallest, 1.0, count) * size_in ** 2
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), count))
    height = np.minimum(np.sqrt(area / aspect), size_in)
    width = np.minimum(np.sqrt(area * aspect), size_in)
    top, left = rng.uniform(0, 1, count) * (size_in - height), rng.uniform(0, 1, count) * (size_in - width)
    return top, left, height, width


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """`(N, C, H, W)` float images resized to `(N, C, size, size)` (`resize_matrix` per axis)."""
    rows, columns = resize_matrix(images.shape[2], size), resize_matrix(images.shape[3], size)
    return np.ascontiguousarray(np.einsum("ih,nchw,jw->ncij", rows, images, columns, optimize=True), np.float32)


class ArrayData(_Shardable):
    """In-memory preprocessed images (N, 3, H, W) float32 and integer labels, in batches.

    The order of each epoch is drawn from (seed, epoch), so a resumed run sees the same
    batches. `flip` mirrors half of the training images at random. Training may drop a
    short last batch (`drop_remainder`); `evaluation_batches` always yields every sample.
    `class_names`: labels of the classes, saved with the trained weights. `at_size(size,
    crops=...)` gives random resized crops of the training images instead of whole ones.
    """

    crops = None          # training images: random resized crops of at least this share of the area
    crop_source = None    # ... cut from these images (the data as given)

    def __init__(self, images, labels, batch_size: int = 64, *, shuffle: bool = True, flip: bool = False,
                 drop_remainder: bool = True, num_shards: int = 1, shard_id: int = 0, class_names=None):
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int32)
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.batch_size, self.shuffle, self.flip = int(POSITIVE.check("batch_size", batch_size)), shuffle, flip
        self.drop_remainder = drop_remainder
        self.num_shards, self.shard_id = num_shards, shard_id
        self.class_names = tuple(class_names) if class_names is not None else None

    @property
    def num_samples(self) -> int:
        """Samples this process trains on (its shard)."""
        return len(self.labels) // self.num_shards

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def at_size(self, size: int, crops: float | None = None) -> "ArrayData":
        """These images resized to `size` x `size` (`resize_images`; a copy, this one is
        unchanged; the same object if they have that size and no crops are asked for).

        `crops`: train on random resized crops of the images as given instead (a share of
        the area from `crops` to 1, `random_crops`), drawn again every epoch; the
        evaluation still sees whole images. In a stage below the final image size this
        shows the objects as large, in pixels, as the final size will (FixRes)."""
        if size == self.image_size and crops is None:
            return self
        AREA_SHARE.check("crops", crops)
        source = self.crop_source if self.crop_source is not None else self.images
        resized = copy.copy(self)
        resized.images = resize_images(source, int(size)) if size != source.shape[-1] else source
        resized.crops, resized.crop_source = (crops, source) if crops is not None else (None, None)
        return resized

    def _indices(self, epoch: int, seed: int) -> np.ndarray:
        order = np.arange(len(self.labels))
        if self.shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(order)
        per_shard = len(order) // self.num_shards
        return order[self.shard_id * per_shard:(self.shard_id + 1) * per_shard]

    def __len__(self):
        count = self.num_samples
        return count // self.batch_size if self.drop_remainder else math.ceil(count / self.batch_size)

    def batches(self, epoch: int = 0, seed: int = 0, start: int = 0):
        indices = self._indices(epoch, seed)
        rng = np.random.default_rng([seed, epoch, 1])
        flips = rng.random(len(indices)) < 0.5
        if self.crops is not None:  # drawn for the whole epoch: a resume at batch `start` sees the same
            windows = random_crops(np.random.default_rng([seed, epoch, 2]), len(indices),
                                   self.crop_source.shape[-1], self.crops)
        for b in range(start, len(self)):
            batch = slice(b * self.batch_size, (b + 1) * self.batch_size)
            chosen = indices[batch]
            images = self.images[chosen] if self.crops is None else self._cropped(chosen, [w[batch] for w in windows])
            if self.flip:
                mirror = flips[batch]
                images = np.where(mirror[:, None, None, None], images[..., ::-1], images)
            yield np.ascontiguousarray(images), self.labels[chosen]

    def _cropped(self, chosen, windows) -> np.ndarray:
        top, left, height, width = windows
        source, size = self.crop_source[chosen], self.image_size
        rows = resize_matrix(source.shape[2], size, top, height)
        columns = resize_matrix(source.shape[3], size, left, width)
        return rows[:, None] @ source @ columns[:, None].transpose(0, 1, 3, 2)  # batched: 5x einsum's speed

    def evaluation_batches(self):
        """Every sample once, in order, unflipped and uncropped; the last batch may be short."""
        for start in range(0, len(self.labels), self.batch_size):
            yield self.images[start:start + self.batch_size], self.labels[start:start + self.batch_size]


class FolderData(_Shardable):
    """An ImageFolder tree through `mindspore.dataset` (parallel workers), in batches.

    `train=True` uses random resized crops and flips (the zoo's training recipe without
    AutoAugment) and drops a short last batch; otherwise the eval recipe (resize, center
    crop). `evaluation_batches` always yields every image with the eval recipe. The tree is
    scanned once; its folder names are the `class_names`.
    """

    def __init__(self, root, data_config, batch_size: int = 64, *, train: bool = True, workers: int = 2,
                 num_shards: int = 1, shard_id: int = 0):
        self.root, self.data_config, self.batch_size = root, data_config, int(POSITIVE.check("batch_size", batch_size))
        self.train, self.workers = train, workers
        self.num_shards, self.shard_id = num_shards, shard_id
        self.folder = ImageFolder.scan(root)
        self.class_names = tuple(self.folder.classes)

    @property
    def num_samples(self) -> int:
        """Images this process trains on (its shard)."""
        return len(self.folder) // self.num_shards

    @property
    def image_size(self) -> int:
        return self.data_config.input_size

    def at_size(self, size: int, crops: float | None = None) -> "FolderData":
        """This tree with crops of `size` (the eval resize at the same ratio; a copy).
        `crops` is accepted for the protocol: training here is random resized crops at
        every size already (from 5% of the area)."""
        if size == self.image_size:
            return self
        resized = copy.copy(self)
        config = self.data_config
        resized.data_config = dataclasses.replace(config, input_size=int(size),
                                                  resize_size=int(round(config.resize_size * size / config.input_size)))
        return resized

    def __len__(self):
        count = self.num_samples
        return count // self.batch_size if self.train else math.ceil(count / self.batch_size)

    def batches(self, epoch: int = 0, seed: int = 0, start: int = 0):
        import mindspore.dataset as ds
        import mindspore.dataset.vision as vision

        # mindspore.dataset draws from one process-wide seed: set it for this epoch's pipeline
        # (same epoch, same seed, same crops: exact resume), then give it back.
        previous = ds.config.get_seed()
        ds.config.set_seed(seed * 100_003 + epoch)
        try:
            augment = [vision.RandomResizedCrop(self.data_config.input_size, scale=(0.05, 1.0),
                                                ratio=(0.75, 1.333)), vision.RandomHorizontalFlip()] if self.train else None
            dataset = self._dataset(shuffle=self.train, drop_remainder=self.train, augment=augment,
                                    num_shards=self.num_shards if self.num_shards > 1 else None,
                                    shard_id=self.shard_id if self.num_shards > 1 else None)
            iterator = dataset.create_tuple_iterator(output_numpy=True)
        finally:
            ds.config.set_seed(previous)
        for b, (images, labels) in enumerate(iterator):
            if b >= start:
                yield images, labels.astype(np.int32)

    def evaluation_batches(self):
        """Every image once, in order, with the eval recipe; the last batch may be short."""
        iterator = self._dataset().create_tuple_iterator(output_numpy=True)
        for images, labels in iterator:
            yield images, labels.astype(np.int32)

    def _dataset(self, **options):
        return imagefolder_dataset(self.folder, self.data_config, batch_size=self.batch_size,
                                   workers=self.workers, **options)

