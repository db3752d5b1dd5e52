"""The Vision Transformer of the released NetworkExpansion checkpoint.

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
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore import no_inline as ms_no_inline

from .config import ViTConfig
from .errors import ConfigError


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


def initializer(seed=None) -> np.random.Generator:
    """The generator a network draws its initial weights from: NumPy's PCG64 seeded with
    `seed`, or, without one, from NumPy's global state (which `mindspore.set_seed` seeds)."""
    return np.random.default_rng(np.random.randint(2**31) if seed is None else seed)


class NoDraws:
    """Stands in for the generator while a network is built only to be overwritten by
    loaded weights: every weight starts at zero, nothing is drawn (1.5 s for ViT-B)."""


def truncated_normal(shape, rng, std: float = 0.02) -> Tensor:
    """N(0, std) cut at two standard deviations (the timm/DeiT initialisation); zeros
    when `rng` is `NoDraws`.

    Drawn with NumPy: four times faster than MindSpore's own TruncatedNormal for ViT-B
    (1.5 s, not 5.5 s).
    """
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
    """A Dense layer applied to every token; the zoo's `BatchDense` (hence `.dense`).

    While training it runs through `_Affine`, the same function with a backward that
    MindSpore's CPU kernels compute faster; the parameters and their gradients are the
    `nn.Dense`'s, which evaluation runs as it is. (The MLP's two are run by `_block`.)
    """

    def __init__(self, in_width: int, out_width: int, rng):
        super().__init__()
        self.dense = _dense(in_width, out_width, rng)
        # whether the layer narrows (its weight gradient then takes the transposed form)
        self.narrows = in_width > out_width

    def construct(self, tokens):
        if self.training:
            flat = _affine(tokens.reshape(-1, tokens.shape[-1]), self.dense.weight, self.dense.bias, self.narrows)
            return flat.reshape(tokens.shape[:-1] + (flat.shape[-1],))
        return self.dense(tokens)


class _Affine(nn.Cell):
    """`x W^T + b` (x: tokens x in, W: out x in) with its backward written out in the forms
    MindSpore 2.10's CPU kernels run fastest (docs/performance.md, "The backward's MatMul
    forms"):

    * the bias gradient as a sum over the tokens: the BiasAddGrad kernel autodiff uses takes
      32 ms on a 3072-wide ViT-B gradient at batch 8, a ReduceSum 5 ms;
    * for a layer that narrows (the MLP's second, 3072 -> 768), the weight gradient as
      `(x^T dy)^T`: autodiff's `dy^T x` has x (tokens x 3072) as the MatMul's second operand,
      a layout its CPU kernel runs 2 to 3 times slower (`benchmarks/matmul_forms.py`); the
      transpose of the result costs 27 MiB (MindSpore's CPU Transpose kernel keeps about
      twice its output: `benchmarks/kernel_memory.py`), once per compiled block function;
    * for a weight of `LARGE` elements or more, the input gradient as `dy (W^T)^T` (the
      transposed weight as the MatMul's second operand, stored (N, K)): `dy W` reads W
      stored (K, N) with a wide N, the slow layout again. The transpose's memory is kept
      once per compiled block function, not per block (37 MiB at ViT-B).

    Together a ViT-B train step 15% faster at depth 4, 8 to 10% at depth 12, and the input
    gradient's form 4% more (docs/performance.md).
    """

    def __init__(self, narrows: bool):
        super().__init__()
        self.narrows = narrows
        self.matmul = ops.MatMul(transpose_b=True)
        self.bias_add = ops.BiasAdd()
        self.input_gradient = ops.MatMul()
        self.weight_gradient = ops.MatMul(transpose_a=True)

    def construct(self, x, weight, bias):
        return self.bias_add(self.matmul(x, weight), bias)

    def bprop(self, x, weight, bias, out, dout):
        if self.narrows:
            weight_gradient = self.weight_gradient(x, dout).T
        else:
            weight_gradient = self.weight_gradient(dout, x)
        if weight.size >= LARGE:
            input_gradient = self.matmul(dout, weight.T)
        else:
            input_gradient = self.input_gradient(dout, weight)
        return input_gradient, weight_gradient, dout.sum(0)


_WIDENING, _NARROWING = _Affine(narrows=False), _Affine(narrows=True)


