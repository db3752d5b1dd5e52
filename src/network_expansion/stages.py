"""A run's stages: what each trains with, and the growth from one into the next.

`StageGraphs` is what one stage trains with: the network, its EMA, the optimizer and the
compiled graphs. `Stages` owns every growth of a run. It builds a stage's graphs; it
compiles the graphs of every later stage before training starts, for networks of each
stage's shape grown exactly as the run will grow (the same `expansion.grow` call), by
running each graph once on zeros; and at a growth it grows the model, its EMA and the
optimizer's moments into the next stage and returns what to train with and the record to
log. The `Trainer` asks its schedule which stage the clock is in and swaps in what this
returns.

A growth changes the network's shape, and MindSpore compiles every graph again for it (4
to 19 s at the demo's scale on this CPU, with training standing still). MindSpore 2.10
offers no way to compile alongside training here (a compile in a second thread holds the
first one's steps; `MS_DEV_PRECOMPILE_ONLY` leaves a graph that cannot run:
docs/log/expansion.md), so the graphs are compiled at start-up instead. At the growth, the
real `grow` computes the values, they are written into the prepared network's parameters
(`graphs.assign`: the buffers its graphs read) and the model takes the prepared layers
(`VisionTransformer.adopt`). If anything about the grown network differs from what was
prepared (names, shapes, gates, the moments' birth steps), the growth compiles as it would
have: the prepared graphs are an optimisation, never a different run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mindspore as ms
import numpy as np
from mindspore import ops
from mindspore.amp import all_finite

from . import cpu_forms
from .ema import EMA
from .errors import ConfigError
from .expansion import grow, set_gates
from .graphs import SharedForward, assign, compiled_for
from .recipe import Optimization, build_optimizer, loss_scaler, soft_cross_entropy


@dataclass
class StageGraphs:
    """What one stage trains with: the network, its EMA, the optimizer and the graphs."""

    model: object                 # VisionTransformer of the stage's shape
    ema: EMA
    optimization: Optimization
    train_step: object            # (images, targets, gate value) -> (loss, predictions)
    evaluation: SharedForward     # the evaluation of model and EMA
    born: dict = field(default_factory=dict)  # the moments' birth steps the optimizer was built with
    compiled: bool = False        # the graphs have run (compiled ahead)

    @property
    def optimizer(self):
        return self.optimization.optimizer

    def fits(self, model, ema, born: dict) -> bool:
        """Whether `model` and `ema` (just grown) are what was prepared: the same parameter
        names, shapes and trainability, and the optimizer's moments born at the same steps."""
        def layout(network):
            return [(p.name, tuple(p.shape), bool(p.requires_grad)) for p in network.get_parameters()]
        return (layout(model) == layout(self.model) and layout(ema.network) == layout(self.ema.network)
                and born == self.born)

    def take_values(self, model, ema, moments: dict, step: int) -> None:
        """Write the grown `model`'s and `ema`'s values, the carried `moments` and the step
        count into these prepared parameters."""
        for mine, theirs in ((self.model, model), (self.ema.network, ema.network)):
            values = {p.name: p for p in theirs.get_parameters()}
            for parameter in mine.get_parameters():
                assign(parameter, values[parameter.name].value())
        carried = {id(mine): moments[id(theirs)] for mine, theirs in zip(self.model.get_parameters(),
                                                                          model.get_parameters())
                   if id(theirs) in moments}
        self.optimizer.take_moments(carried, step, rest_zero=True)


@dataclass
class Growth:
    """What one growth into a stage did: the graphs to train with from now on, the
    `expansion.Growth` (its gates, order, what grew) and the fields of its log record."""

    graphs: StageGraphs
    growth: object
    record: dict


