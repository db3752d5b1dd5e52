"""MindSpore's CPU kernels, one layer at a time: each form of a ViT-B layer the package could
use, forward and forward + backward, at the shapes of a ViT-B/16 training step at batch 8.

    .venv/bin/python benchmarks/investigations/kernels.py [--repeats 10]

This is how the package chose its forms (the GELU, the LayerNorm, the Dense layers' bias
add); rows are medians of `--repeats` calls after a warm-up, the forms of one layer timed
in turns, so that the machine's drift falls on all of them. Each is compiled as the
package's graphs run in a tuned process (`tune_cpu`: without MindSpore's queue thread on the
CPU; before 2026-12-04 this benchmark used `ms.jit`, with it).
"""

from __future__ import annotations

import argparse
import statistics
import time

from network_expansion.tuning import tune_cpu

tune_cpu(kernel_fusion=False)  # the program: MindSpore's queue thread off, as the package's timings were taken

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import mint, nn, ops  # noqa: E402

from network_expansion.cpu_forms import LARGE, _TanhGELU, _layer_norm  # noqa: E402
from network_expansion.graphs import compiled as jit  # noqa: E402

TOKENS = (8, 197)  # batch 8, 196 patches + cls


class BroadcastAddDense(nn.Dense):
    """nn.Dense with the bias added by a broadcast add: its gradient is a ReduceSum, not BiasAddGrad."""

    def construct(self, x):
        shape = x.shape
        y = ops.matmul(x.reshape(-1, shape[-1]), self.weight.T) + self.bias
        return y.reshape(shape[:-1] + (y.shape[-1],))


class ManualLayerNorm(nn.Cell):
    """LayerNorm from reductions and elementwise ops (autodiff builds the backward)."""

    def __init__(self, width):
        super().__init__()
        self.gamma = ms.Parameter(ms.Tensor(np.ones(width, np.float32)), name="gamma")
        self.beta = ms.Parameter(ms.Tensor(np.zeros(width, np.float32)), name="beta")

    def construct(self, x):
        centred = x - x.mean(-1, keep_dims=True)
        variance = (centred * centred).mean(-1, keep_dims=True)
        return centred * ops.rsqrt(variance + 1e-6) * self.gamma + self.beta


class MintLayerNorm(ManualLayerNorm):
    def construct(self, x):
        return mint.nn.functional.layer_norm(x, (x.shape[-1],), self.gamma, self.beta, 1e-6)


class WrittenOutLayerNorm(ManualLayerNorm):
    """MindSpore's fused LayerNorm forward with the package's written-out backward
    (`cpu_forms._layer_norm` while training, on tokens x width)."""

    def construct(self, x):
        flat = _layer_norm(x.reshape(-1, x.shape[-1]), self.gamma, self.beta, 1e-6, True, LARGE, False)
        return flat.reshape(x.shape)


class Function(nn.Cell):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def construct(self, x):
        return self.function(x)


def tanh_gelu(x):
    return ops.gelu(x, approximate="tanh")


def sigmoid_gelu(x):
    return x * ops.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))


def softmax(x):
    return ops.softmax(x, axis=-1)


def mint_softmax(x):
    return mint.nn.functional.softmax(x, dim=-1)


def forms():
    """(layer, form, cell, input shape)."""
    return [
        ("Dense 768 -> 3072", "nn.Dense (BiasAdd)", nn.Dense(768, 3072), TOKENS + (768,)),
        ("Dense 768 -> 3072", "broadcast add", BroadcastAddDense(768, 3072), TOKENS + (768,)),
        ("Dense 3072 -> 768", "nn.Dense (BiasAdd)", nn.Dense(3072, 768), TOKENS + (3072,)),
        ("Dense 3072 -> 768", "broadcast add", BroadcastAddDense(3072, 768), TOKENS + (3072,)),
        ("Dense 768 -> 768", "nn.Dense (BiasAdd)", nn.Dense(768, 768), TOKENS + (768,)),
        ("Dense 768 -> 768", "broadcast add", BroadcastAddDense(768, 768), TOKENS + (768,)),
        ("LayerNorm 768", "nn.LayerNorm", nn.LayerNorm((768,), epsilon=1e-6), TOKENS + (768,)),
        ("LayerNorm 768", "mint layer_norm", MintLayerNorm(768), TOKENS + (768,)),
        ("LayerNorm 768", "reductions + elementwise", ManualLayerNorm(768), TOKENS + (768,)),
        ("LayerNorm 768", "fused, backward written out (cpu_forms._layer_norm)", WrittenOutLayerNorm(768),
         TOKENS + (768,)),
        ("GELU (tanh) 3072", "ops.gelu(approximate='tanh')", Function(tanh_gelu), TOKENS + (3072,)),
        ("GELU (tanh) 3072", "x * sigmoid(...), autodiff", Function(sigmoid_gelu), TOKENS + (3072,)),
        ("GELU (tanh) 3072", "x * sigmoid(...), written-out backward (cpu_forms._TanhGELU)", _TanhGELU(),
         TOKENS + (3072,)),
        ("softmax 12 x 197 x 197", "ops.softmax", Function(softmax), (8, 12, 197, 197)),
        ("softmax 12 x 197 x 197", "mint softmax", Function(mint_softmax), (8, 12, 197, 197)),
    ]


def compiled(cell):
    weights = cell.trainable_params()
    gradient = ms.grad(cell, grad_position=0, weights=weights if weights else None)

    def forward(x):
        return cell(x)

    def backward(x):
        return gradient(x)

    return jit(forward), jit(backward)


def seconds(function, x) -> float:
    start = time.perf_counter()
    out = function(x)
    (out[0] if isinstance(out, tuple) else out).asnumpy()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for layer, form, cell, shape in forms():
        x = ms.Tensor(rng.standard_normal(shape, dtype=np.float32))
        forward, backward = compiled(cell)
        try:
            seconds(forward, x), seconds(backward, x)  # compile
        except RuntimeError as error:  # e.g. "Unsupported op [LayerNormExt] on CPU"
            reason = next((line.split(",")[0] for line in str(error).splitlines() if "Unsupported" in line),
                          "does not compile")
            rows.append([layer, form, None, reason, x, [], []])
            continue
        rows.append([layer, form, forward, backward, x, [], []])
    for _ in range(args.repeats):
        for row in rows:
            if row[2] is not None:
                row[5].append(seconds(row[2], row[4]))
                row[6].append(seconds(row[3], row[4]))
    print("| layer | form | forward ms | forward + backward ms |")
    print("|---|---|---:|---:|")
    for layer, form, forward, backward, _, forward_times, backward_times in rows:
        if forward is None:
            print(f"| {layer} | {form} | {backward} | - |")
        else:
            print(f"| {layer} | {form} | {1e3 * statistics.median(forward_times):.1f} | "
                  f"{1e3 * statistics.median(backward_times):.1f} |")


if __name__ == "__main__":
    main()