def _affine(x, weight, bias, narrows: bool):
    return _NARROWING(x, weight, bias) if narrows else _WIDENING(x, weight, bias)


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
    """Multi-head self-attention with separate q, k, v and output projections (their
    parameters: the computation is `_block`'s)."""

    def __init__(self, config: ViTConfig, rng):
        super().__init__()
        self.num_heads = config.num_heads
        self.to_q = _dense(config.width, config.width, rng)
        self.to_k = _dense(config.width, config.width, rng)
        self.to_v = _dense(config.width, config.width, rng)
        self.to_out = _dense(config.width, config.width, rng)
        self.attention_dropout = config.attention_dropout
        self.dropout = config.dropout

    @property
    def output_layer(self) -> nn.Dense:
        """The branch's last Dense: a gate folds into it."""
        return self.to_out

    def tensors(self) -> tuple:
        return (self.to_q.weight, self.to_q.bias, self.to_k.weight, self.to_k.bias,
                self.to_v.weight, self.to_v.bias, self.to_out.weight, self.to_out.bias)


def _gelu(x, approximate: bool, fused: bool = False):
    """GELU, exact or in its tanh approximation (the zoo's `nn.GELU()` default).

    The tanh form is computed as x * sigmoid(2 * sqrt(2/pi) * (x + 0.044715 x^3)), the same
    function (0.5 * (1 + tanh(z)) == sigmoid(2z)), because MindSpore 2.10's CPU kernel for
    `gelu(approximate='tanh')` is ten times slower: 98 ms against 10 ms on a ViT-B MLP
    activation at batch 8, a third of the whole forward pass (benchmarks/inference.py).
    `fused`: in the forms kernel fusion runs fastest (`_TanhGELU`).
    """
    if not approximate:
        return ops.gelu(x, approximate="none")
    return _TANH_GELU_FUSED(x) if fused else _TANH_GELU(x)


class _TanhGELU(nn.Cell):
    """`x * sigmoid(k (x + a x^3))` with its derivative written out, so that the backward
    keeps only `x` (autodiff kept every intermediate: five more MLP-wide tensors per block)
    and recomputes the rest in a few elementwise ops.

    `fused`: the forms for graphs compiled with kernel fusion (`graphs.compiled`), whose
    compiler (AKG) leaves MindSpore's Sigmoid out but takes `tanh` and `exp`: the forward as
    `x/2 + x/2 tanh(z/2)` (ViT-B's MLP with its bias at batch 8: 2.9 ms against 7.0), the
    backward's sigmoid as `1 / (1 + e^-z)` (one kernel: 13.2 -> 4.4 ms; `tanh` there took 3.0
    against 1.8). Unfused, both forms are slower than the Sigmoid's (forward 17.5 against
    13.0 ms, backward 31.4 against 20.7), so unfused graphs keep it."""

    K, A = 1.5957691216057308, 0.044715  # 2 sqrt(2 / pi), the tanh approximation's cubic term

    def __init__(self, fused: bool = False):
        super().__init__()
        self.sigmoid = ops.Sigmoid()
        self.fused = fused

    def construct(self, x):
        z = self.K * x * (1.0 + self.A * x * x)
        if self.fused:
            half = 0.5 * x
            return half + half * ops.tanh(0.5 * z)
        return x * self.sigmoid(z)

    def bprop(self, x, out, dout):
        square = x * x
        z = self.K * x * (1.0 + self.A * square)
        s = 1.0 / (1.0 + ops.exp(-z)) if self.fused else self.sigmoid(z)
        # d/dx [x s(z)] = s + x s (1 - s) z',  z' = k (1 + 3 a x^2)
        slope = s + x * s * (1.0 - s) * (self.K + (3.0 * self.K * self.A) * square)
        return (dout * slope,)


_TANH_GELU, _TANH_GELU_FUSED = _TanhGELU(), _TanhGELU(fused=True)


class FeedForward(nn.Cell):
    """The MLP: Dense, GELU (tanh form or exact), Dense (their parameters: the computation
    is `_block`'s)."""

    def __init__(self, config: ViTConfig, rng):
        super().__init__()
        self.ff1 = TokenDense(config.width, config.mlp_width, rng)
        self.ff2 = TokenDense(config.mlp_width, config.width, rng)
        self.approximate = config.gelu_approximate
        self.dropout = config.dropout

    @property
    def output_layer(self) -> nn.Dense:
        """The branch's last Dense: a gate folds into it."""
        return self.ff2.dense

    def tensors(self) -> tuple:
        return self.ff1.dense.weight, self.ff1.dense.bias, self.ff2.dense.weight, self.ff2.dense.bias


