"""The Vision Transformer of the released NetworkExpansion checkpoint, in plain MindSpore.

The architecture is the MindSpore model zoo's ViT (`official/cv/VIT/src/vit.py`), which
the released checkpoint was trained with. Its parameter names are an API: the hub client
loads weights by name, non-strictly, so a single renamed parameter silently stays random.
That is why the attributes below carry the zoo's names (`stem`, `body.layers`, `cell`,
`to_q`, `ff1.dense`, ...) while the classes carry readable ones. The names, in full:

    cls                                            (1, 1, width)
    pos_embedding                                  (1, patches + 1, width)
    stem.patch_to_embedding.dense.weight|bias      patch embedding (a Dense layer)
    body.layers.{i}.0.cell.0.gamma|beta            LayerNorm before attention
    body.layers.{i}.0.cell.1.to_q|to_k|to_v|to_out.weight|bias
    body.layers.{i}.1.cell.0.gamma|beta            LayerNorm before the MLP
    body.layers.{i}.1.cell.1.ff1|ff2.dense.weight|bias
    norm.gamma|beta                                final LayerNorm
    head.0.weight|bias                             classifier on the cls token

Depth is not fixed: network expansion grows the model by inserting blocks between
others (`set_blocks`), after which the names run `body.layers.0 .. depth-1` again. While
a new block enters by exact growth (`expansion.grow(exact=True)`), each of its two
residuals holds a gate, `body.layers.{i}.0.gate` and `body.layers.{i}.1.gate` (a scalar
that scales the branch: 0 at growth); `fold_gates` folds them into the branch's last
Dense, after which the names are the released ones again.

Every cell computes in MindSpore's own ops, what GPU and Ascend kernels are built for. On
the CPU the package's graphs run each block in forms measured faster there (`cpu_forms.py`,
the same function and the same parameters): `TransformerBlock.form` says which, set by
`cpu_forms.applied` for the package's own graphs only; a graph of your own runs these.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype

try:
    from . import cpu_forms
    from .config import PRECISIONS, ViTConfig
    from .errors import ConfigError, PrecisionError
except ImportError:  # imported as the top-level module `model`: MindSpore's O1 (`rewrite`) does that
    from network_expansion import cpu_forms
    from network_expansion.config import PRECISIONS, ViTConfig
    from network_expansion.errors import ConfigError, PrecisionError


def is_classifier_name(name: str) -> bool:
    """Whether a checkpoint name belongs to the head (of any class count)."""
    return name.startswith("head.")


def source_name(name: str, order: list) -> str:
    """The name that parameter `name` of a network grown in `order` came from in the
    network before the growth (`order[i]`: 'b3' for old block 3 at position i, 'e3' for
    its copy); any prefix (an EMA's `ema.`) is kept; a gate has no source.

    >>> source_name("ema.body.layers.3.1.cell.0.gamma", ["b0", "e0", "b1", "e1"])
    'ema.body.layers.1.1.cell.0.gamma'
    """
    prefix, found, rest = name.partition("body.layers.")
    if not found:
        return name
    index, _, tail = rest.partition(".")
    return f"{prefix}body.layers.{order[int(index)][1:]}.{tail}"


def fields_from_shapes(shapes: dict) -> dict:
    """The `ViTConfig` fields a checkpoint's `{name: shape}` says: class count (0 without a
    head), depth, width, MLP width, and patch and image size (RGB input, square images).
    A tensor of another rank than the network's says nothing (loading reports its shape)."""
    def dim(name, rank, axis):
        shape = shapes.get(name)
        return int(shape[axis]) if shape is not None and len(shape) == rank else None

    fields = {"num_classes": dim("head.0.weight", 2, 0) or 0}
    depth = len({name.split(".")[2] for name in shapes if name.startswith("body.layers.")})
    if depth:
        fields["depth"] = depth
    if dim("cls", 3, 2):
        fields["width"] = dim("cls", 3, 2)
    if dim("body.layers.0.1.cell.1.ff1.dense.weight", 2, 0):
        fields["mlp_width"] = dim("body.layers.0.1.cell.1.ff1.dense.weight", 2, 0)
    stem, positions = dim("stem.patch_to_embedding.dense.weight", 2, 1), dim("pos_embedding", 3, 1)
    if stem and positions:
        patch = int(round((stem / 3) ** 0.5))
        grid = int(round((positions - 1) ** 0.5))
        if 3 * patch * patch == stem and grid * grid == positions - 1 and patch:
            fields["patch_size"], fields["image_size"] = patch, grid * patch
    return fields


