"""Width growth: a ViT made wider in the middle of training with its function unchanged.

The residual width D grows to D' = kD + r. The stream becomes `[x, ..., x, mean(x)]`: k
replicas of the old features, then r features holding each token's mean. What each
parameter's axes are comes from the model (`VisionTransformer.width_roles`):

* `write` rows (patch embedding, `cls`, `pos_embedding`, attention output, second MLP layer)
  are tiled k times, and the r residue rows are the mean row, so the stream keeps its form;
* LayerNorms keep the mean, and the variance scales by s = kD/D': the replicas' gains are
  tiled and scaled by sqrt(s), the residue's shifts are 0 (its normalised value is 0), and
  the epsilon stays (the grown model is an ordinary `ViTConfig`; it costs about 1e-7
  relative for r > 0, nothing for r = 0);
* `read` columns (q, k, v, the first MLP layer, the classifier) are split over the k replicas
  so that they sum to the old column; the residue's columns read zeros and start random;
* heads are copied whole (the head dimension is fixed; new head j copies head j mod h) and
  MLP neurons likewise; the layers that read them (`heads_in`, `hidden_in`) split the
  copies' columns.

The split (`SPLITS`) decides how the copies differ: `equal` (W/c each: they stay equal for
ever), `random` (fresh draws corrected to the sum, LEMON's projection) or `ema` (one copy
takes W - (c-1)/c E, the others E/c, E the EMA's weight: the free direction the paper's depth
growth uses). Each is exact. The EMA grows with the same maps and draws (so it stays exact
too), and AdamW's moments follow: split entries keep m and v, copied ones take m/c and v/c^2
(c copies; Adam's m/sqrt(v) is unchanged), new entries start at 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .config import SPLITS, ViTConfig
from .errors import ConfigError

COPIED = ("heads", "hidden")                      # rows copied whole
SPLIT = {"read": "residual", "heads_in": "heads", "hidden_in": "hidden"}
STREAM = ("write", "gain", "shift")               # rows on the residual stream
FAMILY = {"write": "residual", "gain": "residual", "shift": "residual", "read": "residual",
          "heads": "heads", "heads_in": "heads", "hidden": "hidden", "hidden_in": "hidden"}
INIT_STD = 0.02  # the draws of the `random` split and of the residue's columns: the model's initialisation


@dataclass(frozen=True)
class WidthMaps:
    """Where each new index comes from, for the three widths a ViT has: the residual
    stream (-1: a residue feature, the mean), the attention features (whole heads) and
    the MLP's neurons."""

    old: ViTConfig
    new: ViTConfig

    @classmethod
    def plan(cls, config: ViTConfig, width: int, num_heads: int | None = None,
             mlp_width: int | None = None) -> "WidthMaps":
        """The maps from `config` to `width` (heads follow at the same head dimension and
        the MLP keeps its ratio unless given); `ConfigError` for a width that cannot grow so."""
        problems = []
        head_dim = config.head_dim
        if num_heads is None:
            if width % head_dim:
                problems.append(f"width {width} is not a multiple of the head dimension {head_dim}: give num_heads")
            num_heads = max(width // head_dim, 1)
        if mlp_width is None:
            mlp_width = config.mlp_width * width // config.width
        for name, old, value in (("width", config.width, width), ("num_heads", config.num_heads, num_heads),
                                 ("mlp_width", config.mlp_width, mlp_width)):
            if not isinstance(value, int) or value < old:
                problems.append(f"{name} can only grow: {old} -> {value!r}")
        if not problems and width != num_heads * head_dim:
            problems.append(f"width {width} with {num_heads} heads changes the head dimension {head_dim} "
                            f"(new heads copy old ones whole): use {width // head_dim} heads for width {width}"
                            if width % head_dim == 0 else
                            f"width {width} is not a multiple of the head dimension {head_dim}")
        if problems:
            raise ConfigError("cannot grow the width: " + "; ".join(problems))
        new = dataclasses.replace(config, width=width, num_heads=num_heads, mlp_width=mlp_width)
        return cls(config, new)

    @property
    def variance_scale(self) -> float:
        """s = kD/D': the share of the new stream's variance the replicas carry."""
        d = self.old.width
        return (self.new.width // d) * d / self.new.width

    def sources(self, family: str) -> np.ndarray:
        """For each new index of `family` ('residual', 'heads', 'hidden'), its source (-1: residue)."""
        d, new = self.old.width, self.new.width
        index = np.arange(new)
        heads = np.arange(self.new.num_heads) % self.old.num_heads
        head_dim = self.old.head_dim
        return {"residual": np.where(index < (new // d) * d, index % d, -1),
                "heads": (heads[:, None] * head_dim + np.arange(head_dim)[None, :]).reshape(-1),
                "hidden": np.arange(self.new.mlp_width) % self.old.mlp_width}[family]

    def copies(self, family: str) -> np.ndarray:
        """For each new index, how many copies its source has (1 for a residue index)."""
        sources = self.sources(family)
        counts = np.bincount(sources[sources >= 0], minlength=1)
        return np.where(sources >= 0, counts[np.maximum(sources, 0)], 1)

    def grow_values(self, network, split: str = "random", seed: int = 0, ema=None) -> dict:
        """`{name: new array}` for every parameter of `network` (a `VisionTransformer`, or an
        EMA's network: the names keep its prefix). `ema`: the EMA's network, whose weights
        the `ema` split uses (without one, `network`'s own: an equal split). `seed` fixes the
        draws: grow the model and its EMA with the same seed and they stay consistent."""
        if split not in SPLITS:
            raise ConfigError(f"width split {split!r}: expected one of {', '.join(SPLITS)}")
        # only the `ema` split reads the averages (grown alongside, axis by axis)
        averages = dict(_values(ema)) if ema is not None and split == "ema" else None
        grown = {}
        for index, (parameter, axes) in enumerate(network.width_roles()):
            value = parameter.asnumpy().astype(np.float64)
            average = averages[index] if averages is not None else (value if split == "ema" else None)
            for axis, role in enumerate(axes):
                if role is None:
                    continue
                draws = None
                if role in SPLIT:
                    shape = list(value.shape)
                    shape[axis] = len(self.sources(FAMILY[role]))
                    draws = _truncated_normal(np.random.default_rng([seed, index, axis]), shape)
                grown_value = self._grow_axis(value, axis, role, split, draws, average)
                if average is not None:
                    average = self._grow_axis(average, axis, role, split, draws, average)
                value = grown_value
            grown[parameter.name] = value.astype(np.float32)
        return grown

    def grow_moments(self, network, moments: dict) -> dict:
        """AdamW's moments for the grown `network`: `moments` is `{name: (m, v, ...)}` of the
        old one; the same keys with grown `m`, `v` (split entries keep theirs, copied ones
        take m/c and v/c^2, new ones start at 0; what follows `v` is passed on)."""
        grown = {}
        for parameter, axes in network.width_roles():
            if parameter.name not in moments:
                continue
            m, v, *rest = moments[parameter.name]
            for axis, role in enumerate(axes):
                if role is None:
                    continue
                sources = self.sources(FAMILY[role])
                if role in SPLIT:
                    scale = np.where(sources >= 0, 1.0, 0.0)
                else:
                    scale = np.where(sources >= 0, 1.0 / self.copies(FAMILY[role]), 0.0)
                m = _take(m, axis, sources) * _along(scale, axis, m.ndim)
                v = _take(v, axis, sources) * _along(scale ** 2, axis, v.ndim)
            grown[parameter.name] = (m.astype(np.float32), v.astype(np.float32), *rest)
        return grown

    def _grow_axis(self, value, axis, role, split, draws, average):
        family = FAMILY[role]
        sources, copies = self.sources(family), self.copies(family)
        taken = _take(value, axis, sources)
        mean = np.mean(value, axis=axis, keepdims=True)
        residue = _along(sources < 0, axis, value.ndim)
        if role == "write":
            return np.where(residue, mean, taken)
        if role == "gain":
            return np.where(residue, mean, taken) * np.sqrt(self.variance_scale)
        if role == "shift":
            return np.where(residue, 0.0, taken)
        if role in COPIED:
            return taken
        # a split: the copies of each source sum to it; the residue's columns are the draws
        count = _along(copies, axis, value.ndim)
        if split == "equal":
            parts = taken / count
        elif split == "random":
            parts = draws - (_group_sum(draws, axis, sources) - taken) / count
        else:  # "ema": the first copy takes W - (c - 1)/c E, the others E/c
            first = _along(_first_occurrence(sources), axis, value.ndim)
            shared = _take(average, axis, sources) / count
            parts = np.where(first, taken - (count - 1) * shared, shared)
        return np.where(residue, draws if draws is not None else 0.0, parts)


def _values(network):
    return [(index, parameter.asnumpy().astype(np.float64)) for index, (parameter, _) in
            enumerate(network.width_roles())]


def _take(value, axis, sources):
    """`value` indexed by `sources` along `axis`; residue positions (-1) hold zeros."""
    taken = np.take(value, np.maximum(sources, 0), axis=axis)
    return np.where(_along(sources < 0, axis, value.ndim), 0.0, taken)


def _along(vector, axis, ndim):
    """A vector shaped to broadcast along `axis` of an `ndim`-array."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(vector).reshape(shape)


def _group_sum(values, axis, sources):
    """For each position, the sum of `values` over the positions with the same source.
    Every map here is `source = position mod n` (the residue, -1, only at the end), so the
    copies are whole blocks of n: summed by a reshape, not position by position."""
    n = int(sources.max()) + 1
    valid = int((sources >= 0).sum())
    moved = np.moveaxis(values, axis, 0)[:valid]
    padded = np.concatenate([moved, np.zeros((-valid % n,) + moved.shape[1:])]) if valid % n else moved
    sums = padded.reshape((-1, n) + moved.shape[1:]).sum(0)
    return np.moveaxis(np.take(sums, np.maximum(sources, 0), axis=0), 0, axis)


def _first_occurrence(sources):
    seen, first = set(), np.zeros(len(sources), bool)
    for i, source in enumerate(sources):
        if source >= 0 and source not in seen:
            seen.add(source)
            first[i] = True
    return first


def _truncated_normal(rng, shape):
    values = rng.standard_normal(shape, dtype=np.float32)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
        outside = np.abs(values) > 2
    return values.astype(np.float64) * INIT_STD