class DropPath(nn.Cell):
    """Stochastic depth's rate for one residual (`_block` drops the branch for a whole
    sample while training, with probability `rate`)."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = float(rate)


class PreNormResidual(nn.Cell):
    """`x + f(LN(x))`; the zoo's ResidualCell around a `[LayerNorm, f]` sequence (`.cell`):
    the parameters, the gate and the drop-path rate; the computation is `_block`'s.

    With a gate (`add_gate`): `x + g f(LN(x))`, `g` a scalar Parameter named `gate`, which
    exists only while gated (so an ungated residual has exactly the released names).
    """

    def __init__(self, config: ViTConfig, branch: nn.Cell, drop_path_rate: float):
        super().__init__()
        self.cell = nn.SequentialCell([
            nn.LayerNorm((config.width,), epsilon=config.layer_norm_eps), branch])
        self.drop_path = DropPath(drop_path_rate)
        self.gated = False

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
    """One pre-norm block: attention residual (`.0`), then MLP residual (`.1`).

    It runs as one function of its tensors, `_block`, compiled once for every block of the
    same form (`ms.no_inline`): MindSpore otherwise inlines every block into the graph, and
    its compile time grows with the depth (docs/performance.md, "Blocks compiled once").
    """

    def __init__(self, config: ViTConfig, drop_path_rate: float = 0.0, rng=None):
        rng = rng if rng is not None else initializer()
        super().__init__([
            PreNormResidual(config, Attention(config, rng), drop_path_rate),
            PreNormResidual(config, FeedForward(config, rng), drop_path_rate),
        ])
        # False: inlined into the graph that calls it, as an exporter to ONNX needs
        # (`VisionTransformer.blocks_inlined`)
        self.compiled_once = True
        # the network drops paths (its first block's rate is 0 all the same): training, every
        # block passes drop scales, so that all share one compiled function (`construct`)
        self.stochastic_depth = config.drop_path_rate > 0
        # the forms kernel fusion runs fastest (the LayerNorms' forward, the GELU's forward and backward),
        # set by the package's compiled graphs that fuse (VisionTransformer.use_fused_forms);
        # unfused they run slower, so a graph compiled otherwise (ms.jit) keeps MindSpore's
        self.fused = False

    def construct(self, tokens):
        attention, mlp = self[0], self[1]
        attention_gate, mlp_gate = None, None
        if attention.gated:
            attention_gate = attention.gate
        if mlp.gated:
            mlp_gate = mlp.gate
        heads, ffn = attention.branch, mlp.branch
        form = (heads.num_heads, attention.norm.epsilon, ffn.approximate, ffn.ff1.narrows, ffn.ff2.narrows,
                heads.dropout, heads.attention_dropout, self.training, self.fused)
        rates = (attention.drop_path.rate, mlp.drop_path.rate)
        norms = (attention.norm.gamma, attention.norm.beta, mlp.norm.gamma, mlp.norm.beta)
        gates = (attention_gate, mlp_gate)
        drops = (None, None)
        if self.training and (self.stochastic_depth or rates[0] > 0.0 or rates[1] > 0.0):
            # the rates differ from block to block (a linear ramp), and a function is compiled
            # for each set of constants it is called with: the scales are drawn here and
            # passed in as tensors, so that every block calls the same compiled function
            drops = (_drop_scale(tokens, rates[0]), _drop_scale(tokens, rates[1]))
        if self.compiled_once:
            return _block_once(tokens, norms, heads.tensors(), ffn.tensors(), gates, drops, form)
        return _block(tokens, norms, heads.tensors(), ffn.tensors(), gates, drops, form)

    def set_drop_path_rate(self, rate: float) -> None:
        for residual in self:
            residual.drop_path.rate = float(rate)

    @property
    def gates(self) -> list:
        """The gates of its residuals (empty unless the block is entering by exact growth)."""
        return [residual.gate for residual in self if residual.gated]


def _block(tokens, norms, attention, mlp, gates, drops, form):
    """One transformer block, `x + g1 A(LN1(x))` then `x + g2 M(LN2(x))`, as a function of
    its tensors (the gates None when ungated; `drops`: each residual's stochastic depth,
    `_drop_scale`'s, or None) and its form (`_attention`'s)."""
    gain1, shift1, gain2, shift2 = norms
    tokens = tokens + _scaled(_attention(tokens, gain1, shift1, attention, gates[0], form), drops[0])
    return tokens + _scaled(_mlp(tokens, gain2, shift2, mlp, gates[1], form), drops[1])


def _attention(tokens, gain, shift, attention, gate, form):
    """The attention branch, `g A(LN(x))` (no gate: None), of tokens (batch, count, width);
    form: (heads, LayerNorm epsilon, tanh GELU, whether each MLP layer narrows, dropout,
    attention dropout, training, whether its graph fuses kernels: `TransformerBlock.fused`)."""
    heads, epsilon, _, _, _, dropout, attention_dropout, training, fused = form
    wq, bq, wk, bk, wv, bv, wo, bo = attention
    batch, count, width = tokens.shape
    project = ops.MatMul(transpose_b=True)
    add_bias = ops.BiasAdd()

    def split_heads(flat):  # (batch * count, width) -> (batch, heads, count, width / heads)
        return flat.reshape(batch, count, heads, width // heads).transpose(0, 2, 1, 3)

    # q k^T with k transposed inside the batched matmul, and the mix with the BatchMatMul
    # primitive, not ops.matmul: MindSpore 2.10 differentiates ops.matmul with explicit
    # Transposes of the attention weights and of v, and its CPU Transpose kernel keeps
    # about twice its output's size for good (benchmarks/kernel_memory.py)
    x = _layer_norm(tokens.reshape(-1, width), gain, shift, epsilon, training, fused)
    q = split_heads(add_bias(project(x, wq), bq)) * (width // heads) ** -0.5
    k, v = split_heads(add_bias(project(x, wk), bk)), split_heads(add_bias(project(x, wv), bv))
    weights = ops.softmax(ops.BatchMatMul(transpose_b=True)(q, k), axis=-1)
    if training and attention_dropout > 0:
        weights = ops.dropout(weights, p=attention_dropout)
    mixed = ops.BatchMatMul()(weights, v).transpose(0, 2, 1, 3).reshape(-1, width)
    branch = add_bias(project(mixed, wo), bo)
    if training and dropout > 0:
        branch = ops.dropout(branch, p=dropout)
    return _scaled(branch.reshape(batch, count, width), gate)


def _mlp(tokens, gain, shift, mlp, gate, form):
    """The MLP branch, `g M(LN(x))`: its two Dense layers through _Affine (their backward in
    faster forms); form as `_attention`'s."""
    _, epsilon, approximate, first_narrows, second_narrows, dropout, _, training, fused = form
    w1, b1, w2, b2 = mlp
    batch, count, width = tokens.shape
    hidden = _affine(_layer_norm(tokens.reshape(-1, width), gain, shift, epsilon, training, fused), w1, b1,
                     first_narrows)
    hidden = _gelu(hidden, approximate, fused)
    if training and dropout > 0:
        hidden = ops.dropout(hidden, p=dropout)
    branch = _affine(hidden, w2, b2, second_narrows)
    if training and dropout > 0:
        branch = ops.dropout(branch, p=dropout)
    return _scaled(branch.reshape(batch, count, width), gate)


