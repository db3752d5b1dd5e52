"""From photos, PIL images or arrays to ImageNet labels: `Classifier` and `predict`.

    >>> from network_expansion import Classifier
    >>> classifier = Classifier()                      # the released weights
    >>> classifier.predict("cat.jpg", topk=3)          # one Prediction
    >>> classifier.predict(["a.jpg", "b.png"])         # a list; a bad file gets .error

Labels: the released head has 1001 outputs, of which 0..999 are the ImageNet-1k classes
in WordNet-id order (the order ImageFolder numbers the training folders) and output 1000
was never trained; it is dropped before the softmax, so probabilities are over the 1000
real classes. A 1000-way head maps directly; any other head is labelled by index (or by
the `class_names` you pass).
"""

from __future__ import annotations

import functools
import itertools
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from . import cpu_forms
from .card import asset_path
from .errors import ConfigError, DownloadError, ImageError, printable
from .images import load_image, source_name
from .memory import check_fits, inference_bytes
from .graphs import compiled_for, compiled_forward, pad_batch
from .preprocess import crop_image, data_config, preprocess_image
from .ranges import POSITIVE

logger = logging.getLogger(__name__)

IMAGENET_CLASSES = 1000


@functools.lru_cache(maxsize=None)
def _imagenet_classes() -> tuple:
    """(WordNet id, first lemma) of the 1000 ImageNet-1k classes, in label order."""
    rows = []
    for line in asset_path("imagenet-1k-classes.tsv").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            _, wnid, lemmas = line.split("\t")
            rows.append((wnid, lemmas.split(",")[0].strip()))
    return tuple(rows)


def class_names_of(network) -> tuple:
    """The names of `network`'s class outputs: its own (saved with weights trained on an
    ImageFolder tree), else ImageNet's for a 1000/1001-way head, else the output indices."""
    own = getattr(network, "class_names", None)
    if own is not None:
        return tuple(own)
    outputs = network.config.num_classes
    if outputs in (IMAGENET_CLASSES, IMAGENET_CLASSES + 1):
        return imagenet_class_names()
    return tuple(str(i) for i in range(outputs))


def imagenet_class_names() -> tuple:
    """The 1000 ImageNet-1k class names in label order (first WordNet lemma of each)."""
    return tuple(name for _, name in _imagenet_classes())


def imagenet_wordnet_ids() -> tuple:
    """The 1000 ImageNet-1k WordNet ids in label order (`n01440764`, ...): the folder names
    of ImageNet's train and (sorted) val trees."""
    return tuple(wnid for wnid, _ in _imagenet_classes())


@dataclass
class Prediction:
    """The top-k classes of one input, or the reason it has none (`error`)."""

    source: str
    labels: list = field(default_factory=list)
    indices: list = field(default_factory=list)
    probabilities: list = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self):
        if self.error:
            return f"{printable(self.source)}: ERROR {printable(self.error)}"
        best = ", ".join(f"{printable(label)} {p:.1%}" for label, p in zip(self.labels, self.probabilities))
        return f"{printable(self.source)}: {best}"


