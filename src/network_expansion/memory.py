"""What a network of a config needs in memory, estimated before anything is allocated, so
that a batch size or an image size that cannot fit is refused in one line (with what would
fit) instead of ending in an allocation failure minutes later.

The estimates count float32 tensors: the weights (training: the model, its EMA, AdamW's
two moments, the gradients and the evaluation's shared copy: six sets) and the activations
a step keeps per block (the tokens through the LayerNorms, projections and residuals, the
MLP's hidden layer, the attention's scores and weights). They are upper bounds of the
order of what is measured (ViT-B/16 at batch 8: 4.0 GB estimated, a 3.3 GB peak measured
for the whole process, docs/log/performance.md). Checked on the CPU only, against the memory
the system says is available (`MemAvailable`: free memory and the page cache it can
reclaim); a GPU's or an NPU's own memory is not visible here.
"""

from __future__ import annotations

from .errors import ConfigError

GIB = 1 << 30


def training_bytes(config, batch_size: int) -> int:
    """Bytes a training step of a network of `config` (a `ViTConfig`) at `batch_size` needs."""
    return 6 * 4 * config.parameter_count + config.depth * batch_size * _block_activation_bytes(config, 1.0)


def inference_bytes(config, batch_size: int) -> int:
    """Bytes a forward pass needs: the weights, and one block's activations at a time."""
    return 4 * config.parameter_count + batch_size * _block_activation_bytes(config, 0.5)


def _block_activation_bytes(config, share: float) -> int:
    tokens = config.num_patches + 1
    floats = tokens * config.width * 12 + tokens * config.mlp_width * 3 + config.num_heads * tokens * tokens * 3
    return int(4 * floats * share)


def available_bytes() -> int | None:
    """The memory the system says is available (Linux's `MemAvailable`), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(what: str, needed, batch_size: int, advice: str, available: int | None = None) -> None:
    """`ConfigError` if `needed(batch_size)` bytes exceed what is available here, naming the
    largest batch size that would fit. On GPU and Ascend nothing is checked (their memory is
    their own)."""
    from .cpu_forms import device_target

    if device_target() != "CPU":
        return
    available = available_bytes() if available is None else available
    if available is None or needed(batch_size) <= available:
        return
    fitting = _largest_fitting(needed, batch_size, available)
    fits = f"batches of {fitting} would fit" if fitting else "not even one picture a batch fits"
    raise ConfigError(f"{what} needs about {needed(batch_size) / GIB:.1f} GiB at batches of {batch_size}; this "
                      f"machine has {available / GIB:.1f} GiB available ({fits}): {advice}")


def _largest_fitting(needed, batch_size: int, available: int) -> int:
    low, high = 0, batch_size
    while low < high:
        middle = (low + high + 1) // 2
        if needed(middle) <= available:
            low = middle
        else:
            high = middle - 1
    return low
