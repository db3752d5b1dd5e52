"""Network expansion (Ding et al., CVPR 2023): grow a ViT in depth during training.

As the authors' code does it (`huawei-noah/Efficient-Computing`, TrainingAcceleration/
NetworkExpansion): training runs in stages of fixed width and growing depth, e.g. 6 -> 12
blocks; an exponential moving average (EMA) of the weights is kept; at the first epoch of
a stage the model grows by `k` blocks, each an EMA copy of one of the last `k` trained
blocks:

* `insert` (the default): each of the last k blocks is followed by its EMA copy;
  6 -> 12 gives [b0, e0, b1, e1, ..., b5, e5], 6 -> 9 gives [b0, b1, b2, b3, e3, b4, e4, b5, e5];
* `stack`: the EMA copies of the last k blocks are appended after the last block.

Then the drop-path rates are spread again over the new depth (`set_blocks` does it) and
the trainer starts a fresh EMA and rebuilds its optimizer.

That changes the network's function at the growth (the accuracy dips). Exact growth
(`grow(..., exact=True)`) starts each new block the same way but behind gates,
`x + g f(x)` on both of its residuals with `g = 0`, so the logits are unchanged; `g` then
ramps to 1 over a number of steps (`Ramp`, set inside the train step) or is learned from 0
(`gate='learned'`), and is folded into the branch's last Dense afterwards
(`VisionTransformer.fold_gates`), which leaves the released names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mindspore import Tensor, ops

from .config import GATES, MODES
from .ema import EMA
from .errors import ConfigError
from .model import VisionTransformer
from .schedule import shaped
from .width import WidthMaps

@dataclass(frozen=True)
class Ramp:
    """A gate schedule: 0 at the growth, `(k + 1) / length` at the k-th step after it
    (`start` is the step count at the growth), 1 from step `start + length - 1` on.

    >>> [Ramp(start=10, length=4).value(step) for step in (10, 11, 12, 13, 14)]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """

    start: int
    length: int

    def __post_init__(self):
        if not isinstance(self.length, int) or self.length < 1:
            raise ConfigError(f"a gate ramp lasts a whole number of steps >= 1, got {self.length!r}")

    def value(self, step: int) -> float:
        """The gates' value in the forward of step `step`."""
        return min(1.0, (step - self.start + 1) / self.length)

    def done(self, step: int) -> bool:
        """Whether step `step` ran with the gates at 1 (they can be folded after it)."""
        return self.value(step) >= 1.0


@dataclass
class Growth:
    """What `grow` did: the new block order (labels), the EMA of the grown model, the
    optimizer's moments of the parameters that existed before, grown with them (empty
    unless carried; for `AdamW.take_moments`), the gates of the new blocks (empty unless
    exact; `set_gates` moves ramped ones), and which of depth, width and size grew."""

    order: list
    ema: EMA
    moments: dict = field(default_factory=dict)  # id(parameter) -> (m1, m2, the step they started)
    gates: list = field(default_factory=list)
    grew: dict = field(default_factory=dict)     # {'depth': bool, 'width': bool, 'size': bool}

    def born(self, network) -> dict:
        """`{name: step}`: when the carried moments started, for `build_optimizer(born=...)`
        (their bias correction goes on counting)."""
        return {p.name: self.moments[id(p)][2] for p in network.get_parameters() if id(p) in self.moments}


def grow(network: VisionTransformer, depth: int | None = None, *, width: int | None = None,
         num_heads: int | None = None, mlp_width: int | None = None, image_size: int | None = None,
         split: str = "random", seed: int = 0, ema: EMA | None = None, exact: bool = False, gate: str = "ramp",
         mode: str = "insert", moments: dict | None = None) -> Growth:
    """Grow `network` to `depth` blocks, to `width` and/or to `image_size` (with its EMA):
    the one place a growth happens.

    Width first (`width.WidthMaps`): the residual stream, heads (`num_heads`; default: the
    same head dimension) and MLP (`mlp_width`; default: the same ratio) grow with the
    function unchanged, always; `split` ('random', 'ema', 'equal') says how copied columns
    share their weight, `seed` fixes its draws. The EMA grows with the same maps and draws,
    and so do the optimizer's `moments` where given (`AdamW.moments()`: {id(parameter):
    (m, v, born)}; `Growth.moments` holds them grown, keyed by the grown parameters).

    Then the image size: the position embeddings of the network and of its EMA are
    resampled bicubically to the new patch grid (not function-preserving: a picture at
    another resolution is another input); their moments start afresh, the others' are kept.

    Then depth: new blocks are EMA copies of the last trained ones (`expand`; without an
    `ema`, copies of the blocks themselves, and `Growth.ema` has decay 0), in `mode` order.
    `exact=True` puts each new block behind gates at 0 (`x + g f(x)` on both residuals), so
    the network's function is unchanged; `gate='ramp'`: the gates are set by a schedule
    (`Ramp`, `set_gates`), `'learned'`: they are trained from 0. Gates left from an earlier
    growth are folded first. The EMA: a fresh one from the grown network (the reference
    code's choice), or, when the function is unchanged (exact, or width only), the old
    averages grown the same way. With `moments`, those of the parameters that existed are
    kept (the reference code drops them).

    >>> growth = grow(network, 12, ema=ema, exact=True)                               # doctest: +SKIP
    >>> growth = grow(network, width=768, ema=ema, moments=optimizer.moments())       # doctest: +SKIP
    """
    if gate not in GATES:
        raise ConfigError(f"gate {gate!r}: expected one of {', '.join(GATES)}")
    if depth is None and width is None and num_heads is None and mlp_width is None and image_size is None:
        raise ConfigError("grow needs a depth, a width (num_heads, mlp_width), an image size, or several")
    maps = None
    if width is not None or num_heads is not None or mlp_width is not None:
        maps = WidthMaps.plan(network.config, width or network.config.width, num_heads, mlp_width)
    saved = [_saved(net) for net in (network, ema.network if ema is not None else None) if net is not None]
    try:
        return _grow(network, depth, image_size, maps, split, seed, ema, exact, gate, mode, moments)
    except BaseException:  # all or nothing: a growth that fails leaves the networks as they were
        for net, state in saved:
            _restore(net, state)
        raise


