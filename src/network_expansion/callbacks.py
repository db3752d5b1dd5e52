"""Network expansion inside `mindspore.train.Model.train`: a callback that grows the
network on schedule, with its EMA and the optimizer's moments.

    from mindspore.train import Model
    from network_expansion.callbacks import Expansion

    model = Model(network, loss_fn, optimizer)
    expansion = Expansion(model, "6,12", epochs=300, optimizer=lambda params: nn.AdamWeightDecay(params, lr))
    model.train(300, dataset, callbacks=[expansion, LossMonitor()])
    expansion.ema.network  # the averaged weights, grown with the network

At the end of each epoch after which the schedule starts a new stage, the callback grows
the network (`expansion.grow`: by default exact, the new blocks behind learned gates that
start at 0, so the function the network computes does not change at the growth), builds
a new optimizer over the grown parameters with `optimizer(parameters)` and carries the
optimizer's state (moments, step count) over by name, and has `Model` build its training
graph again. MindSpore's `Model` has no public way to change its network while it trains:
the callback sets `Model`'s `_network`, `_optimizer` and `_train_network` and the run's
`cb_params` (`train_network`, `optimizer`), which `Model.train` reads at every step and
`ModelCheckpoint` when it saves (tested with MindSpore 2.10). At the end of training the
gates are folded away, so the weights have the released names again.
"""

from __future__ import annotations

import numpy as np
from mindspore.train import Callback

from .ema import EMA
from .errors import ConfigError
from .expansion import grow
from .schedule import ExpansionSchedule

GROWTHS = ("exact", "reference")


class Expansion(Callback):
    """Grow `model`'s network on `schedule` (`"6,12"`, `"6x384,12x768"` or an
    `ExpansionSchedule`) over `epochs` epochs inside `Model.train`.

    Args:
        model: the `mindspore.train.Model` that trains a `VisionTransformer`.
        schedule: depths (and widths) by stage, each stage an even share of `epochs`
            unless an `ExpansionSchedule` gives the starts.
        epochs: the epochs `Model.train` runs (the schedule's length).
        optimizer: `callable(parameters) -> Optimizer`, for the grown network; its state is
            carried over from the optimizer before by name.
        growth: 'exact' (gated new blocks, learned from 0) or 'reference' (the paper's: EMA
            copies, no gates).
        ema_decay: the EMA's decay, updated every step (None: no EMA; new blocks then copy
            the trained blocks themselves).
    """

    def __init__(self, model, schedule, epochs: int, optimizer, *, growth: str = "exact",
                 ema_decay: float | None = 0.9999, mode: str = "insert"):
        super().__init__()
        if growth not in GROWTHS:
            raise ConfigError(f"growth {growth!r}: expected one of {', '.join(GROWTHS)}")
        if not callable(optimizer):
            raise ConfigError("optimizer must be a callable that builds the optimizer for the grown network's "
                              "parameters, e.g. lambda params: nn.AdamWeightDecay(params, 1e-3)")
        self.schedule = schedule if isinstance(schedule, ExpansionSchedule) else ExpansionSchedule.of(schedule, epochs)
        if self.schedule.unit != "epoch" or any(size is not None for size in self.schedule.sizes):
            raise ConfigError("the Model callback grows at epoch ends, in depth and width: a schedule in steps or "
                              "over image sizes needs the package's Trainer")
        self.model, self.build_optimizer, self.growth, self.mode = model, optimizer, growth, mode
        self.network = _network_of(model)
        first = self.schedule.stage(0)
        if (first.depth, first.width or self.network.config.width) != (self.network.depth, self.network.config.width):
            raise ConfigError(f"the schedule starts at depth {first.depth}"
                              f"{f', width {first.width}' if first.width else ''}; the network has depth "
                              f"{self.network.depth}, width {self.network.config.width}: build it in the first "
                              f"stage's shape")
        self.ema = EMA(self.network, ema_decay) if ema_decay is not None else None
        self.growths = []  # what each growth did: {'epoch', 'from', 'to', 'order', 'carried'}

    # -- MindSpore's hooks ----------------------------------------------------------

    def on_train_step_end(self, run_context):
        if self.ema is not None:
            self.ema.update()

    def on_train_epoch_end(self, run_context):
        params = run_context.original_args()
        done = params.cur_epoch_num  # epochs finished; the next epoch's index
        stage = self.schedule.stage(done)  # past the last epoch: the last stage, nothing to grow
        if (stage.depth, stage.width or self.network.config.width) == (self.network.depth, self.network.config.width):
            return
        self._grow(stage, done, params)

    def on_train_end(self, run_context):
        self.network.fold_gates()
        if self.ema is not None:
            self.ema.network.fold_gates()

    # -- the growth -----------------------------------------------------------------

    def _grow(self, stage, epoch: int, params) -> None:
        old_optimizer = self.model._optimizer
        old_state = {p.name: p for p in old_optimizer.get_parameters()} if old_optimizer is not None else {}
        before = self.network.depth
        names_before = {id(parameter): parameter.name for parameter in self.network.get_parameters()}
        width = stage.width if stage.width and stage.width != self.network.config.width else None
        growth = grow(self.network, stage.depth, width=width, ema=self.ema, exact=self.growth == "exact",
                      gate="learned", mode=self.mode)
        if self.ema is not None:
            self.ema = growth.ema
        optimizer = self.build_optimizer(self.network.trainable_params())
        # a trained block keeps its Parameters through the growth, renamed to its new place
        renamed = {p.name: names_before[id(p)] for p in self.network.get_parameters() if id(p) in names_before}
        carried = _carry_state(old_state, optimizer, renamed, self.network)
        self.model._network = self.network
        self.model._optimizer = optimizer
        self.model._train_network = self.model._build_train_network()
        params.train_network = self.model._train_network
        params.optimizer = optimizer
        self.growths.append({"epoch": epoch, "from": before, "to": self.network.depth, "order": growth.order,
                             "carried": carried})


