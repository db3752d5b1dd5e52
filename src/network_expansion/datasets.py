"""Datasets: ImageFolder trees (one sub-folder of images per class) and in-memory arrays.

`ImageFolder` indexes a tree the way `mindspore.dataset.ImageFolderDataset` does (class
folders in sorted order, labels 0, 1, ...), but keeps the file names, so that a damaged
image is reported by name and the other images still go through.

The batch protocol the `Trainer` reads, which `ArrayData` (arrays in memory) and
`FolderData` (an ImageFolder tree through `mindspore.dataset`) follow:

* `batches(epoch, seed, start, mix=None)`: the training batches of an epoch, `(images
  float32 NCHW, labels int32)`, from batch `start` on; the same (epoch, seed) gives the same
  batches, so a resumed run sees what the uninterrupted one saw; a short last batch may be
  dropped. With `mix` (`recipe.BatchTargets`: `(images, labels, batch index) -> (inputs,
  soft targets)`, label smoothing and mixup/cutmix) each batch is `(inputs, targets,
  labels)`, mixed where the data are made (`FolderData`: in the pipeline's workers, not on
  the thread that feeds the device); arrays or MindSpore Tensors;
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

from .encoded import SKIPPED, EncodedFiles
from .errors import ConfigError, DataError, ImageError, printable
from .preprocess import DataConfig, host_transforms, normalize_transforms
from .ranges import AREA_SHARE, POSITIVE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif")


def default_workers() -> int:
    """The input pipeline's decoding threads by default: one per core this process may use,
    at most 16 (MindSpore's own default is 8 whatever the machine)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 2
    return max(1, min(16, cores))


def checked_workers(workers) -> int:
    """`workers` (None: `default_workers()`) as MindSpore's pipeline takes them: 1 to the
    machine's core count (`ConfigError` beyond, instead of MindSpore's traceback)."""
    import os

    if workers is None:
        return default_workers()
    POSITIVE.check("workers", workers)
    cores = os.cpu_count() or 1
    if workers > cores:
        raise ConfigError(f"workers={workers}: MindSpore's input pipeline takes 1 to {cores} threads on this "
                          f"machine (its cores)")
    return int(workers)


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


def imagefolder_dataset(root, config: DataConfig, *, batch_size: int = 32, workers: int | None = None,
                        shuffle: bool = False, drop_remainder: bool = False, decode=None, augment=None,
                        num_shards=None, shard_id=None, mix=None):
    """A batched `mindspore.dataset` pipeline of (image CHW float32, label int32) from an
    ImageFolder tree (a folder, an `ImageFolder` scanned, or its `encoded.EncodedFiles`).

    The files are read by one thread (`EncodedFiles`: headers checked, what the C++ decoder
    would get wrong decoded by PIL, a bad file replaced by the next and named) and decoded
    by MindSpore's C++ operations in `workers` threads: `decode`, operations that decode and
    augment at once (`RandomCropDecodeResize`, then a flip, say); else `Decode`, then
    `augment` (operations on the RGB uint8 image) or, without either, the eval recipe.
    `workers`: `default_workers()` if None.
    `num_shards`/`shard_id` split it for data parallelism; `mix`: see `batched`.
    """
    import mindspore.dataset as ds
    import mindspore.dataset.vision as vision

    workers = checked_workers(workers)
    if isinstance(root, EncodedFiles):
        files = root
    else:
        files = EncodedFiles((root if isinstance(root, ImageFolder) else ImageFolder.scan(root)).samples)
    # One thread reads: it only reads files. A GeneratorDataset of several threads made
    # every pipeline after the first wait 5.4 s for its first batch (MindSpore 2.10: its
    # worker threads sit in a 5 s put timeout at the end of an epoch), the stall a run saw.
    dataset = ds.GeneratorDataset(files, column_names=["image", "label"], shuffle=shuffle, num_parallel_workers=1,
                                  python_multiprocessing=False, num_shards=num_shards, shard_id=shard_id)
    if decode is not None:
        transforms = list(decode) + normalize_transforms(config)
    elif augment is not None:
        transforms = [vision.Decode()] + list(augment) + normalize_transforms(config)
    else:
        transforms = [vision.Decode()] + host_transforms(config)
    dataset = dataset.map(operations=transforms, input_columns="image", num_parallel_workers=workers)
    return batched(dataset, batch_size, drop_remainder, workers, mix)


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
        given = np.asarray(labels)
        if given.dtype.kind not in "iu" and not (given.dtype.kind == "f" and np.all(given == np.round(given))):
            raise DataError(f"labels of {given.dtype} {'with fractions ' if given.dtype.kind == 'f' else ''}"
                            f"(e.g. {given.ravel()[:3].tolist()}): expected whole class indices 0, 1, ...")
        self.labels = given.astype(np.int32)
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

    def batches(self, epoch: int = 0, seed: int = 0, start: int = 0, mix=None):
        batches = self._batches(epoch, seed, start)
        return batches if mix is None else with_targets(batches, start, mix)

    def _batches(self, epoch: int, seed: int, start: int):
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

    MindSpore's C++ operations decode, crop and resize (`RandomCropDecodeResize` decodes
    only a JPEG's crop) after the files' bytes are read and their headers checked
    (`imagefolder_dataset`); training batches come as MindSpore Tensors, without a host copy.
    `workers`: its decoding threads (`default_workers()`: one per core, at most 16).
    """

    def __init__(self, root, data_config, batch_size: int = 64, *, train: bool = True, workers: int | None = None,
                 num_shards: int = 1, shard_id: int = 0):
        self.root, self.data_config, self.batch_size = root, data_config, int(POSITIVE.check("batch_size", batch_size))
        self.train = train
        self.workers = checked_workers(workers)
        self.num_shards, self.shard_id = num_shards, shard_id
        self.folder = ImageFolder.scan(root)
        # shared by every epoch: a bad file is named once (and left out of an evaluation)
        self.files = EncodedFiles(self.folder.samples)
        self.evaluated_files = self.files.leaving_out()
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

    def batches(self, epoch: int = 0, seed: int = 0, start: int = 0, mix=None):
        """An epoch's batches from batch `start` on (see the protocol). The crops and flips
        are drawn from (seed, epoch): a resumed epoch runs the batches before `start` through
        the pipeline again, unused, and so sees the same crops from there on."""
        import mindspore.dataset as ds
        import mindspore.dataset.vision as vision

        # mindspore.dataset draws from one process-wide seed: set it for this epoch's pipeline
        # (same epoch, same seed, same crops: exact resume), then give it back.
        previous = ds.config.get_seed()
        ds.config.set_seed(seed * 100_003 + epoch)
        try:
            decode = [vision.RandomCropDecodeResize(self.data_config.input_size, scale=(0.05, 1.0),
                                                    ratio=(0.75, 1.333)), vision.RandomHorizontalFlip()]
            shards = dict(num_shards=self.num_shards, shard_id=self.shard_id) if self.num_shards > 1 else {}
            dataset = imagefolder_dataset(self.files, self.data_config, batch_size=self.batch_size,
                                          workers=self.workers, shuffle=self.train, drop_remainder=self.train,
                                          decode=decode if self.train else None, mix=mix, **shards)
            iterator = dataset.create_tuple_iterator(output_numpy=False)
        finally:
            ds.config.set_seed(previous)
        for b, batch in enumerate(_stopping(iterator)):
            if b >= start:
                yield (*batch[:-1], _labels(batch[-1]))

    def evaluation_batches(self):
        """Every readable image once, in order, with the eval recipe (a bad file left out and
        named); a batch may be short."""
        yield from readable_batches(imagefolder_dataset(self.evaluated_files, self.data_config,
                                                        batch_size=self.batch_size, workers=self.workers))


def readable_batches(dataset):
    """An evaluation pipeline's (images, labels) as NumPy, without the places of bad files
    (`EncodedFiles(replace=False)`); a batch of nothing but bad files is left out."""
    for images, labels in _stopping(dataset.create_tuple_iterator(output_numpy=True)):
        labels = _labels(labels)
        kept = labels != SKIPPED
        if kept.all():
            yield images, labels
        elif kept.any():
            yield images[kept], labels[kept]


def batched(dataset, batch_size: int, drop_remainder: bool, workers: int, mix=None):
    """`dataset`'s rows in batches; with `mix` (`recipe.BatchTargets`) each batch goes
    through it in the pipeline, knowing its index in the epoch: (image, label) -> (image,
    target, label). One thread mixes, so the batches arrive in order and are counted right;
    it works on whole batches (a `per_batch_map` would cost two more copies of each)."""
    batches = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if mix is None:
        return batches
    return batches.map(operations=_Mixing(mix), input_columns=["image", "label"],
                       output_columns=["image", "target", "label"], num_parallel_workers=1,
                       python_multiprocessing=False)


class _Mixing:
    """`mix` applied to each batch of one epoch's pipeline, counting them from 0."""

    def __init__(self, mix):
        self.mix, self.count = mix, 0

    def __call__(self, images, labels):
        labels = np.asarray(labels, np.int32)
        inputs, targets = self.mix(images, labels, self.count)
        self.count += 1
        return np.ascontiguousarray(inputs, np.float32), np.ascontiguousarray(targets, np.float32), labels


def _stopping(iterator):
    """`iterator`'s batches; then (or when the caller stops early) its pipeline is stopped.
    A pipeline left to the garbage collector made the next one wait 5.4 s for its first
    batch (MindSpore 2.10, every epoch after the first, measured): the 'stall after an
    epoch' a run saw about one epoch in eight."""
    try:
        yield from iterator
    finally:
        iterator.stop()


def _labels(labels) -> np.ndarray:
    """Labels as int32 NumPy (from a pipeline's Tensor or array)."""
    return np.asarray(labels.asnumpy() if hasattr(labels, "asnumpy") else labels).astype(np.int32)


def mixed_batches(data, epoch: int, seed: int, start: int, mix):
    """`data`'s batches with their soft targets, `(inputs, targets, labels)`, mixed where the
    data make them; data whose `batches` take no `mix` (the protocol before it) are mixed here."""
    import inspect

    if "mix" in inspect.signature(data.batches).parameters:
        return data.batches(epoch, seed, start=start, mix=mix)
    return with_targets(data.batches(epoch, seed, start=start), start, mix)


def with_targets(batches, start: int, mix):
    """`(images, labels)` batches, the first numbered `start`, as `(inputs, targets, labels)`
    through `mix` (`recipe.BatchTargets`), on the thread that reads them."""
    for index, (images, labels) in enumerate(batches, start):
        yield (*mix(images, labels, index), labels)


MAX_BAD_SHARE = 0.05  # a tree with more unreadable images than this is refused, not trained on


def bad_images(data) -> int:
    """How many images of `data`'s tree were found unreadable so far (skipped); `DataError`
    once more than `MAX_BAD_SHARE` of the tree is: a run on such a tree learns from what is
    left, without a word, and the tree is more likely the wrong one or damaged as a whole."""
    files = getattr(data, "files", None)
    if files is None or not files.bad:
        return 0
    count, total = len(files.bad), len(files)
    if count > MAX_BAD_SHARE * total:
        example = next(iter(files.bad.items()))
        raise DataError(f"{count} of the {total} images of {getattr(data, 'root', 'the tree')} cannot be read "
                        f"({count / total:.0%}, more than the {MAX_BAD_SHARE:.0%} a run accepts), e.g. "
                        f"{printable(example[0])}: {printable(example[1].splitlines()[0])}; fix or remove them")
    return count


def check_labels(num_classes: int, train_data, val_data=None):
    """The class names a run trains (or None), after checking that the data fit a head of
    `num_classes` outputs: as many class folders at most, labels whole numbers from 0 to
    num_classes - 1, and validation classes the training ones. `DataError` otherwise."""
    names = getattr(train_data, "class_names", None)
    if names is not None and len(names) > num_classes:
        raise DataError(f"the training data have {len(names)} classes, the network {num_classes} outputs: build it "
                        f"with num_classes={len(names)} (--num-classes), or train on {num_classes} class folders")
    for data, what in ((train_data, "training"), (val_data, "validation")):
        labels = getattr(data, "labels", None)
        if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"the {what} labels run from {labels.min()} to {labels.max()}: a network of "
                            f"{num_classes} outputs takes labels 0 to {num_classes - 1}")
    val_names = getattr(val_data, "class_names", None)
    if names is not None and val_names is not None and tuple(val_names) != tuple(names):
        raise DataError(f"the validation classes ({_listed(val_names)}) are not the training classes "
                        f"({_listed(names)}): a validation tree must have the training tree's class folders")
    return names


def _listed(names) -> str:
    names = list(names)
    return ", ".join(map(str, names[:6])) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