class Classifier:
    """A network in graph mode with its preprocessing and class names, for batches of images.

    Create it once and share it between threads: decoding and preprocessing run in
    parallel, the forward passes one at a time (a lock; MindSpore executes one graph at a
    time per process anyway). Between processes, create one Classifier in each process
    (after the fork): MindSpore's runtime state is not shared across processes.

    Args:
        network: a `VisionTransformer`; by default `create_network(pretrained=weights)`.
        weights: for the default network: True (released), a path or URL (never None,
            False or '': a network of random weights is no classifier, `ConfigError`).
        batch_size: images per forward pass; the last batch is padded, so the graph
            compiles once.
        precision: 'float32' (default), 'float16' or 'bfloat16' where the device has them
            (MindSpore 2.10's CPU backend runs float16 slower than float32 and has no
            bfloat16 MatMul: a `PrecisionError` says so).
        class_names: labels for the outputs; by default the network's own
            (`network.class_names`, saved with weights trained on an ImageFolder tree), else
            ImageNet-1k for a 1000/1001-way head, else the output index.
        preprocess: where pictures are normalised: 'host' (in NumPy/`mindspore.dataset`,
            float32 batches to the device), 'device' (the host decodes, resizes and crops to
            uint8; the `Preprocess` cell normalises inside the network's graph: a quarter of
            the bytes to move), or 'auto' (default): 'device' on GPU and Ascend, 'host' on the
            CPU, where both run on the same cores. `preprocessing` says which it uses.

    It changes nothing outside itself: the caller's network keeps its precision (float16
    runs a copy) and the process keeps its cores (to pin them, call `use_cores` yourself).
    """

    def __init__(self, network=None, *, weights=True, batch_size: int = 8, precision: str = "float32",
                 class_names=None, preprocess: str = "auto"):
        if network is None:
            from .hub import create_network

            if weights is None or weights is False or (isinstance(weights, (str, bytes)) and not weights.strip()):
                raise ConfigError(f"Classifier(weights={weights!r}) would classify with random weights: confident "
                                  f"labels from noise. Give weights=True (the released ones), a path or URL of "
                                  f"weights, or a trained network")
            try:
                network = create_network("NetworkExpansion", pretrained=weights)
            except DownloadError as error:
                raise error.advise("Classifier(weights='/path/to/{name}')") from None
        POSITIVE.check("batch_size", batch_size)
        check_fits(f"a forward pass of a ViT of depth {network.config.depth}, width {network.config.width} at "
                   f"{network.config.image_size} px", lambda batch: inference_bytes(network.config, batch),
                   int(batch_size), "lower the batch size (--batch-size)")
        self.network = _in_precision(network, precision)
        self.network.set_train(False)
        self.precision = precision
        self.batch_size = int(batch_size)
        self.data_config = data_config(network)
        self.num_outputs = network.config.num_classes
        self.class_names = self._check_names(class_names) if class_names is not None else self._default_names()
        self._forward = compiled_forward(self.network)
        self.preprocessing = _where_to_preprocess(preprocess)
        self._on_device = None  # the graph of `WithPreprocess`, made on first use
        self._compiled = False
        self._lock = threading.Lock()

    @property
    def num_labels(self) -> int:
        """Outputs that are classes: all of them, but 1000 of the zoo's 1001."""
        return IMAGENET_CLASSES if self.num_outputs == IMAGENET_CLASSES + 1 else self.num_outputs

    @property
    def class_keys(self):
        """What names each output in a dataset's folders: ImageNet's WordNet ids for an
        ImageNet head without names of its own, else the class names (None if unknown)."""
        if self.class_names == imagenet_class_names():
            return imagenet_wordnet_ids()
        if self.class_names == tuple(str(i) for i in range(self.num_labels)):
            return None
        return self.class_names

    def _default_names(self) -> tuple:
        return class_names_of(self.network)

    def _check_names(self, names) -> tuple:
        names = tuple(str(name) for name in names)
        if len(names) != self.num_labels:
            raise ConfigError(f"{len(names)} class names for a network with {self.num_labels} classes: "
                              f"give one name per output, in output order")
        return names

    # -- arrays ----------------------------------------------------------------------

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for preprocessed images (N, 3, S, S) float32, or for crops
        (N, S, S, 3) uint8 that the device normalises (`preprocess='device'`)."""
        import mindspore as ms

        batch = np.asarray(batch)
        forward = self._forward
        if batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[-1] == 3:
            forward = self._device_forward()
        else:
            batch = batch.astype(np.float32, copy=False)
        outputs = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            with self._lock:
                if not self._compiled:  # the first forward compiles the graph: say so before it
                    logger.info("compiling the network for batches of %d, preprocessing on the %s (the first "
                                "prediction waits for it) ...", self.batch_size, self.preprocessing)
                    self._compiled = True
                logits = forward(ms.from_numpy(np.ascontiguousarray(pad_batch(chunk, self.batch_size)))).asnumpy()
            logits = logits.astype(np.float32)[:len(chunk)]
            outputs.append(logits)
        logits = np.concatenate(outputs) if outputs else np.zeros((0, self.num_outputs), np.float32)
        if self.num_outputs == IMAGENET_CLASSES + 1:
            logits = logits[:, :IMAGENET_CLASSES]  # the zoo's unused output 1000
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    # -- images ----------------------------------------------------------------------

    def predict(self, inputs, topk: int = 5):
        """Top-k labels and probabilities.

        `inputs`: a path, PIL image or HWC array (returns one `Prediction`, raising
        `ImageError` if it is unusable), or a list of them (returns a list in the same
        order; an unusable input gets a `Prediction` whose `error` says why).
        """
        single = not isinstance(inputs, (list, tuple))
        if single:
            prepared = self._prepare(inputs)  # raises ImageError
            return self._top(self.probabilities(prepared[None]), [source_name(inputs)], topk)[0]
        results, batch, positions = [None] * len(inputs), [], []
        for position, item in enumerate(inputs):
            try:
                batch.append(self._prepare(item))
                positions.append(position)
            except ImageError as error:
                results[position] = Prediction(source=source_name(item), error=str(error))
        if batch:
            predictions = self._top(self.probabilities(np.stack(batch)),
                                    [source_name(inputs[p]) for p in positions], topk)
            for position, prediction in zip(positions, predictions):
                results[position] = prediction
        return results

    __call__ = predict

    def predict_stream(self, inputs, topk: int = 5, *, workers: int = 2, progress: bool = False, total=None):
        """Predictions for an iterable of inputs (paths, PIL images, arrays), yielded in order.

        Memory stays bounded: `batch_size` inputs are read, decoded (by `workers`
        threads) and classified at a time, so an endless camera stream or a folder of a
        million files works. Unusable inputs yield a `Prediction` with `error` set.
        """
        from tqdm.auto import tqdm

        if total is None and hasattr(inputs, "__len__"):
            total = len(inputs)
        iterator = iter(inputs)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
                tqdm(total=total, unit="img", desc="predict", disable=not progress, file=sys.stderr) as bar:
            while chunk := list(itertools.islice(iterator, self.batch_size)):
                prepared = list(pool.map(self.try_prepare, chunk))
                good = [i for i, (array, _) in enumerate(prepared) if array is not None]
                results = [Prediction(source=source_name(item), error=error) for item, (_, error) in zip(chunk, prepared)]
                if good:
                    top = self._top(self.probabilities(np.stack([prepared[i][0] for i in good])),
                                    [source_name(chunk[i]) for i in good], topk)
                    for i, prediction in zip(good, top):
                        results[i] = prediction
                bar.update(len(chunk))
                yield from results

    def predict_folder(self, folder, topk: int = 5, **options):
        """`predict_stream` over the image files below `folder`, in sorted order."""
        from pathlib import Path

        from .datasets import image_files

        if not Path(folder).is_dir():
            raise ImageError(f"{folder}: no such folder" if not Path(folder).exists() else f"{folder}: not a folder")
        return self.predict_stream([str(p) for p in image_files(folder)], topk, **options)

    def try_prepare(self, item):
        """(preprocessed CHW array, None), or (None, the ImageError's message)."""
        try:
            return self._prepare(item), None
        except ImageError as error:
            return None, str(error)

    def _prepare(self, item) -> np.ndarray:
        if self.preprocessing == "device":
            return crop_image(load_image(item), self.data_config)
        return preprocess_image(load_image(item), self.data_config)

    def _device_forward(self):
        if self._on_device is None:
            from .preprocess import WithPreprocess

            wrapped = WithPreprocess(self.network, self.data_config, resize=False)

            def forward(images):
                return wrapped(images)
            self._on_device = compiled_for(self.network, forward)  # the blocks in the forms chosen for it
        return self._on_device

    def _top(self, probabilities: np.ndarray, sources, topk: int) -> list:
        topk = min(int(POSITIVE.check("topk", topk)), probabilities.shape[1])
        # Sorted by probability, ties broken by the lower index: deterministic.
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :topk]
        return [Prediction(source=source, indices=[int(i) for i in row],
                           labels=[self.class_names[i] for i in row],
                           probabilities=[float(probabilities[n, i]) for i in row])
                for n, (source, row) in enumerate(zip(sources, order))]