def _saved(network: VisionTransformer) -> tuple:
    """What `_restore` needs to put `network` back: its shape and a copy of its values."""
    return network, (network.structure(), {p.name: p.asnumpy().copy() for p in network.get_parameters()})


def _restore(network: VisionTransformer, state: tuple) -> None:
    structure, values = state
    prefix = network.cls.name[:-len("cls")]
    restored = VisionTransformer.of_structure(structure)
    network.adopt(restored)
    network.update_parameters_name(prefix)  # taking cells renames their parameters: the prefix again
    for parameter in network.get_parameters():
        parameter.set_data(Tensor(values[parameter.name]))


def _grow(network, depth, image_size, maps, split, seed, ema, exact, gate, mode, moments) -> Growth:
    network.fold_gates()
    if ema is None:
        ema = EMA(network, 0.0)
    else:
        ema.network.fold_gates()
    before = network.config
    moments = dict(moments or {})
    if maps is not None and maps.new != maps.old:
        moments = _widen(network, ema, maps, split, seed, moments)
    if image_size is not None and image_size != network.config.image_size:
        moments = _resize(network, ema, image_size, moments)
    order = [f"b{i}" for i in range(network.depth)]
    if depth is not None and depth != network.depth:
        order = expand(network, ema, depth, mode)
    new_blocks = [i for i, label in enumerate(order) if label[0] == "e"]
    gates = network.add_gates(new_blocks, trainable=gate == "learned") if exact and new_blocks else []
    grown = EMA(network, ema.decay)
    if exact or not new_blocks:
        grown.take_grown(ema, order)
    after = network.config
    grew = {"depth": after.depth > before.depth, "width": after.width > before.width,
            "size": after.image_size > before.image_size}
    return Growth(order=order, ema=grown, moments=moments, gates=gates, grew=grew)


def _widen(network, ema, maps, split, seed, moments) -> dict:
    """Widen `network` and `ema.network` in place (new Parameter objects, the same names);
    returns `moments` (`{id(parameter): (m, v, born)}`) grown and keyed by the new parameters."""
    grown_moments = maps.grow_moments(network, {p.name: moments[id(p)] for p in network.get_parameters()
                                                if id(p) in moments})
    values = maps.grow_values(network, split, seed, ema=ema.network)
    averages = maps.grow_values(ema.network, split, seed, ema=ema.network)
    network.rebuild(maps.new, values)
    ema.network.rebuild(maps.new, averages)
    return {id(p): grown_moments[p.name] for p in network.get_parameters() if p.name in grown_moments}


def _resize(network, ema, image_size, moments) -> dict:
    """`network` and `ema.network` for images of `image_size` (their position embeddings
    resampled), in place; returns `moments` keyed by the new parameters, without those of
    the position embeddings."""
    from .weights import resample_positions

    config = shaped(network.config, network.depth, size=image_size)
    if image_size < network.config.image_size:
        raise ConfigError(f"cannot shrink the image size from {network.config.image_size} to {image_size}")
    names = {id(p): p.name for p in network.get_parameters()}
    kept = {names[key]: value for key, value in moments.items() if key in names}
    for each in (network, ema.network):
        each.resize(config, resample_positions(each.pos_embedding.asnumpy(), (1, config.num_patches + 1, config.width)))
    kept.pop(network.pos_embedding.name, None)
    return {id(p): kept[p.name] for p in network.get_parameters() if p.name in kept}


def set_gates(gates, value) -> bool:
    """Set every gate of `gates` to `value` (a scalar Tensor) inside a compiled step, where a
    host-side `set_data` would not be seen (docs/log/expansion.md)."""
    for gate in gates:
        ops.assign(gate, value)
    return True


def expand(model: VisionTransformer, ema: EMA, depth: int, mode: str = "insert") -> list:
    """Grow `model` to `depth` blocks with EMA copies of its last blocks; returns the new order.

    The order is returned as labels (`'b3'` trained block 3, `'e3'` its EMA copy), the
    way the method describes it.
    """
    if mode not in MODES:
        raise ConfigError(f"expansion mode {mode!r}: expected one of {', '.join(MODES)}")
    n = model.depth
    k = depth - n
    if not 0 < k <= n:
        raise ConfigError(f"cannot grow {n} blocks to {depth}: the growth must be 1 to {n} blocks")
    trained = model.blocks
    copies = {i: ema.block_copy(i) for i in range(n - k, n)}
    if mode == "insert":
        order = [label for i in range(n) for label in ((f"b{i}", f"e{i}") if i in copies else (f"b{i}",))]
    else:
        order = [f"b{i}" for i in range(n)] + [f"e{i}" for i in range(n - k, n)]
    model.set_blocks([trained[int(label[1:])] if label[0] == "b" else copies[int(label[1:])] for label in order])
    return order
