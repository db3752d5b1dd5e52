"""Running a network as a compiled graph, around four of MindSpore's habits.

* `ms.jit(network.construct)` is cached by the bound method: after the blocks change
  (network expansion) it would silently run the graph of the old depth, so
  `compiled_forward` compiles a fresh function each time it is called (as a Cell: MindSpore
  warns each time a plain function of the same name compiles again);
* a graph is specialised to its input shape: a short last batch would compile the whole
  network again, so `pad_batch` pads it to the usual size (keep the first outputs);
* a graph is specialised to the Parameters it reads: a model and its EMA, two networks of
  one shape, would need two compiled forwards; `SharedForward` compiles one for both;
* a graph input that the graph does not use makes every run slower, in proportion to the
  graph's kernels (benchmarks/investigations/unused_input.py): a compiled function takes only
  what it reads.

The package's graphs of a network run its blocks in the forms `cpu_forms.choose()` gives
(`compiled_for`): the CPU's faster forms there, MindSpore's own on every other device.
"""

from __future__ import annotations

import functools

import numpy as np

from . import cpu_forms, tuning

_CHOOSE = object()  # the forms `cpu_forms.choose()` gives (the default)


@functools.lru_cache(maxsize=None)
def _graph_cell():
    from mindspore import nn

    class Graph(nn.Cell):
        """A function as a Cell, so that `ms.jit` compiles it as one: each `compiled` call
        makes a new function (a network that grew must not run an old graph), and MindSpore
        warns each time a plain function of the same name compiles again, not a Cell."""

        def __init__(self, function):
            super().__init__(auto_prefix=False)
            self.function = function

        def construct(self, *args):
            return self.function(*args)
    return Graph


def compiled(function):
    """`function` compiled as a graph (`ms.jit`). In a process that `tuning.tune_cpu` asked to
    bind MindSpore's kernel threads, the first call of a fused graph binds them."""
    import mindspore as ms

    graph = ms.jit(_graph_cell()(function).construct)
    if not tuning.current().bind_threads:
        return graph

    first = True

    @functools.wraps(function)
    def run(*args):
        nonlocal first
        outputs = graph(*args)
        if first:  # OpenMP starts its team at the first fused kernel that runs
            first = False
            tuning.bind_after_first_fused_graph()
        return outputs
    return run


def compiled_for(network, function, forms=_CHOOSE):
    """`compiled(function)` for a function that runs `network`, its blocks in `forms`
    (`cpu_forms.choose()` by default: the CPU's forms there for a float32 network, MindSpore's
    own elsewhere and in mixed precision; None: MindSpore's own). The forms are on the
    network's blocks only while the graph runs (and compiles, inside its first call): the
    caller's network is left as it was."""
    if forms is _CHOOSE:
        forms = cpu_forms.choose(precision=getattr(network, "precision", "float32"))
    graph = compiled(function)
    if forms is None:
        return graph

    @functools.wraps(function)
    def run(*args):
        with cpu_forms.applied(network, forms):
            return graph(*args)
    return run


def compiled_forward(network, forms=_CHOOSE):
    """`network`'s forward pass in graph mode, compiled for its current blocks (in `forms`,
    as `compiled_for`).

    A fresh function each call, on purpose: MindSpore 2.10 caches `ms.jit(network.construct)`
    by the bound method, so after `set_blocks` that would silently run the graph of the old
    depth (checked in tests/test_model.py).
    """
    def forward(images):
        return network(images)

    return compiled_for(network, forward, forms)


class SharedForward:
    """One compiled forward pass for every network of one shape (a model and its EMA).

    A third network of that shape (`structural_copy`: nothing drawn) takes the weights of
    the network to run (`ops.assign` into the buffers its graph reads: a graph that has run
    does not see `Parameter.set_data`) and runs the graph compiled once for it. That halves
    what a trainer compiles to evaluate at every shape (a compile costs seconds, the copy of
    the weights far less) at the cost of one
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


def assign(parameter, value) -> None:
    """`parameter <- value` in the parameter's own buffer, which every graph that has run
    reads. Not `Parameter.set_data`: that gives the parameter a new buffer, and a graph
    that has already run keeps reading the old one (MindSpore 2.10)."""
    import mindspore as ms
    from mindspore import ops

    tensor = value if isinstance(value, ms.Tensor) else ms.Tensor(np.asarray(value))
    ops.assign(parameter, tensor if tensor.dtype == parameter.dtype else tensor.astype(parameter.dtype))


def as_input(batch):
    """A batch as a graph's input: a pipeline's Tensor as it is, an array without a copy
    (`from_numpy` shares its memory: the array must be the batch's own, as the data's are)."""
    import mindspore as ms

    if isinstance(batch, ms.Tensor):
        return batch
    return ms.from_numpy(np.ascontiguousarray(batch))


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
