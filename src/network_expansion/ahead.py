"""Growth without a stop: the graphs of every later stage, compiled before training starts.

A growth changes the network's shape, and MindSpore compiles every graph again for it (the
train step, the EMA update, the evaluation forward): 4 to 19 s at the demo's scale
on this CPU, with training standing still. MindSpore 2.10 offers no way to do that
compilation alongside training here (measured, docs/expansion.md: a compile in a second
thread holds the first one's steps, 86 ms -> 1.5 s each, and once ended in a framework
exception; `MS_DEV_PRECOMPILE_ONLY` compiles the front end only, and the graph it leaves
cannot run). So the Trainer compiles them at start-up instead, for networks of each later
stage's shape (`Prepared`): it grows a copy of the network, with nothing but its shape
mattering, exactly as the growth will (the same `grow` call), and runs each new graph once
on zeros. At the growth, the real `grow` computes the values, `hand_over` writes them into
the prepared network's parameters (`ops.assign`: the buffers the graphs read) and the
model takes the prepared layers (`VisionTransformer.adopt`), so it trains on at once.

If anything about the grown network differs from what was prepared (names, shapes,
gates, the moments' birth steps), the growth compiles as before: the prepared graphs are
an optimisation, never a different run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mindspore as ms
import numpy as np
from mindspore import ops


@dataclass
class Prepared:
    """A stage's network, EMA, optimizer and compiled graphs, ready before the stage."""

    model: object           # VisionTransformer of the stage's shape (its values are placeholders)
    ema: object             # its EMA
    optimization: object    # recipe.Optimization for it
    train_step: object
    evaluation: object      # graphs.SharedForward: the evaluation of model and EMA
    born: dict = field(default_factory=dict)  # the moments' birth steps the optimizer was built with

    def fits(self, model, ema, born: dict) -> bool:
        """Whether `model` and `ema` (just grown) are what was prepared: the same parameter
        names, shapes and trainability, and the optimizer's moments born at the same steps."""
        def layout(network):
            return [(p.name, tuple(p.shape), bool(p.requires_grad)) for p in network.get_parameters()]
        return (layout(model) == layout(self.model) and layout(ema.network) == layout(self.ema.network)
                and born == self.born)

    def hand_over(self, model, ema, growth, step: int) -> None:
        """Write the grown `model`'s and `ema`'s values, the carried moments (`growth.moments`;
        the others zero) and the step count into the prepared parameters."""
        values = {p.name: p for p in model.get_parameters()}
        averages = {p.name: p for p in ema.network.get_parameters()}
        for mine, theirs in ((self.model, values), (self.ema.network, averages)):
            for parameter in mine.get_parameters():
                assign(parameter, theirs[parameter.name].value())
        optimizer = self.optimization.optimizer
        for parameter, m1, m2 in zip(optimizer.parameters, optimizer.moments1, optimizer.moments2):
            carried = growth.moments.get(id(values[parameter.name]))
            assign(m1, carried[0] if carried else np.zeros(m1.shape, np.float32))
            assign(m2, carried[1] if carried else np.zeros(m2.shape, np.float32))
        assign(optimizer.global_step, np.array([step], np.int32))


def assign(parameter, value) -> None:
    """`parameter <- value` in the buffer compiled graphs read (a host-side `set_data` gives
    the parameter a new buffer, which a graph that has run does not see)."""
    tensor = value if isinstance(value, ms.Tensor) else ms.Tensor(np.asarray(value))
    ops.assign(parameter, tensor.astype(parameter.dtype))


def warm(prepared: Prepared, batch_size: int, num_classes: int, eval_batch: int | None) -> None:
    """Compile the prepared graphs by running each once on zeros (`eval_batch`: the
    evaluation's padded batch size; None without evaluation). What these runs change is
    overwritten by `hand_over`."""
    size = prepared.model.config.image_size
    images = ms.Tensor(np.zeros((batch_size, 3, size, size), np.float32))
    targets = ms.Tensor(np.full((batch_size, num_classes), 1.0 / num_classes, np.float32))
    prepared.train_step(images, targets, ms.Tensor(0.0, ms.float32))[0].asnumpy()
    prepared.ema.update()
    if eval_batch:
        prepared.evaluation.forward(ms.Tensor(np.zeros((eval_batch, 3, size, size), np.float32))).asnumpy()
