"""Running a network as a compiled graph, around two of MindSpore's habits.

* `ms.jit(network.construct)` is cached by the bound method: after the blocks change
  (network expansion) it would silently run the graph of the old depth, so
  `compiled_forward` compiles a fresh function each time it is called;
* a graph is specialised to its input shape: a short last batch would compile the whole
  network again, so `pad_batch` pads it to the usual size (keep the first outputs).
"""

from __future__ import annotations

import numpy as np


def compiled_forward(network):
    """`network`'s forward pass in graph mode, compiled for its current blocks.

    A fresh function each call, on purpose: MindSpore 2.10 caches `ms.jit(network.construct)`
    by the bound method, so after `set_blocks` that would silently run the graph of the old
    depth (checked in tests/test_model.py).
    """
    import mindspore as ms

    def forward(images):
        return network(images)

    return ms.jit(forward)


def pad_batch(images: np.ndarray, size: int) -> np.ndarray:
    """`images` zero-padded to `size` along the batch axis.

    A compiled graph is specialised to its input shape: feeding a short last batch
    compiles the whole network again. Pad, run, and keep the first `len(images)` outputs.
    """
    if len(images) == size:
        return images
    padded = np.zeros((size,) + images.shape[1:], images.dtype)
    padded[:len(images)] = images
    return padded