def use_cores(count: int) -> list:
    """Bind this whole process to `count` of the CPU cores it may use; returns them.

    An explicit call (the command line's `--threads` makes it), because it changes the
    process: MindSpore 2.10 sizes its CPU kernel pool itself (neither `runtime_num_threads`
    nor OMP_NUM_THREADS change it, measured), so binding is the only lever. ViT-B at batch 8
    ran 2.6 images/s on one core here, 4.5 on two.
    """
    import os

    allowed = sorted(os.sched_getaffinity(0))
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(allowed):
        raise ConfigError(f"threads={count}: this process may use 1 to {len(allowed)} cores ({allowed})")
    chosen = allowed[:count]
    os.sched_setaffinity(0, chosen)
    return chosen


def predict(inputs, topk: int = 5, **classifier_options):
    """`Classifier(**classifier_options).predict(inputs, topk)`, for one-off use."""
    return Classifier(**classifier_options).predict(inputs, topk=topk)


PREPROCESSING = ("auto", "host", "device")


def _where_to_preprocess(preprocess: str) -> str:
    """'host' or 'device' for a Classifier's `preprocess` option."""
    if preprocess not in PREPROCESSING:
        raise ConfigError(f"preprocess={preprocess!r}: expected one of {', '.join(PREPROCESSING)}")
    if preprocess == "auto":
        return "host" if cpu_forms.device_target() == "CPU" else "device"
    return preprocess


def _in_precision(network, precision: str):
    """`network` itself for float32; for float16/bfloat16 a copy computing in it
    (`set_precision`; the caller's network stays as it was)."""
    from .model import VisionTransformer

    cpu_forms.check_precision(precision)
    if precision == "float32":
        return network
    copy = VisionTransformer(network.config, initialize=False)
    copy.class_names = network.class_names
    for mine, theirs in zip(copy.get_parameters(), network.get_parameters()):
        mine.set_data(theirs.value().copy())
    return copy.set_precision(precision)