# From this many elements on, a tensor's kernels cost more than their launches, and the
# package takes the forms that run faster on large tensors but launch more kernels: a
# training LayerNorm's written-out backward (`_LayerNormBackward`), `_Affine`'s input
# gradient against the transposed weight, the EMA update's multiply-add instead of `lerp`
# (`expansion._EMAUpdate`). Below it (the demo's width 64, bound by kernel launches)
# MindSpore's forms.
LARGE = 1 << 16


def is_large(shape) -> bool:
    """Whether a tensor of `shape` has `LARGE` elements or more: the rule, for the choices
    made outside a graph (AdamW's kernel per tensor, the EMA update's form per tensor)."""
    return math.prod(shape) >= LARGE


def large_tokens(config: ViTConfig) -> bool:
    """Whether one image's tokens reach `LARGE` elements (ViT-B's 197 x 768): from there on
    the package's graphs fuse kernels (`VisionTransformer.fuses_kernels`)."""
    return (config.num_patches + 1) * config.width >= LARGE


def _layer_norm(x, gain, shift, epsilon: float, training: bool, fused: bool = False):
    """LayerNorm over the last axis of x (tokens x width), by MindSpore's fused kernel. While
    training on tensors of `LARGE` elements or more, its gradient is
    `_LayerNormBackward`'s: at ViT-B's shapes (batch 8) forward and backward take 15 ms
    against 27 with MindSpore 2.10's CPU LayerNormGrad (benchmarks/kernels.py).

    `fused` (a graph compiled with kernel fusion, `TransformerBlock.fused`): on such tensors
    the forward is written out in reductions and elementwise ops, which kernel fusion
    compiles into a kernel or two: 1.5 ms against the LayerNorm kernel's 4.3 at ViT-B's
    shapes (unfused that form takes 8.1 ms)."""
    if fused and x.size >= LARGE:
        return _written_out_layer_norm(x, gain, shift, epsilon, training)
    layer_norm = ops.LayerNorm(-1, -1, epsilon)
    if not training or x.size < LARGE:
        return layer_norm(x, gain, shift)[0]
    fixed = ops.stop_gradient  # the fused kernel's results are values here: the gradient is the cell's
    y, mean, variance = layer_norm(fixed(x), fixed(gain), fixed(shift))
    return _LAYER_NORM_BACKWARD(x, gain, shift, fixed(y), fixed(mean), fixed(ops.rsqrt(variance + epsilon)))