class Stages:
    """Every growth of one run (`config`'s recipe, `schedule`'s stages, `steps_per_epoch`
    steps an epoch, ending at `final_depth`, starting at `first`, the first stage's
    `ViTConfig`; `distributed`: a data-parallel job or None)."""

    def __init__(self, config, schedule, steps_per_epoch: int, final_depth: int, first, distributed=None):
        self.config, self.schedule, self.steps_per_epoch = config, schedule, steps_per_epoch
        self.final_depth, self.first, self.distributed = final_depth, first, distributed
        cpu_forms.check_precision(config.precision)
        # one loss scale for the whole run (its graphs of every stage read the same Parameter)
        self.scaler = loss_scaler(config)
        start = schedule.stage(0)
        for field_name, asked, have in (("depth", start.depth, first.depth), ("width", start.width, first.width),
                                        ("image_size", start.size, first.image_size)):
            if asked not in (None, have):
                raise ConfigError(f"the schedule {schedule} starts at {field_name.replace('_', ' ')} {asked}, the "
                                  f"model has {have}: build it with {field_name}={asked}")

    def start(self, index: int) -> int:
        """The step stage `index` starts at."""
        start = self.schedule.stages[index].start
        return start if self.schedule.unit == "step" else start * self.steps_per_epoch

    def length(self) -> int:
        """The run's length in the schedule's unit (epochs or steps)."""
        return self.config.epochs * (self.steps_per_epoch if self.schedule.unit == "step" else 1)

    def build(self, model, ema: EMA, index: int, born: dict | None = None, step: int | None = None) -> StageGraphs:
        """Stage `index`'s optimizer and graphs (compiled when first run) for `model` and
        `ema`; `born`: when carried moments started (`{name: step}`; the others at the
        stage's start); `step`: the optimizer's step count now (None: the stage's start)."""
        model.set_precision(self.config.precision)  # again after a growth: its new cells too
        optimization = build_optimizer(model, self.config, self.steps_per_epoch, self.final_depth,
                                       offset=self.start(index), born=born, first=self.first)
        optimization.optimizer.global_step.set_data(
            ms.Tensor(np.array([self.start(index) if step is None else step], np.int32)))
        return StageGraphs(model=model, ema=ema, optimization=optimization,
                           train_step=self.train_step(model, optimization.optimizer),
                           evaluation=SharedForward(model), born=dict(born or {}))

    def train_step(self, model, optimizer):
        """The compiled train step: forward, loss, backward (gradients averaged over a
        data-parallel job, clipped if asked), the optimizer's update; the gates of an exact
        growth's ramp are set inside it. With a loss scale (`recipe.loss_scaler`) the loss
        is scaled before the backward pass and the gradients unscaled after it; a step whose
        gradients are not finite changes no weight (and a dynamic scale halves). Returns
        (loss, predictions)."""
        clip, scaler = self.config.clip_grad, self.scaler
        reducer = self.distributed.reducer(optimizer.parameters) if self.distributed else None
        ramped = [gate for gate in model.gates if not gate.requires_grad]  # set by the Trainer's ramp

        def forward(images, targets):
            logits = model(images)  # float32 in every precision (`set_precision`)
            loss = soft_cross_entropy(logits, targets)
            return (loss if scaler is None else scaler.scale(loss)), loss, logits

        gradients = ms.value_and_grad(forward, None, optimizer.parameters, has_aux=True)

        def update(grads):
            if clip:
                grads = ops.clip_by_global_norm(grads, clip)
            optimizer(grads)

        def learn(images, targets):
            (_, loss, logits), grads = gradients(images, targets)
            if reducer is not None:  # before the finite check: every process decides alike
                grads = reducer(grads)
            if scaler is None:
                update(grads)
            else:
                grads = scaler.unscale(grads)
                finite = all_finite(grads)
                if finite:
                    update(grads)
                else:  # skipped; the learning rate's clock still moves on, as the run's does
                    ops.assign_add(optimizer.global_step, ops.ones_like(optimizer.global_step))
                scaler.adjust(finite)
            return loss, logits.argmax(-1)

        if not ramped:  # no gate to set: the graph must not take one (an unused input slows every run)
            graph = compiled_for(model, learn)

            def step_without_gates(images, targets, gate):
                return graph(images, targets)
            return step_without_gates

        def step(images, targets, gate):
            set_gates(ramped, gate)  # inside the graph: a host-side set_data would not be seen
            return learn(images, targets)

        return compiled_for(model, step)

    def scale_state(self) -> dict:
        """The loss scale's state, to save with a run ({} without a loss scale)."""
        if self.scaler is None:
            return {}
        state = {"loss_scale": float(self.scaler.scale_value.asnumpy())}
        if hasattr(self.scaler, "counter"):  # dynamic: finite steps since the last change
            state["loss_scale_counter"] = int(self.scaler.counter.asnumpy())
        return state

    def load_scale_state(self, state: dict) -> None:
        """Take a saved `scale_state()` (a run resumed)."""
        if self.scaler is None or "loss_scale" not in state:
            return
        assign(self.scaler.scale_value, np.array(state["loss_scale"], np.float32))
        if hasattr(self.scaler, "counter") and "loss_scale_counter" in state:
            assign(self.scaler.counter, np.array(state["loss_scale_counter"], np.int32))

    # -- growth ------------------------------------------------------------------------------

    def grows(self, model, index: int) -> bool:
        """Whether stage `index` is deeper, wider or at a larger image size than `model`."""
        return any(_what_grows(self.schedule.stages[index], model).values())

    def _grow(self, index: int, model, ema: EMA, optimizer, step: int):
        """`expansion.grow` `model` (with `ema`, and `optimizer`'s moments where they are
        kept) into stage `index`, as this run grows: the one call both the growth and the
        graphs compiled ahead for it make."""
        stage = self.schedule.stages[index]
        grew = _what_grows(stage, model)
        # the moments restart at a depth growth (the reference's rule) unless carry_moments;
        # a width growth grows them with the weights, an image-size growth keeps them
        carry = self.config.carry_moments or grew["width"] or not grew["depth"]
        return grow(model, stage.depth if grew["depth"] else None, width=stage.width if grew["width"] else None,
                    image_size=stage.size if grew["size"] else None,
                    split=self.config.width_split, seed=self.config.seed * 1_000_003 + step,
                    ema=ema, exact=self.config.growth == "exact", gate=self.config.growth_gate,
                    mode=self.config.expansion_mode, moments=optimizer.moments() if carry else None)

    def grow_into(self, graphs: StageGraphs, index: int, step: int, prepared: StageGraphs | None = None) -> Growth:
        """Grow the run (`graphs`: what it trains with now) into stage `index` at `step`;
        `prepared`: the stage's graphs compiled ahead, used if the grown network is what
        they were prepared for. The model is grown in place (or takes the prepared layers)."""
        model, before = graphs.model, graphs.model.config
        growth = self._grow(index, model, graphs.ema, graphs.optimizer, step)
        born = growth.born(model)
        ahead = prepared is not None and prepared.fits(model, growth.ema, born)
        if ahead:  # compiled at the start: hand the values over, take the prepared layers
            prepared.take_values(model, growth.ema, growth.moments, step)
            model.adopt(prepared.model)  # the run's model goes on, in the prepared layers its graphs read
            prepared.model, new = model, prepared
        else:
            new = self.build(model, growth.ema, index, born=born, step=step)
            new.optimizer.take_moments({id(p): growth.moments[id(p)] for p in model.get_parameters()
                                        if id(p) in growth.moments})
        stage, after = self.schedule.stages[index], model.config
        record = {"event": "grow", "step": step, "from": before.depth, "to": after.depth, "order": growth.order,
                  "mode": self.config.expansion_mode, "growth": self.config.growth, "compiled_ahead": ahead}
        if growth.grew["width"]:
            record.update(width_from=before.width, width_to=after.width, heads_to=after.num_heads,
                          split=self.config.width_split)
        if growth.grew["size"]:
            record.update(size_from=before.image_size, size_to=stage.size)
        return Growth(graphs=new, growth=growth, record=record)

    def compile_ahead(self, graphs: StageGraphs, current: int, batch_size: int, eval_batch: int | None,
                      rearm=lambda: None) -> dict:
        """`{stage index: StageGraphs}` for every later stage the run still reaches, each
        grown from a zero-weight copy of the one before exactly as the run will grow, and
        compiled by running each graph once on zeros (`eval_batch`: the evaluation's padded
        batch size; None without evaluation). `rearm`: called after each graph that may have
        installed MindSpore's signal handlers."""
        prepared = {}
        model, ema, optimizer = graphs.model, graphs.ema, graphs.optimizer
        num_classes = model.config.num_classes
        for index in self.later(current):
            shape = model.structural_copy()
            copy = EMA(shape, ema.decay)
            copied = build_optimizer(shape, self.config, self.steps_per_epoch, self.final_depth,
                                     offset=self.start(index - 1), born=optimizer.born_by_name(),
                                     first=self.first).optimizer
            step = self.start(index)
            growth = self._grow(index, shape, copy, copied, step)
            stage = self.build(shape, growth.ema, index, born=growth.born(shape), step=step)
            _warm(stage, batch_size, num_classes, eval_batch)
            rearm()
            stage.compiled = True
            prepared[index] = stage
            model, ema, optimizer = shape, growth.ema, stage.optimizer
        return prepared

    def later(self, current: int) -> list:
        """The indices of the stages after `current` that the run still reaches."""
        return [index for index in range(current + 1, len(self.schedule.stages))
                if self.schedule.stages[index].start < self.length()]


def _what_grows(stage, model) -> dict:
    """`{'depth', 'width', 'size'}`: which of them `stage` takes beyond `model`'s."""
    return {"depth": model.depth < stage.depth,
            "width": stage.width is not None and model.config.width < stage.width,
            "size": stage.size is not None and model.config.image_size < stage.size}


def _warm(stage: StageGraphs, batch_size: int, num_classes: int, eval_batch: int | None) -> None:
    """Compile a stage's graphs by running each once on zeros. What these runs change is
    overwritten when the stage begins (`StageGraphs.take_values`)."""
    size = stage.model.config.image_size
    images = ms.Tensor(np.zeros((batch_size, 3, size, size), np.float32))
    targets = ms.Tensor(np.full((batch_size, num_classes), 1.0 / num_classes, np.float32))
    stage.train_step(images, targets, ms.Tensor(0.0, ms.float32))[0].asnumpy()
    stage.ema.update()
    if eval_batch:
        stage.evaluation.forward(ms.Tensor(np.zeros((eval_batch, 3, size, size), np.float32))).asnumpy()
