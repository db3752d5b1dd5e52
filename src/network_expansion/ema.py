"""An exponential moving average (EMA) of a network's weights, as a second network.

NetworkExpansion keeps one during training (decay 0.99996) and copies its blocks into the
network at a depth growth; it is evaluated beside the model, and saved as `model_ema.ckpt`.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from . import cpu_forms
from .errors import ConfigError
from .graphs import compiled
from .model import VisionTransformer, source_name

_CHOOSE = object()  # the forms `cpu_forms.choose()` gives (the default)


class EMA:
    """An exponential moving average of a network's weights, as a second network.

    `network` holds the averages (its parameters are named `ema.<name>`, so one graph can
    hold both); `update()` moves them towards the live weights:
    `ema = decay * ema + (1 - decay) * live`. Evaluate `ema.network` like the model.
    `forms`: the update's form per tensor (`cpu_forms.choose()` by default; None: MindSpore's
    plain form, one `lerp` a tensor).
    """

    def __init__(self, live: VisionTransformer, decay: float = 0.99996, forms=_CHOOSE):
        if not 0 <= decay < 1:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.live = live
        self.network = VisionTransformer(live.config, initialize=False)  # copied from `live` below
        gated = live.gated_blocks()
        if gated:  # the same gates (learned ones averaged, ramped ones copied: see _EMAUpdate)
            self.network.add_gates(gated, trainable=bool(live.gates[0].requires_grad))
        self.network.update_parameters_name("ema.")
        self.network.set_train(False)
        self.copy_from(live)
        self.forms = cpu_forms.choose() if forms is _CHOOSE else forms
        self._step = step = _EMAUpdate(self.network, live, self.decay, self.forms)

        def update():  # a fresh function: see graphs.compiled_forward
            return step()

        self._jitted = compiled(update)

    def copy_from(self, network) -> None:
        """Set the averages to `network`'s weights."""
        for mine, theirs in zip(self.network.get_parameters(), network.get_parameters()):
            mine.set_data(theirs.value().copy())

    def update(self) -> None:
        """One step of the average, as its own compiled graph."""
        self._jitted()

    def block_copy(self, index: int):
        """A new block holding the averaged weights of block `index`."""
        block = self.live.new_block()
        for mine, average in zip(block.get_parameters(), self.network.blocks[index].get_parameters()):
            mine.set_data(average.value().copy())
        return block

    def take_grown(self, old: "EMA", order: list) -> None:
        """Take `old`'s averages, grown in `order` (`'b3'`: old block 3, `'e3'` its copy):
        the EMA of an exact growth goes on averaging, as its function is unchanged too.
        Gates keep the values they have (those of the grown network)."""
        averages = {p.name: p for p in old.network.get_parameters()}
        gates = {id(gate) for gate in self.network.gates}
        for parameter in self.network.get_parameters():
            if id(parameter) not in gates:
                parameter.set_data(averages[source_name(parameter.name, order)].value().copy())

    def load_state(self, state: dict) -> None:
        for parameter in self.network.get_parameters():
            parameter.set_data(ms.Tensor(state[parameter.name]))


class _EMAUpdate(nn.Cell):
    """Averages the trainable parameters; copies the others (a ramping gate is a schedule,
    not a weight: the EMA's new blocks enter as the live ones do).

    `ema + (1 - decay) (live - ema)`, by MindSpore's `lerp` (one kernel a tensor); with the
    CPU's forms, a large tensor's as the difference's multiple added in place (`assign_add`:
    on the CPU, `lerp` runs at half the speed of a multiply and an add on large tensors, and
    a computed average then assigned is one more pass over the tensor than an in-place add).
    The same value up to rounding."""

    def __init__(self, average, live, decay, forms):
        super().__init__()
        groups = {form: ([], []) for form in ("lerp", "add", "copy")}  # (averages, live weights)
        for mine, theirs in zip(average.get_parameters(), live.get_parameters()):
            if not (theirs.requires_grad and decay > 0):
                form = "copy"
            else:
                form = "add" if forms is not None and forms.large(mine.shape) else "lerp"
            groups[form][0].append(mine)
            groups[form][1].append(theirs)
        self.small, self.small_live = map(ms.ParameterTuple, groups["lerp"])
        self.large, self.large_live = map(ms.ParameterTuple, groups["add"])
        self.copies, self.copied = map(ms.ParameterTuple, groups["copy"])
        self.weight, self.decay = 1.0 - decay, float(decay)

    def construct(self):
        for average, live in zip(self.small, self.small_live):
            ops.assign(average, ops.lerp(average, live, self.weight))
        for average, live in zip(self.large, self.large_live):
            ops.assign_add(average, (live - average) * self.weight)
        for copy, live in zip(self.copies, self.copied):
            ops.assign(copy, live)
        return True