def _written_out_layer_norm(x, gain, shift, epsilon: float, training: bool):
    """`_layer_norm`'s forward from reductions (mean, variance) and elementwise ops; while
    training, differentiated by `_LayerNormBackward` as the kernel's form is."""
    if not training:
        return _normalised(x, gain, shift, epsilon)[0]
    fixed = ops.stop_gradient  # values here: the gradient is the cell's
    y, mean, rstd = _normalised(fixed(x), fixed(gain), fixed(shift), epsilon)
    return _LAYER_NORM_BACKWARD(x, gain, shift, fixed(y), fixed(mean), fixed(rstd))


def _normalised(x, gain, shift, epsilon: float):
    """(LayerNorm of x over its last axis, the mean, 1 / std), in reductions and elementwise ops."""
    mean = x.mean(-1, keep_dims=True)
    centred = x - mean
    rstd = ops.rsqrt((centred * centred).mean(-1, keep_dims=True) + epsilon)
    return centred * rstd * gain + shift, mean, rstd


class _LayerNormBackward(nn.Cell):
    """Passes the fused LayerNorm's output `y` on and gives x, the gain and the shift the
    LayerNorm's gradients, from x, the gain and the statistics (mean, 1 / std = r), with
    c = x - mean and u = dout * gain:

        dx    = r u - r mean(u) - c r^3 mean(u c)
        dgain = sum over tokens of dout c r,    dshift = sum over tokens of dout

    the means over the width and the sums over the tokens as matrix-vector products, so
    that only c, dout c and the terms of dx are tensors of x's size (MindSpore keeps a
    compiled block function's backward temporaries, about 90 MiB per LayerNorm at ViT-B,
    once: docs/performance.md).
    `y` and the statistics get zeros: they are the fused kernel's, cut from the graph."""

    def construct(self, x, gain, shift, y, mean, rstd):
        return y

    def bprop(self, x, gain, shift, y, mean, rstd, out, dout):
        width = x.shape[-1]
        centred = x - mean
        product = dout * centred
        column = gain.reshape(-1, 1)
        mean_u = ops.matmul(dout, column) / width
        mean_uc = ops.matmul(product, column) / width
        dx = (dout * gain) * rstd - (centred * (mean_uc * rstd * rstd * rstd) + mean_u * rstd)
        dgain = ops.matmul(rstd.reshape(1, -1), product).reshape(-1)
        return dx, dgain, dout.sum(0), ops.zeros_like(y), ops.zeros_like(mean), ops.zeros_like(rstd)


_LAYER_NORM_BACKWARD = _LayerNormBackward()


def _scaled(branch, factor):
    """The branch times `factor` (its gate, for an exact growth's entering block; its
    stochastic depth's per-sample scale), or as it is where there is none (None)."""
    return branch if factor is None else branch * factor


