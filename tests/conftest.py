"""Shared fixtures. Building a ViT-B and compiling graphs costs seconds: share them."""

import os
import tempfile
from pathlib import Path

# the suite's cache (fused kernels, downloads) is its own, not the user's ~/.cache
os.environ.setdefault("NETWORK_EXPANSION_CACHE", tempfile.mkdtemp(prefix="network-expansion-tests-"))

# the suite is the program: OpenMP's idle threads passive (as tune_cpu() sets them), before MindSpore
# loads OpenMP, so that the tests that fuse kernels can (test_cpu_forms.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import mindspore as ms
import numpy as np
import pytest

from network_expansion import ArrayData, TrainConfig, Trainer, VisionTransformer, ViTConfig

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

TINY = dict(image_size=32, patch_size=8, width=32, depth=2, num_heads=4, mlp_width=64, num_classes=10)


def tiny_config(**overrides) -> ViTConfig:
    return ViTConfig(**{**TINY, **overrides})


def off_defaults(network, seed=0):
    """Every weight random, LayerNorm gains off 1 and every bias off 0: nothing that makes a
    grown network keep its function by accident."""
    rng = np.random.default_rng(seed)
    for p in network.get_parameters():
        values = rng.standard_normal(p.shape).astype(np.float32) * 0.3
        if p.name.endswith("gamma"):
            values += 1.0
        p.set_data(ms.Tensor(values))
    return network


class cost:
    """What the block spends: `seconds` of this thread's CPU time (what a loaded machine's other
    processes cannot inflate, unlike the wall clock: a 1 s bound on the wall failed at 1.13 s
    on a busy CI machine) and the `peak` bytes Python allocated (tracemalloc).

        >>> with cost() as spent:
        ...     refuse_something()
        >>> assert spent.seconds < 1 and spent.peak < 8 * 2**20
    """

    def __enter__(self):
        import time
        import tracemalloc

        tracemalloc.start()
        self._started = time.thread_time()
        return self

    def __exit__(self, *exc):
        import time
        import tracemalloc

        self.seconds = time.thread_time() - self._started
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def parameters_of(network) -> dict:
    return {p.name: p.asnumpy().copy() for p in network.get_parameters()}


def reference_names() -> list:
    """(name, shape) of the released checkpoint, as the model zoo's code produces them."""
    rows = []
    for line in (DATA / "released-checkpoint-names.txt").read_text().splitlines():
        name, shape = line.split(" ", 1)
        rows.append((name, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


@pytest.fixture()
def fake_device(monkeypatch):
    """`fake_device("GPU")`: MindSpore's device target reported as that from now on (for this
    test), and every form a package graph applies recorded: returns the list it fills (empty:
    only MindSpore's own forms ran)."""
    from network_expansion import cpu_forms

    seen = []
    real = cpu_forms.applied

    def spy(network, forms):
        seen.append(forms)
        return real(network, forms)

    def fake(device: str) -> list:
        monkeypatch.setattr(cpu_forms, "device_target", lambda: device)
        monkeypatch.setattr(cpu_forms, "applied", spy)
        return seen
    return fake


@pytest.fixture(scope="session")
def vit_b():
    """The full ViT-B/16 with the card's 1001 classes (random weights), built once."""
    ms.set_seed(0)
    network = VisionTransformer()
    network.set_train(False)
    return network


@pytest.fixture()
def tiny():
    ms.set_seed(0)
    network = VisionTransformer(tiny_config())
    network.set_train(False)
    return network


@pytest.fixture()
def tiny_images():
    return np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)


def random_state(shapes, seed=0, scale=0.02) -> dict:
    """`{name: float32 array}` of the given shapes, small random values."""
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in shapes}


def write_ckpt(path, state) -> Path:
    ms.save_checkpoint([{"name": n, "data": ms.Tensor(v)} for n, v in state.items()], str(path))
    return Path(path)


@pytest.fixture(scope="session")
def released_like_checkpoint(tmp_path_factory):
    """A file with the released checkpoint's exact names and shapes (1001 classes, random
    values, 346 MB), under the released file name, written once."""
    from network_expansion import model_card

    path = tmp_path_factory.mktemp("released") / model_card().checkpoint.file_name
    return write_ckpt(path, random_state(reference_names(), seed=7))