def initializer(seed=None) -> np.random.Generator:
    """The generator a network draws its initial weights from: NumPy's PCG64 seeded with
    `seed`, or, without one, from NumPy's global state (which `mindspore.set_seed` seeds)."""
    return np.random.default_rng(np.random.randint(2**31) if seed is None else seed)


class NoDraws:
    """Stands in for the generator while a network is built only to be overwritten by
    loaded weights: every weight starts at zero, nothing is drawn (1.5 s for ViT-B)."""


def truncated_normal(shape, rng, std: float = 0.02) -> Tensor:
    """N(0, std) cut at two standard deviations (the timm/DeiT initialisation); zeros
    when `rng` is `NoDraws`. Drawn with NumPy: four times faster than MindSpore's own
    TruncatedNormal for ViT-B."""
    if isinstance(rng, NoDraws):
        return Tensor(np.zeros(shape, np.float32))
    values = rng.standard_normal(shape, dtype=np.float32)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
        outside = np.abs(values) > 2
    return Tensor(values * np.float32(std))


def _dense(in_width: int, out_width: int, rng) -> nn.Dense:
    return nn.Dense(in_width, out_width, weight_init=truncated_normal((out_width, in_width), rng),
                    bias_init="zeros")


class TokenDense(nn.Cell):
    """A Dense layer applied to every token; the zoo's `BatchDense` (hence `.dense`)."""

    def __init__(self, in_width: int, out_width: int, rng):
        super().__init__()
        self.dense = _dense(in_width, out_width, rng)

    def construct(self, tokens):
        return self.dense(tokens)