def checkpoint_config(network, **kwargs):
    """`mindspore.train.CheckpointConfig(**kwargs)` whose files record what their tensors do
    not say (the head count, the GELU form, the LayerNorm epsilon, the class names), as
    `save_weights` does: `create_network(pretrained=file)` then rebuilds the network that wrote
    it, where a plain ModelCheckpoint file of, say, 4 heads of width 48 would load silently
    into 12. (A growth in width changes the head count: make the ModelCheckpoint after it.)"""
    from mindspore.train import CheckpointConfig

    from .formats import METADATA_KEY
    from .weights import architecture_of, weights_metadata

    info = {METADATA_KEY: weights_metadata(architecture_of(network), getattr(network, "class_names", None))}
    extra = list(kwargs.pop("append_info", None) or [])
    return CheckpointConfig(**kwargs, append_info=[info, *extra])


def _network_of(model):
    from .model import VisionTransformer

    network = model._network
    while not isinstance(network, VisionTransformer) and hasattr(network, "_backbone"):
        network = network._backbone
    if not isinstance(network, VisionTransformer):
        raise ConfigError(f"the Model trains a {type(network).__name__}: the Expansion callback grows a "
                          f"network_expansion VisionTransformer (give it to Model as the network, with loss_fn)")
    return network


def _carry_state(old: dict, optimizer, renamed: dict, network) -> int:
    """Copy the old optimizer's state into `optimizer`'s, by name: a moment of parameter P is
    named `<prefix>.P` (AdamWeightDecay: `adam_m.P`, Adam: `moment1.P`), and `renamed` gives
    each parameter that went through the growth its name before it (a trained block moved to
    its new place); a new block's state starts at zero. State without a parameter's name (the
    step count) is copied as it is; state whose shape a width growth changed starts at zero.
    Returns how many tensors were carried (the network's own weights, which an optimizer
    also holds, are not state)."""
    from mindspore import Tensor

    weights = {id(p) for p in network.get_parameters()}
    carried = 0
    for parameter in optimizer.get_parameters():
        if id(parameter) in weights:
            continue
        prefix, _, of = parameter.name.partition(".")
        source = parameter.name if not of else (f"{prefix}.{renamed[of]}" if of in renamed else None)
        if source is None or source not in old or tuple(old[source].shape) != tuple(parameter.shape):
            continue
        parameter.set_data(Tensor(np.ascontiguousarray(old[source].asnumpy()), dtype=parameter.dtype))
        carried += 1
    return carried
