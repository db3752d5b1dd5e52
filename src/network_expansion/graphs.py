"""Running a network as a compiled graph, around three of MindSpore's habits.

* on the CPU, MindSpore 2.10 hands each op and graph run to a queue thread that the
  caller waits on, both spinning: they take a share of the two cores that the kernels'
  thread pool splits each MatMul over, and a MatMul split in two waits for its slower
  half (a ViT-B forward + backward at depth 4: 3.0 s with the queue, 2.1 s without;
  docs/performance.md). `compiled` switches the queue off on the CPU;
* `ms.jit(network.construct)` is cached by the bound method: after the blocks change
  (network expansion) it would silently run the graph of the old depth, so
  `compiled_forward` compiles a fresh function each time it is called;
* a graph is specialised to its input shape: a short last batch would compile the whole
  network again, so `pad_batch` pads it to the usual size (keep the first outputs).
"""

from __future__ import annotations

import os

import numpy as np

HOST_BLOCKING = "MS_DEV_HOST_BLOCKING_RUN"


def run_on_calling_thread() -> None:
    """On the CPU, run MindSpore's ops and graphs on the calling thread, without the queue
    thread of its asynchronous pipeline (process-wide; PyNative is faster too: a ViT-B
    forward at depth 4 1.70 -> 1.47 s). On GPU and Ascend the queue lets the host run
    ahead of the device, so it stays. MindSpore versions without the switch get
    `MS_DEV_HOST_BLOCKING_RUN=1`, which only counts before MindSpore's runtime starts."""
    import mindspore as ms

    if ms.get_context("device_target") != "CPU":
        return
    try:
        from mindspore.common.api import _pynative_executor

        _pynative_executor.disable_frontend_and_bprop_pipeline()
    except (ImportError, AttributeError):
        os.environ.setdefault(HOST_BLOCKING, "1")


def compiled(function):
    """`ms.jit(function)`, after `run_on_calling_thread`."""
    import mindspore as ms

    run_on_calling_thread()
    return ms.jit(function)


def compiled_forward(network):
    """`network`'s forward pass in graph mode, compiled for its current blocks.

    A fresh function each call, on purpose: MindSpore 2.10 caches `ms.jit(network.construct)`
    by the bound method, so after `set_blocks` that would silently run the graph of the old
    depth (checked in tests/test_model.py).
    """
    def forward(images):
        return network(images)

    return compiled(forward)


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