def _drop_scale(tokens, drop_rate: float):
    """Stochastic depth's scale for a residual branch: per sample, 0 with probability
    `drop_rate`, else 1 / (1 - drop_rate); shape (batch, 1, 1)."""
    keep = 1.0 - drop_rate
    if drop_rate == 0.0:
        return ops.ones((tokens.shape[0], 1, 1), tokens.dtype)
    return ops.bernoulli(ops.zeros((tokens.shape[0], 1, 1), tokens.dtype), p=keep) / keep


@ms_no_inline
def _block_once(tokens, norms, attention, mlp, gates, drops, form):
    """`_block`, compiled once for all the blocks of a graph that share its form (and
    whether their gates and drops are set)."""
    return _block(tokens, norms, attention, mlp, gates, drops, form)


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
            return pooled
        return self.head(pooled)

    def construct(self, images):
        # The final LayerNorm normalises each token on its own, so it need only see the cls
        # token: the same logits as `forward_head(forward_features(...))` without normalising
        # (and differentiating) the other 196 tokens, 26 ms of a ViT-B training step.
        return self.head(self.norm(self.body(self._embed(images))[:, 0]))

    # -- surgery ---------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self.body.layers)

    @property
    def fuses_kernels(self) -> bool:
        """Whether its graphs compile with kernel fusion (`graphs.compiled`): one image's
        tokens reach `LARGE` elements (ViT-B's 197 x 768). Below, as the demo's ViT, a step
        is bound by kernel launches, which fusion does not shorten (the demo's train step 62
        against 60 to 64 ms), and each new graph would pay AKG's compilation (3.5 s more for
        the demo's first)."""
        return large_tokens(self.config)

    def use_fused_forms(self, fused: bool) -> None:
        """Run the blocks in the forms kernel fusion runs fastest (`TransformerBlock.fused`),
        or in MindSpore's: set by the package's graphs before they compile
        (`graphs.compiled_for`), so that the forms follow whether the graph fuses."""
        for block in self.body.layers:
            block.fused = bool(fused)

    @property
    def blocks(self) -> list:
        """The blocks in order (a copy of the list: change it with `set_blocks`)."""
        return list(self.body.layers)

    def new_block(self) -> TransformerBlock:
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
        self.adopt(fresh)
        self.update_parameters_name(prefix)
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

    @contextlib.contextmanager
    def blocks_inlined(self):
        """Within: graphs compiled from this network have every block inlined (MindSpore's
        default) instead of one block function compiled once and called for each
        (`TransformerBlock`), as MindSpore's ONNX exporter needs ("The pointer[prim] is null"
        otherwise). Graphs compiled outside are not affected."""
        blocks = list(self.body.layers)
        before = [block.compiled_once for block in blocks]
        for block in blocks:
            block.compiled_once = False
        try:
            yield self
        finally:
            for block, value in zip(blocks, before):
                block.compiled_once = value

    def structural_copy(self) -> "VisionTransformer":
        """A network of this one's shape (config, gates and their trainability, names
        without prefix) whose weights are zeros: nothing drawn, nothing copied."""
        return VisionTransformer.of_structure(self.structure())

    def structure(self) -> tuple:
        """This network's shape as a value: `(config, ((gated block, trainable gate), ...))`."""
        return self.config, tuple((i, bool(self.body.layers[i].gates[0].requires_grad)) for i in self.gated_blocks())

    @staticmethod
    def of_structure(structure: tuple) -> "VisionTransformer":
        """A network of that `structure()` whose weights are zeros."""
        config, gated = structure
        copy = VisionTransformer(config, initialize=False)
        for i, trainable in gated:
            copy.add_gates([i], trainable=trainable)
        return copy

    def adopt(self, other: "VisionTransformer") -> None:
        """Take `other`'s layers (the same objects: both networks then share them) and its
        config; this network keeps its class names and its draws. A growth whose graphs
        were compiled ahead for `other` (ahead.py) hands this network those layers."""
        self.stem, self.body, self.norm, self.head = other.stem, other.body, other.norm, other.head
        self.cls, self.pos_embedding = other.cls, other.pos_embedding
        self.config = other.config

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised head for `num_classes` (0 removes the head)."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.head = self._new_head(num_classes)
        self.class_names = None
        self.update_parameters_name()

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
