"""MindSpore's CPU MatMul alone, in the three forms a Dense layer's training step uses: the
forward `x @ W^T` and the backward's `dy @ W` and `dy^T @ x`, at ViT-B/16 shapes (batch 8),
interleaved, medians of 15.

    .venv/bin/python benchmarks/matmul_forms.py

The reproduction for docs/performance.md. MindSpore 2.10's CPU MatMul is 2 to 3 times
slower when its second operand is stored (K, N) with a wide N (3072) than stored (N, K):
the MLP's second layer's backward (`dy @ W`, `dy^T @ x` at 3072 -> 768). The fourth form,
`(x^T @ dy)^T`, is the weight gradient the package computes for that layer
(`model._Affine`): the same matrix from the fast layout and one transpose.
"""
import statistics
import time

import mindspore as ms
import numpy as np
from mindspore import ops

from network_expansion.graphs import compiled  # as the package compiles: without the queue thread

FORWARD, PLAIN, FIRST_TRANSPOSED = ops.MatMul(transpose_b=True), ops.MatMul(), ops.MatMul(transpose_a=True)


def forward(x, w):
    return FORWARD(x, w)


def input_gradient(dy, w):
    return PLAIN(dy, w)


def weight_gradient(dy, x):
    return FIRST_TRANSPOSED(dy, x)


def weight_gradient_transposed(dy, x):
    return FIRST_TRANSPOSED(x, dy).T


FORMS = {"x @ W^T (forward)": forward, "dy @ W (grad of x)": input_gradient, "dy^T @ x (grad of W)": weight_gradient,
         "(x^T @ dy)^T (grad of W)": weight_gradient_transposed}


def main():
    graphs = {name: compiled(function) for name, function in FORMS.items()}
    rng = np.random.default_rng(0)
    for tokens, width_in, width_out in [(1576, 768, 768), (1576, 768, 3072), (1576, 3072, 768)]:
        x = rng.standard_normal((tokens, width_in), np.float32)
        w = rng.standard_normal((width_out, width_in), np.float32)
        dy = rng.standard_normal((tokens, width_out), np.float32)
        operands = {"x @ W^T (forward)": (x, w), "dy @ W (grad of x)": (dy, w), "dy^T @ x (grad of W)": (dy, x),
                    "(x^T @ dy)^T (grad of W)": (dy, x)}
        operands = {name: tuple(map(ms.Tensor, pair)) for name, pair in operands.items()}
        times = {name: [] for name in FORMS}
        for name in FORMS:
            graphs[name](*operands[name]).asnumpy()  # compile
        for _ in range(15):
            for name in FORMS:
                start = time.perf_counter()
                graphs[name](*operands[name]).asnumpy()
                times[name].append(time.perf_counter() - start)
        gflop = 2 * tokens * width_in * width_out / 1e9
        print(f"{tokens} x {width_in} -> {width_out}: " + ", ".join(
            f"{name} {1e3 * statistics.median(t):.1f} ms ({gflop / statistics.median(t):.0f} GFLOP/s)"
            for name, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