def place_released(cache, checkpoint) -> Path:
    """Put `checkpoint` where the released checkpoint's download lies in the cache `cache`
    (as a user places a copy by hand, offline); returns that path."""
    from network_expansion import model_card
    from network_expansion.download import cache_path

    target = cache_path(model_card().checkpoint.link, cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(checkpoint)
    return target


@pytest.fixture(scope="session")
def released_in_cache(tmp_path_factory, released_like_checkpoint):
    """A cache folder holding `released_like_checkpoint` where the released download goes."""
    cache = tmp_path_factory.mktemp("cache")
    place_released(cache, released_like_checkpoint)
    return cache


def tiny_shapes(depth=2, num_classes=10):
    """Checkpoint (name, shape) pairs of `tiny_config`, by building it."""
    return list(VisionTransformer(tiny_config(depth=depth, num_classes=num_classes)).parameter_shapes().items())


def color_rigged_network(channel_classes=(0, 1, 2), num_classes=3):
    """A tiny ViT wired by hand to answer "which channel dominates the image?".

    Patch embedding: feature c = mean of channel c over the patch (c < 3). Attention:
    q = k = 0, so every token attends uniformly; v and out are identities, so the cls
    token receives the mean of the (LayerNorm-ed) patch features. The MLP adds zero.
    The head sends feature c to class `channel_classes[c]`. Every step keeps the argmax
    over the three channels, so an image whose normalised red channel dominates lands in
    `channel_classes[0]`, and so on: a network whose right answers are known by construction.
    """
    config = tiny_config(depth=1, num_classes=num_classes)
    network = VisionTransformer(config)
    network.set_train(False)
    width, patch = config.width, config.patch_size
    values = {name: np.zeros(shape, np.float32) for name, shape in network.parameter_shapes().items()}
    for name in values:
        if name.endswith(".gamma"):
            values[name][:] = 1.0
    stem = values["stem.patch_to_embedding.dense.weight"]
    for c in range(3):
        stem[c, c * patch * patch:(c + 1) * patch * patch] = 1.0 / (patch * patch)
    values["body.layers.0.0.cell.1.to_v.weight"] = np.eye(width, dtype=np.float32)
    values["body.layers.0.0.cell.1.to_out.weight"] = np.eye(width, dtype=np.float32)
    for c, target in enumerate(channel_classes):
        values["head.0.weight"][target, c] = 1.0
    for parameter in network.get_parameters():
        parameter.set_data(ms.Tensor(values[parameter.name]))
    return network


def color_image(channel, size=(40, 48), seed=0):
    """An RGB uint8 image dominated by `channel` (0 red, 1 green, 2 blue), with noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=size + (3,))
    image[..., channel] = rng.integers(200, 256, size=size)
    return image.astype(np.uint8)


def run_command(argv, capsys):
    """(exit code, stdout, stderr) of `network-expansion argv`, as a shell would see them."""
    from network_expansion.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def noise_folder(root, classes=("ant", "bee"), per_class=4, size=20, seed=0):
    """An ImageFolder tree of random RGB pictures, `per_class` in each class folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        (Path(root) / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(Path(root) / name / f"{i}.png")
    return Path(root)


# -- the trainer's tests (test_train.py, test_growth.py) -----------------------------

SMALL = dict(image_size=16, patch_size=4, width=16, num_heads=2, mlp_width=32, num_classes=4)


def learnable_data(n=48, seed=0):
    """Noise images whose label shows in one colour corner: a 16x16 task a tiny ViT learns."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.standard_normal((n, 3, 16, 16)).astype(np.float32) * 0.5
    images[:, labels % 3, :4, :4] += 2.0  # a learnable signal
    return images, labels


def small_trainer(output_dir=None, depth=2, epochs=4, image_size=16, **config):
    """A Trainer of a SMALL ViT growing 2 -> 4 at epoch 2 (3 steps an epoch) on 16x16 data;
    `image_size`: the model's (a schedule over sizes starts there); `config`: TrainConfig fields."""
    images, labels = learnable_data()
    ms.set_seed(0)
    np.random.seed(0)
    model = VisionTransformer(ViTConfig(**{**SMALL, "image_size": image_size}, depth=depth))
    settings = dict(epochs=epochs, schedule="2,4", warmup_epochs=1, lr=2e-3, ema_decay=0.9, seed=3)
    settings.update(config)
    return Trainer(model, ArrayData(images, labels, 16), ArrayData(images, labels, 48, shuffle=False,
                                                                     drop_remainder=False),
                   TrainConfig(**settings), output_dir=output_dir, progress=False)


def stop_at_step(trainer, at):
    """Ctrl-C (KeyboardInterrupt) just before the trainer's `at`-th step, whatever the depth."""
    def interruptible(step):
        def run(*args):
            if trainer.step == at:
                raise KeyboardInterrupt
            return step(*args)
        return run

    make = trainer._stages.train_step
    trainer._stages.train_step = lambda *args: interruptible(make(*args))  # the graphs of later stages
    trainer._graphs.train_step = trainer._train_step = interruptible(trainer._train_step)