class PatchEmbedding(nn.Cell):
    """Cut the image into patches and project each: a stride-p convolution as a Dense."""

    def __init__(self, config: ViTConfig, rng):
        super().__init__()
        self.patch_size = config.patch_size
        # Flattened in (channel, row, column) order, so the weight [width, C*p*p] is a
        # Conv2d weight [width, C, p, p] reshaped.
        self.patch_to_embedding = TokenDense(config.in_channels * config.patch_size ** 2, config.width, rng)

    def construct(self, images):
        b, c, h, w = images.shape
        p = self.patch_size
        patches = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, (h // p) * (w // p), c * p * p)
        return self.patch_to_embedding(patches)


class Attention(nn.Cell):
    """Multi-head self-attention with separate q, k, v and output projections."""

    def __init__(self, config: ViTConfig, rng):
        super().__init__()
        self.num_heads = config.num_heads
        self.scale = config.head_dim ** -0.5
        self.to_q = _dense(config.width, config.width, rng)
        self.to_k = _dense(config.width, config.width, rng)
        self.to_v = _dense(config.width, config.width, rng)
        self.to_out = _dense(config.width, config.width, rng)
        self.attention_dropout = nn.Dropout(p=config.attention_dropout)
        self.dropout = nn.Dropout(p=config.dropout)
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.mix = ops.BatchMatMul()

    def construct(self, tokens):
        batch, count, width = tokens.shape
        q = self.split_heads(self.to_q(tokens)) * self.scale
        k, v = self.split_heads(self.to_k(tokens)), self.split_heads(self.to_v(tokens))
        scores = self.scores(q, k)  # (batch, heads, count, count)
        if scores.dtype != mstype.float32:  # in mixed precision the softmax computes in float32, as O2 keeps it
            weights = ops.softmax(scores.astype(mstype.float32), axis=-1).astype(scores.dtype)
        else:
            weights = ops.softmax(scores, axis=-1)
        weights = self.attention_dropout(weights)
        mixed = self.mix(weights, v).transpose(0, 2, 1, 3).reshape(batch, count, width)
        return self.dropout(self.to_out(mixed))

    def split_heads(self, x):
        """(batch, count, width) -> (batch, heads, count, width / heads)."""
        batch, count, width = x.shape
        return x.reshape(batch, count, self.num_heads, width // self.num_heads).transpose(0, 2, 1, 3)

    @property
    def output_layer(self) -> nn.Dense:
        """The branch's last Dense: a gate folds into it."""
        return self.to_out

    def tensors(self) -> tuple:
        """The parameters, in the order a form of the block takes them (`cpu_forms`)."""
        return (self.to_q.weight, self.to_q.bias, self.to_k.weight, self.to_k.bias,
                self.to_v.weight, self.to_v.bias, self.to_out.weight, self.to_out.bias)


class FeedForward(nn.Cell):
    """The MLP: Dense, GELU (the zoo's tanh approximation, or exact), Dense."""

    def __init__(self, config: ViTConfig, rng):
        super().__init__()
        self.ff1 = TokenDense(config.width, config.mlp_width, rng)
        self.activation = nn.GELU(approximate=config.gelu_approximate)
        self.ff2 = TokenDense(config.mlp_width, config.width, rng)
        self.dropout = nn.Dropout(p=config.dropout)

    def construct(self, tokens):
        return self.dropout(self.ff2(self.dropout(self.activation(self.ff1(tokens)))))

    @property
    def output_layer(self) -> nn.Dense:
        """The branch's last Dense: a gate folds into it."""
        return self.ff2.dense

    def tensors(self) -> tuple:
        """The parameters, in the order a form of the block takes them (`cpu_forms`)."""
        return self.ff1.dense.weight, self.ff1.dense.bias, self.ff2.dense.weight, self.ff2.dense.bias


class DropPath(nn.Cell):
    """Stochastic depth: while training, the whole branch of a sample is dropped with
    probability `rate` (and the kept ones scaled by 1 / (1 - rate))."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = float(rate)

    def construct(self, branch):
        if not self.training or self.rate == 0.0:
            return branch
        keep = 1.0 - self.rate
        kept = ops.bernoulli(ops.zeros((branch.shape[0], 1, 1), branch.dtype), p=keep)
        return branch * (kept / keep)


class PreNormResidual(nn.Cell):
    """`x + f(LN(x))`; the zoo's ResidualCell around a `[LayerNorm, f]` sequence (`.cell`).

    With a gate (`add_gate`): `x + g f(LN(x))`, `g` a scalar Parameter named `gate`, which
    exists only while gated (so an ungated residual has exactly the released names).
    """

    def __init__(self, config: ViTConfig, branch: nn.Cell, drop_path_rate: float):
        super().__init__()
        self.cell = nn.SequentialCell([
            nn.LayerNorm((config.width,), epsilon=config.layer_norm_eps), branch])
        self.drop_path = DropPath(drop_path_rate)
        self.gated = False

    def construct(self, tokens):
        branch = self.cell(tokens)
        if self.gated:
            branch = branch * self.gate.astype(branch.dtype)
        return tokens + self.drop_path(branch)

    @property
    def norm(self) -> nn.LayerNorm:
        return self.cell[0]

    @property
    def branch(self) -> nn.Cell:
        return self.cell[1]

    def add_gate(self, value: float = 0.0, trainable: bool = False) -> Parameter:
        """Scale the branch by a new gate (`trainable`: a learned scale; otherwise set by a
        schedule). Rename the network's parameters afterwards (`update_parameters_name`)."""
        if self.gated:
            raise ConfigError("this residual already has a gate; fold it first")
        self.gate = Parameter(Tensor(np.array(value, np.float32)), name="gate", requires_grad=trainable)
        self.gated = True
        return self.gate

    def fold_gate(self) -> None:
        """`x + g f(x)` -> `x + f'(x)`: `g` scales the branch's last Dense (nothing for g = 1),
        and the gate is gone. The same function, up to float rounding when g != 1."""
        if not self.gated:
            return
        value = float(self.gate.asnumpy())
        if value != 1.0:
            layer = self.branch.output_layer
            for parameter in (layer.weight, layer.bias):
                parameter.set_data(Tensor(parameter.asnumpy() * np.float32(value)))
        del self.gate
        self.gated = False


class TransformerBlock(nn.SequentialCell):
    """One pre-norm block: the attention residual (`.0`), then the MLP residual (`.1`)."""

    def __init__(self, config: ViTConfig, drop_path_rate: float = 0.0, rng=None):
        rng = rng if rng is not None else initializer()
        super().__init__([
            PreNormResidual(config, Attention(config, rng), drop_path_rate),
            PreNormResidual(config, FeedForward(config, rng), drop_path_rate),
        ])
        # None: MindSpore's own forms (what every device runs, and a graph of your own);
        # else the constants of the CPU's faster forms of this block, set for a graph the
        # package compiles (`cpu_forms.applied`)
        self.form = None

    def construct(self, tokens):
        if self.form is None:
            return self[1](self[0](tokens))
        return cpu_forms.block(tokens, self.tensors(), self.drop_path_rates(), self.form, self.training)

    def tensors(self) -> tuple:
        """What a form of the block computes with: (LayerNorm gains and shifts, the
        attention's parameters, the MLP's, the two gates or None)."""
        attention, mlp = self[0], self[1]
        attention_gate, mlp_gate = None, None
        if attention.gated:
            attention_gate = attention.gate
        if mlp.gated:
            mlp_gate = mlp.gate
        return ((attention.norm.gamma, attention.norm.beta, mlp.norm.gamma, mlp.norm.beta),
                attention.branch.tensors(), mlp.branch.tensors(), (attention_gate, mlp_gate))

    def drop_path_rates(self) -> tuple:
        return self[0].drop_path.rate, self[1].drop_path.rate

    def set_drop_path_rate(self, rate: float) -> None:
        for residual in self:
            residual.drop_path.rate = float(rate)

    @property
    def gates(self) -> list:
        """The gates of its residuals (empty unless the block is entering by exact growth)."""
        return [residual.gate for residual in self if residual.gated]


class Transformer(nn.Cell):
    """The stack of blocks; `layers` may grow (see `VisionTransformer.set_blocks`)."""

    def __init__(self, blocks):
        super().__init__()
        self.layers = nn.CellList(blocks)

    def construct(self, tokens):
        for block in self.layers:
            tokens = block(tokens)
        return tokens


class VisionTransformer(nn.Cell):
    """ViT with cls-token pooling, named exactly as the released checkpoint.

    `construct(images)` takes float NCHW images normalised as in `preprocess` and
    returns logits (or pooled features when `num_classes == 0`).
    """

    def __init__(self, config: ViTConfig | None = None, seed: int | None = None, *, initialize: bool = True):
        """`initialize=False`: every weight starts at zero, for a network whose weights are
        all loaded next (`create_network(pretrained=...)`); blocks and heads made later
        (`new_block`, `reset_classifier`) are drawn from `seed` as usual."""
        super().__init__()
        self.config = config or ViTConfig()
        c = self.config
        # Initial weights come from this generator: the same seed, the same network.
        self._rng = initializer(seed) if initialize else NoDraws()
        self.stem = PatchEmbedding(c, self._rng)
        self.cls = Parameter(truncated_normal((1, 1, c.width), self._rng), name="cls")
        self.pos_embedding = Parameter(truncated_normal((1, c.num_patches + 1, c.width), self._rng),
                                       name="pos_embedding")
        self.dropout = nn.Dropout(p=c.dropout)
        self.body = Transformer([TransformerBlock(c, rate, self._rng) for rate in c.drop_path_rates()])
        self.norm = nn.LayerNorm((c.width,), epsilon=c.layer_norm_eps)
        self.head = self._new_head(c.num_classes)
        # Labels of the head's outputs where known (a trained ImageFolder's folder names,
        # read from and saved in the weights' metadata); None: ImageNet for 1000/1001 outputs.
        self.class_names = None
        # What the cells compute in (`set_precision`); the parameters are float32 always.
        self.precision = "float32"
        if not initialize:
            self._rng = initializer(seed)

    # -- forward ---------------------------------------------------------------------

    def forward_features(self, images):
        """Tokens after the final LayerNorm: (batch, patches + 1, width); token 0 is cls."""
        return self.norm(self.body(self._embed(images)))

    def _embed(self, images):
        """The blocks' input: patch embeddings after the cls token, plus the positions."""
        tokens = self.stem(images)
        # In the tokens' precision: under float16 (`to_float`) the patch embedding computes in
        # float16 while these two parameters stay float32 (MindSpore 2.7 does not cast them).
        cls = ops.broadcast_to(self.cls.astype(tokens.dtype), (tokens.shape[0], 1, tokens.shape[2]))
        return self.dropout(ops.concat((cls, tokens), axis=1) + self.pos_embedding.astype(tokens.dtype))

    def forward_head(self, tokens, pre_logits: bool = False):
        """Logits from `forward_features`' tokens (the cls token), or the pooled features."""
        pooled = tokens[:, 0]
        if pre_logits:
            return self._in_float32(pooled)
        return self._in_float32(self.head(pooled))

    def construct(self, images):
        # The final LayerNorm normalises each token on its own, so it need only see the cls
        # token: the same logits as `forward_head(forward_features(...))` without normalising
        # (and differentiating) the other 196 tokens (docs/log/performance.md).
        return self._in_float32(self.head(self.norm(self.body(self._embed(images))[:, 0])))

    def _in_float32(self, outputs):
        """Logits (or features) leave the network in float32, whatever it computes in."""
        if self.precision != "float32":
            return outputs.astype(mstype.float32)
        return outputs

    def set_precision(self, precision: str = "float32") -> "VisionTransformer":
        """Compute in `precision` ('float32', 'float16' or 'bfloat16') as MindSpore's O2
        level does: every cell in it except the LayerNorms, which stay in float32 as does the
        attention's softmax; logits leave in float32, and the parameters stay float32 (the
        master weights an optimizer updates, an EMA averages and a checkpoint holds). Cells
        made later (a growth's blocks) take it too. Returns the network."""
        if precision not in PRECISIONS:
            raise PrecisionError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if precision == "float32" and self.precision == "float32":
            return self  # nothing to cast: no Cast is added to a float32 graph
        self.precision = precision
        self.to_float(getattr(mstype, precision))
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.LayerNorm):
                cell.to_float(mstype.float32)
        return self

    # -- surgery ---------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self.body.layers)

    @property
    def pretrained_cfg(self) -> dict:
        """The preprocessing the weights need, in timm's keys (input size, interpolation,
        mean, std, crop): what `timm.data.resolve_data_config(model=...)` reads."""
        from .preprocess import pretrained_cfg

        return pretrained_cfg(self)

    @property
    def default_cfg(self) -> dict:
        """timm's older name of `pretrained_cfg`."""
        return self.pretrained_cfg

    @property
    def blocks(self) -> list:
        """The blocks in order (a copy of the list: change it with `set_blocks`)."""
        return list(self.body.layers)

    def new_block(self) -> "TransformerBlock":
        """A freshly initialised block of this network's shape."""
        return TransformerBlock(self.config, rng=self._rng)

    def set_blocks(self, blocks) -> None:
        """Replace the block stack, e.g. with blocks inserted between the old ones.

        Parameter names are renumbered `body.layers.0 .. depth-1`, the config's depth
        follows, and the drop-path rates are spread again linearly over the new depth.
        Every block must be a distinct object: a block listed twice would share weights.
        """
        blocks = list(blocks)
        if not blocks:
            raise ConfigError("a VisionTransformer needs at least one block")
        if len({id(block) for block in blocks}) != len(blocks):
            raise ConfigError("set_blocks got the same block twice; copy it first (it would share weights)")
        self.body.layers = nn.CellList(blocks)
        self.config = dataclasses.replace(self.config, depth=len(blocks))
        for block, rate in zip(blocks, self.config.drop_path_rates()):
            block.set_drop_path_rate(rate)
        self.update_parameters_name()
        self.set_precision(self.precision)  # the new blocks compute as the others

    @property
    def gates(self) -> list:
        """Every gate of the blocks entering by exact growth (empty otherwise)."""
        return [gate for block in self.body.layers for gate in block.gates]

    def add_gates(self, blocks, value: float = 0.0, trainable: bool = False) -> list:
        """Gate both residuals of each block at `blocks` (indices); returns the new gates.

        The names follow the network's prefix (`ema.` for an EMA's network)."""
        prefix = self.cls.name[:-len("cls")]
        gates = [residual.add_gate(value, trainable) for i in blocks for residual in self.body.layers[i]]
        self.update_parameters_name(prefix)
        return gates

    def gated_blocks(self) -> list:
        """Indices of the blocks with gates."""
        return [i for i, block in enumerate(self.body.layers) if block.gates]

    def fold_gates(self) -> None:
        """Fold every gate into its branch (`PreNormResidual.fold_gate`): the same function,
        the released names."""
        for block in self.body.layers:
            for residual in block:
                residual.fold_gate()

    def folded_copy(self) -> "VisionTransformer":
        """A copy of this network with its gates folded (`fold_gates`) and the released names
        (no prefix such as an EMA's `ema.`); this network keeps its gates."""
        copy = VisionTransformer(self.config, initialize=False)
        copy.add_gates(self.gated_blocks())
        for mine, theirs in zip(copy.get_parameters(), self.get_parameters()):
            mine.set_data(theirs.value().copy())
        copy.fold_gates()
        copy.class_names = self.class_names
        return copy

    def width_roles(self) -> list:
        """`[(parameter, axes)]`, every parameter with what each of its axes is, for width
        growth (`width.py`, which spells no name): `'write'` rows land on the residual
        stream, `'read'` columns read the normalised stream, `'gain'` / `'shift'` are a
        LayerNorm's, `'heads'` the attention features (q, k, v rows) that `'heads_in'` (the
        output projection's columns) reads, `'hidden'` the MLP's neurons that `'hidden_in'`
        reads; None: unchanged. Gates have no axes (fold them first)."""
        def dense(layer, rows, columns):
            return [(layer.weight, (rows, columns)), (layer.bias, (rows,))]

        def norm(layer):
            return [(layer.gamma, ("gain",)), (layer.beta, ("shift",))]

        roles = [(self.cls, (None, None, "write")), (self.pos_embedding, (None, None, "write")),
                 *dense(self.stem.patch_to_embedding.dense, "write", None)]
        for attention, mlp in self.body.layers:
            heads, ffn = attention.cell[1], mlp.cell[1]
            roles += norm(attention.cell[0])
            for layer in (heads.to_q, heads.to_k, heads.to_v):
                roles += dense(layer, "heads", "read")
            roles += dense(heads.to_out, "write", "heads_in")
            roles += norm(mlp.cell[0]) + dense(ffn.ff1.dense, "hidden", "read") + dense(ffn.ff2.dense, "write", "hidden_in")
            roles += [(residual.gate, ()) for residual in (attention, mlp) if residual.gated]
        roles += norm(self.norm)
        if self.config.num_classes:
            roles += dense(self.head[0], None, "read")
        return roles

    def rebuild(self, config: ViTConfig, values: dict | None = None) -> None:
        """Every layer built anew at `config` (wider or deeper, say) holding `values`
        (`{name: array}`, every parameter's; None: zeros, to be loaded next); the names (and
        an EMA's prefix), the gates of the blocks that keep their index, and the class names
        stay. The parameters are new objects."""
        prefix = self.cls.name[:-len("cls")]
        gated = {i: bool(block.gates[0].requires_grad) for i, block in enumerate(self.body.layers)
                 if block.gates and i < config.depth}
        fresh = VisionTransformer(config, initialize=False)
        for i, trainable in gated.items():
            fresh.add_gates([i], trainable=trainable)
        precision = self.precision
        self.adopt(fresh)
        self.update_parameters_name(prefix)
        self.set_precision(precision)
        for parameter in self.get_parameters() if values is not None else ():
            value = np.asarray(values[parameter.name], np.float32)
            if value.shape != tuple(parameter.shape):
                raise ConfigError(f"{parameter.name}: a value of shape {value.shape} for a parameter of {tuple(parameter.shape)}")
            parameter.set_data(Tensor(value))

    def resize(self, config: ViTConfig, pos_embedding) -> None:
        """For images of `config.image_size`, `config` differing from this network's in
        nothing else: a new position embedding holding `pos_embedding` (its name kept, an
        EMA's prefix too); every other layer is kept, the same objects (the patch embedding
        does not depend on the image size). Building the network anew instead costs about
        0.1 s at the demo's depth 12 (MindSpore's cells are slow to make)."""
        if dataclasses.replace(config, image_size=self.config.image_size) != self.config:
            raise ConfigError(f"resize changes the image size only: {config} differs from {self.config} otherwise")
        value = np.asarray(pos_embedding, np.float32)
        if value.shape != (1, config.num_patches + 1, config.width):
            raise ConfigError(f"a position embedding of shape {value.shape} for images of {config.image_size} px: "
                              f"expected {(1, config.num_patches + 1, config.width)}")
        self.pos_embedding = Parameter(Tensor(value), name=self.pos_embedding.name)
        self.config = config

    def structural_copy(self) -> "VisionTransformer":
        """A network of this one's shape (config, gates and their trainability, names
        without prefix) whose weights are zeros: nothing drawn, nothing copied."""
        return VisionTransformer.of_structure(self.structure())

    def structure(self) -> tuple:
        """This network's shape as a value: `(config, ((gated block, trainable gate), ...),
        precision)`."""
        return (self.config, tuple((i, bool(self.body.layers[i].gates[0].requires_grad)) for i in self.gated_blocks()),
                self.precision)

    @staticmethod
    def of_structure(structure: tuple) -> "VisionTransformer":
        """A network of that `structure()` whose weights are zeros."""
        config, gated, precision = structure
        copy = VisionTransformer(config, initialize=False)
        for i, trainable in gated:
            copy.add_gates([i], trainable=trainable)
        return copy.set_precision(precision)

    def adopt(self, other: "VisionTransformer") -> None:
        """Take `other`'s layers (the same objects: both networks then share them) and its
        config; this network keeps its class names and its draws. A growth whose graphs
        were compiled ahead for `other` (ahead.py) hands this network those layers."""
        self.stem, self.body, self.norm, self.head = other.stem, other.body, other.norm, other.head
        self.cls, self.pos_embedding = other.cls, other.pos_embedding
        self.config, self.precision = other.config, other.precision

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised head for `num_classes` (0 removes the head)."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.head = self._new_head(num_classes)
        self.class_names = None
        self.update_parameters_name()

    def keep_outputs(self, count: int) -> None:
        """Keep the head's first `count` outputs, trained as they are (the released head's 1000
        ImageNet classes of its 1001: output 1000 was never trained)."""
        old = self.head[0]
        if not 0 < count <= self.config.num_classes:
            raise ConfigError(f"keep_outputs({count!r}): the head has {self.config.num_classes} outputs")
        weight, bias = old.weight.asnumpy()[:count], old.bias.asnumpy()[:count]
        names = self.class_names
        self.reset_classifier(count)
        self.head[0].weight.set_data(Tensor(weight))
        self.head[0].bias.set_data(Tensor(bias))
        self.class_names = tuple(names)[:count] if names is not None else None

    def _new_head(self, num_classes: int) -> nn.SequentialCell:
        if num_classes == 0:
            return nn.SequentialCell([nn.Identity()])
        return nn.SequentialCell([_dense(self.config.width, num_classes, self._rng)])

    # -- what a trainer asks (timm's interface): no other module spells a name ------------

    def get_classifier(self) -> nn.Cell:
        return self.head

    def classifier_names(self) -> set:
        """Checkpoint names of the head's parameters (what `freeze_backbone` trains)."""
        return {p.name for p in self.head.get_parameters()}

    def no_weight_decay(self) -> set:
        """Names trained without weight decay (DeiT's rule): the cls token, the position
        embedding, every bias and LayerNorm parameter (the one-dimensional ones)."""
        return {p.name for p in self.get_parameters()
                if len(p.shape) <= 1 or p is self.cls or p is self.pos_embedding}

    def layer_of(self) -> dict:
        """{name: layer} for layer-wise learning-rate decay: 0 the embeddings, i + 1 block i,
        depth + 1 the final LayerNorm and the head."""
        layers = {p.name: 0 for p in self.get_parameters()}
        for i, block in enumerate(self.body.layers):
            layers.update({p.name: i + 1 for p in block.get_parameters()})
        layers.update({p.name: self.depth + 1 for p in self.norm.get_parameters()})
        layers.update({name: self.depth + 1 for name in self.classifier_names()})
        return layers

    # -- inspection ------------------------------------------------------------------

    def num_parameters(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.get_parameters())

    def parameter_shapes(self) -> dict:
        """`{checkpoint name: shape}` in checkpoint order."""
        return {p.name: tuple(p.shape) for p in self.get_parameters()}
