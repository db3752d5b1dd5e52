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
  network again, so `pad_batch` pads it to the usual size (keep the first outputs);
* a graph is specialised to the Parameters it reads: a model and its EMA, two networks of
  one shape, would need two compiled forwards; `SharedForward` compiles one for both;
* a graph input that the graph does not use makes every run slower, in proportion to the
  graph's kernels (`benchmarks/unused_input.py`: 400 small MatMuls 9.9 -> 19.0 ms a run;
  the demo's train step 69 -> 78 ms): a compiled function takes only what it reads (the
  Trainer's step takes the gate value only while there are gates to set).
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


class SharedForward:
    """One compiled forward pass for every network of one shape (a model and its EMA).

    A third network of that shape (`structural_copy`: nothing drawn) takes the weights of
    the network to run (`ops.assign` into the buffers its graph reads: a graph that has run
    does not see `Parameter.set_data`) and runs the graph compiled once for it. That halves
    what a trainer compiles to evaluate at every shape (at the demo's depth 12, one forward
    compiles in 3 to 4 s; the copy of its 200 tensors takes about 10 ms) at the cost of one
    more set of weights in memory (a ViT-B's 330 MiB).

        >>> shared = SharedForward(model)
        >>> model_logits = shared.of(model)(images)        # doctest: +SKIP
        >>> ema_logits = shared.of(ema.network)(images)     # doctest: +SKIP

    A network whose gates were folded (`fold_gates` once they reached 1) runs with the
    shared network's gates at 1: the same function.

    The third network is built when first used, of the shape `network` had when this was
    made: a run without evaluation keeps no third set of weights.
    """

    def __init__(self, network):
        self._structure = network.structure()  # the shape now: a later fold_gates does not change it
        self._network = self._forward = None

    @property
    def network(self):
        """The network whose parameters the compiled forward reads (built on first use)."""
        if self._network is None:
            from .model import VisionTransformer

            self._network = VisionTransformer.of_structure(self._structure)
            self._network.set_train(False)
            self._forward = compiled_forward(self._network)
        return self._network

    @property
    def forward(self):
        """The compiled forward of `network` (run `of(...)` first to give it weights)."""
        _ = self.network  # built on first use
        return self._forward

    def of(self, network):
        """The compiled forward, holding `network`'s weights (its current values)."""
        from mindspore import ops

        mine = list(self.network.get_parameters())
        theirs = list(network.get_parameters())
        gates = {id(gate) for gate in self.network.gates}
        if len(theirs) != len(mine) and not network.gates:  # folded: its gates are 1s
            for gate in self.network.gates:
                ops.assign(gate, ops.ones_like(gate))
            mine = [p for p in mine if id(p) not in gates]
        if [tuple(p.shape) for p in mine] != [tuple(p.shape) for p in theirs]:
            from .errors import ConfigError

            raise ConfigError(f"SharedForward was built for a network of another shape "
                             f"({self.network.config}) than {network.config}: build one for it")
        for target, source in zip(mine, theirs):
            ops.assign(target, source)
        return self.forward


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
