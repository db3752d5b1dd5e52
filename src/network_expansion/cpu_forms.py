"""The forms MindSpore's CPU kernels run faster, and the one place that chooses them.

Each form computes what `model.py` computes (the same function of the same parameters, to
float rounding), in ops MindSpore 2.10's CPU kernels run faster; each was measured on this
CPU against MindSpore's own form (docs/log/performance.md has every measurement). They are used
only where they were measured: `choose()` gives them on the CPU and None (MindSpore's own
forms, what GPU and Ascend kernels are built for) everywhere else, and only the package's
own graphs run them (`graphs.compiled_for` applies them around each call and takes them
off after; a graph you compile yourself runs the plain model). The optimizer's kernel and
the EMA's update form per tensor ask the same chooser.

* blocks compiled once (`ms.no_inline`): MindSpore otherwise inlines every block, and its
  compile time and the memory of the backward's temporaries grow with the depth;
* the Dense layers' backward written out (`_Affine`): the bias gradient as a sum, a
  narrowing layer's weight gradient transposed, a large weight's input gradient against
  the transposed weight (oneDNN's slow layouts avoided);
* the tanh GELU as `x sigmoid(2z)` with its derivative written out (MindSpore's CPU kernel
  for `gelu(approximate='tanh')` is ten times slower), in the forms kernel fusion takes
  when the process fuses kernels (`tuning.tune_cpu`);
* a large LayerNorm's backward written out (`_LayerNormBackward`), and its forward in
  reductions where kernel fusion compiles them into one kernel;
* the EMA update of a large tensor added in place, AdamW on MindSpore's `Adam` kernel for a
  large tensor (`ema.py`, `recipe.AdamW` ask `CPUForms.large`).

"Large" is `CPUForms.large_from` elements (from ViT-B's sizes on): below it a step is bound by
kernel launches, and the written-out forms launch more kernels.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from mindspore import nn, ops
from mindspore import no_inline as ms_no_inline

# From this many elements on, a tensor's kernels cost more than their launches (ViT-B's
# tensors are above it, the demo's width-64 ones below; docs/log/performance.md)
LARGE = 1 << 16


def check_precision(precision: str, device: str | None = None) -> None:
    """`PrecisionError` for a precision `device` (MindSpore's device target by default)
    cannot run: bfloat16 on the CPU, whose MindSpore 2.10 backend has no bfloat16 MatMul."""
    from .config import PRECISIONS
    from .errors import PrecisionError

    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "bfloat16" and (device or device_target()) == "CPU":
        raise PrecisionError(
            "bfloat16 is not available on the CPU: MindSpore 2.10's CPU backend has no bfloat16 "
            "MatMul ('Select CPU operator[MatMul] fail! Unsupported data type'). Use float32 on "
            "the CPU (the fastest there), bfloat16 on GPU or Ascend.")


def device_target() -> str:
    """Where MindSpore runs this process's graphs: 'CPU', 'GPU' or 'Ascend'."""
    import mindspore as ms

    return ms.get_context("device_target")


@dataclass(frozen=True)
class CPUForms:
    """Which of the CPU's forms a graph runs: the large-tensor forms from `large_from`
    elements on; `fused`: the forms for graphs that fuse kernels; `compiled_once`: each
    block compiled once for all (False: inlined, as MindSpore's ONNX exporter needs)."""

    large_from: int = LARGE
    fused: bool = False
    compiled_once: bool = True

    def large(self, shape) -> bool:
        """Whether a tensor of `shape` takes the large-tensor forms."""
        return math.prod(shape) >= self.large_from

    def block_form(self, config) -> tuple:
        """The constants the blocks of a network of `config` (a ViTConfig) compute with."""
        return (config.num_heads, config.layer_norm_eps, config.gelu_approximate, config.width > config.mlp_width,
                config.mlp_width > config.width, config.dropout, config.attention_dropout,
                config.drop_path_rate > 0, self.large_from, self.fused, self.compiled_once)


def choose(device: str | None = None, precision: str = "float32") -> CPUForms | None:
    """The forms a graph compiled now runs: the CPU's (fused ones where this process fuses
    kernels), or None, MindSpore's own, on every other device (`device`: MindSpore's
    device target by default) and in any precision but float32 (the CPU's forms were
    measured, and written, for float32 only)."""
    from .tuning import kernel_fusion_on

    if precision != "float32" or (device or device_target()) != "CPU":
        return None
    return CPUForms(fused=kernel_fusion_on())


def fusion_pays(config) -> bool:
    """Whether kernel fusion makes a network of `config` faster here: one image's tokens
    reach `LARGE` elements (ViT-B's 197 x 768). Below, as the demo's ViT, a step is bound
    by kernel launches, which fusion does not shorten, and each graph compiles longer."""
    return (config.num_patches + 1) * config.width >= LARGE


@contextlib.contextmanager
def applied(network, forms: CPUForms | None):
    """Within, `network`'s blocks run `forms` (None: MindSpore's own); after, they are as
    they were. A graph traces its blocks when it compiles, inside its first call, so the
    package's graphs call inside this (`graphs.compiled_for`)."""
    blocks = list(network.body.layers)
    before = [block.form for block in blocks]
    form = forms.block_form(network.config) if forms is not None else None
    for block in blocks:
        block.form = form
    try:
        yield network
    finally:
        for block, value in zip(blocks, before):
            block.form = value


# -- one block -------------------------------------------------------------------------

def block(tokens, tensors, rates, form, training):
    """`TransformerBlock`'s function in the CPU's forms: `tensors` and `rates` are the block's
    (`TransformerBlock.tensors`, `drop_path_rates`), `form` its constants (`block_form`)."""
    norms, attention, mlp, gates = tensors
    stochastic, compiled_once = form[7], form[10]
    core = form[:7] + (training,) + form[8:10]
    drops = (None, None)
    if training and (stochastic or rates[0] > 0.0 or rates[1] > 0.0):
        # the rates differ from block to block (a linear ramp), and a function is compiled
        # for each set of constants it is called with: the scales are drawn here and passed
        # in as tensors, so that every block calls the same compiled function
        drops = (_drop_scale(tokens, rates[0]), _drop_scale(tokens, rates[1]))
    if compiled_once:
        return _block_once(tokens, norms, attention, mlp, gates, drops, core)
    return _block(tokens, norms, attention, mlp, gates, drops, core)


@ms_no_inline
def _block_once(tokens, norms, attention, mlp, gates, drops, form):
    """`_block`, compiled once for all the blocks of a graph that share its form (and
    whether their gates and drops are set)."""
    return _block(tokens, norms, attention, mlp, gates, drops, form)


def _block(tokens, norms, attention, mlp, gates, drops, form):
    """`x + g1 A(LN1(x))` then `x + g2 M(LN2(x))` (the gates None when ungated; `drops`:
    each residual's stochastic depth scale, or None); `form`: (heads, LayerNorm epsilon,
    tanh GELU, whether each MLP layer narrows, dropout, attention dropout, training, large
    from, fused)."""
    gain1, shift1, gain2, shift2 = norms
    tokens = tokens + _scaled(_attention(tokens, gain1, shift1, attention, gates[0], form), drops[0])
    return tokens + _scaled(_mlp(tokens, gain2, shift2, mlp, gates[1], form), drops[1])


def _attention(tokens, gain, shift, attention, gate, form):
    heads, epsilon, _, _, _, dropout, attention_dropout, training, large_from, fused = form
    wq, bq, wk, bk, wv, bv, wo, bo = attention
    batch, count, width = tokens.shape
    project = ops.MatMul(transpose_b=True)
    add_bias = ops.BiasAdd()

    def split_heads(flat):  # (batch * count, width) -> (batch, heads, count, width / heads)
        return flat.reshape(batch, count, heads, width // heads).transpose(0, 2, 1, 3)

    # q k^T with k transposed inside the batched matmul, and the mix with the BatchMatMul
    # primitive, not ops.matmul: MindSpore 2.10 differentiates ops.matmul with explicit
    # Transposes of the attention weights and of v, and its CPU Transpose kernel keeps
    # about twice its output's size for good
    x = _layer_norm(tokens.reshape(-1, width), gain, shift, epsilon, training, large_from, fused)
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
    _, epsilon, approximate, first_narrows, second_narrows, dropout, _, training, large_from, fused = form
    w1, b1, w2, b2 = mlp
    batch, count, width = tokens.shape
    x = _layer_norm(tokens.reshape(-1, width), gain, shift, epsilon, training, large_from, fused)
    hidden = _affine(x, w1, b1, first_narrows, large_from, training)
    hidden = _gelu(hidden, approximate, fused)
    if training and dropout > 0:
        hidden = ops.dropout(hidden, p=dropout)
    branch = _affine(hidden, w2, b2, second_narrows, large_from, training)
    if training and dropout > 0:
        branch = ops.dropout(branch, p=dropout)
    return _scaled(branch.reshape(batch, count, width), gate)


def _scaled(branch, factor):
    """The branch times `factor` (a gate, a stochastic depth scale), or as it is (None)."""
    return branch if factor is None else branch * factor


def _drop_scale(tokens, drop_rate: float):
    """Stochastic depth's scale for a residual branch: per sample, 0 with probability
    `drop_rate`, else 1 / (1 - drop_rate); shape (batch, 1, 1)."""
    keep = 1.0 - drop_rate
    if drop_rate == 0.0:
        return ops.ones((tokens.shape[0], 1, 1), tokens.dtype)
    return ops.bernoulli(ops.zeros((tokens.shape[0], 1, 1), tokens.dtype), p=keep) / keep


# -- the Dense layers' backward ----------------------------------------------------------

class _Affine(nn.Cell):
    """`x W^T + b` (x: tokens x in, W: out x in) with its backward in the forms MindSpore
    2.10's CPU kernels run fastest (measured: docs/log/performance.md): the bias gradient as
    a sum over the tokens (its BiasAddGrad kernel is several times slower); for a layer that
    narrows, the weight gradient as `(x^T dy)^T` (autodiff's `dy^T x` puts x in a layout
    oneDNN runs slower); for a large weight, the input gradient as `dy (W^T)^T`."""

    def __init__(self, narrows: bool, large: bool):
        super().__init__()
        self.narrows, self.large = narrows, large
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
        if self.large:
            input_gradient = self.matmul(dout, weight.T)
        else:
            input_gradient = self.input_gradient(dout, weight)
        return input_gradient, weight_gradient, dout.sum(0)


# one cell per form: (narrows, large)
_WIDENING, _WIDENING_LARGE = _Affine(False, False), _Affine(False, True)
_NARROWING, _NARROWING_LARGE = _Affine(True, False), _Affine(True, True)


def _affine(x, weight, bias, narrows: bool, large_from: int, training: bool):
    """`x W^T + b`; while training, differentiated by `_Affine`."""
    if not training:
        return ops.BiasAdd()(ops.MatMul(transpose_b=True)(x, weight), bias)
    large = weight.size >= large_from
    if narrows:
        if large:
            return _NARROWING_LARGE(x, weight, bias)
        return _NARROWING(x, weight, bias)
    if large:
        return _WIDENING_LARGE(x, weight, bias)
    return _WIDENING(x, weight, bias)


# -- the GELU ---------------------------------------------------------------------------

def _gelu(x, approximate: bool, fused: bool):
    """GELU, exact (MindSpore's kernel) or in its tanh approximation as `_TanhGELU`."""
    if not approximate:
        return ops.gelu(x, approximate="none")
    if fused:
        return _TANH_GELU_FUSED(x)
    return _TANH_GELU(x)


class _TanhGELU(nn.Cell):
    """The tanh GELU as `x * sigmoid(k (x + a x^3))` (0.5 (1 + tanh(z)) == sigmoid(2z): the
    same function; MindSpore 2.10's CPU kernel for `gelu(approximate='tanh')` is several
    times slower: docs/log/performance.md), with its derivative written out, so that the
    backward keeps only `x` and recomputes the rest (autodiff kept five more MLP-wide
    tensors per block).

    `fused`: the forms for graphs compiled with kernel fusion, whose compiler (AKG) leaves
    MindSpore's Sigmoid out but takes `tanh` and `exp`: the forward as `x/2 + x/2 tanh(z/2)`,
    the backward's sigmoid as `1 / (1 + e^-z)`; unfused, both are slower than the Sigmoid's."""

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


# -- the LayerNorm -----------------------------------------------------------------------

def _layer_norm(x, gain, shift, epsilon: float, training: bool, large_from: int, fused: bool):
    """LayerNorm over the last axis of x (tokens x width). MindSpore's kernel, but for a
    tensor of `large_from` elements or more: training, its gradient is `_LayerNormBackward`'s
    (faster than MindSpore 2.10's CPU LayerNormGrad); in a graph that fuses kernels, its
    forward is written out in reductions and elementwise ops, which fusion compiles into a
    kernel or two (faster than the LayerNorm kernel; unfused, slower). The measurements:
    docs/log/performance.md."""
    large = x.size >= large_from
    if fused and large:
        if not training:
            return _normalised(x, gain, shift, epsilon)[0]
        fixed = ops.stop_gradient  # values here: the gradient is the cell's
        y, mean, rstd = _normalised(fixed(x), fixed(gain), fixed(shift), epsilon)
        return _LAYER_NORM_BACKWARD(x, gain, shift, fixed(y), fixed(mean), fixed(rstd))
    layer_norm = ops.LayerNorm(-1, -1, epsilon)
    if not training or not large:
        return layer_norm(x, gain, shift)[0]
    fixed = ops.stop_gradient  # the fused kernel's results are values here: the gradient is the cell's
    y, mean, variance = layer_norm(fixed(x), fixed(gain), fixed(shift))
    return _LAYER_NORM_BACKWARD(x, gain, shift, fixed(y), fixed(mean), fixed(ops.rsqrt(variance + epsilon)))


def _normalised(x, gain, shift, epsilon: float):
    """(LayerNorm of x over its last axis, the mean, 1 / std), in reductions and elementwise ops."""
    mean = x.mean(-1, keep_dims=True)
    centred = x - mean
    rstd = ops.rsqrt((centred * centred).mean(-1, keep_dims=True) + epsilon)
    return centred * rstd * gain + shift, mean, rstd


class _LayerNormBackward(nn.Cell):
    """Passes the LayerNorm's output `y` on and gives x, the gain and the shift the
    LayerNorm's gradients, from x, the gain and the statistics (mean, 1 / std = r), with
    c = x - mean and u = dout * gain:

        dx    = r u - r mean(u) - c r^3 mean(u c)
        dgain = sum over tokens of dout c r,    dshift = sum over tokens of dout

    the means over the width and the sums over the tokens as matrix-vector products, so
    that only c, dout c and the terms of dx are tensors of x's size (MindSpore keeps a
    compiled block function's backward temporaries, about 90 MiB per LayerNorm at ViT-B,
    once). `y` and the statistics get zeros: they are values, cut from the graph."""

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
