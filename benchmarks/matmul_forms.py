"""MindSpore's CPU MatMul alone, in the three forms a Dense layer's training step uses: the
forward `x @ W^T` and the backward's `dy @ W` and `dy^T @ x`, at ViT-B/16 shapes (batch 8),
interleaved, medians of 15.

    .venv/bin/python benchmarks/matmul_forms.py

The reproduction for docs/performance.md: alone, the three forms run at about the same
speed; inside the training step's graph the backward's MatMuls take twice the time of the
forward's per FLOP (benchmarks/profile_step.py).
"""
import statistics
import time

import mindspore as ms
import numpy as np
from mindspore import ops

FORMS = {"x @ W^T (forward)": ops.MatMul(transpose_b=True), "dy @ W (grad of x)": ops.MatMul(),
         "dy^T @ x (grad of W)": ops.MatMul(transpose_a=True)}


def compiled(op):
    def run(a, b):
        return op(a, b)
    return ms.jit(run)


def main():
    graphs = {name: compiled(op) for name, op in FORMS.items()}
    rng = np.random.default_rng(0)
    for tokens, width_in, width_out in [(1576, 768, 768), (1576, 768, 3072), (1576, 3072, 768)]:
        x = rng.standard_normal((tokens, width_in), np.float32)
        w = rng.standard_normal((width_out, width_in), np.float32)
        dy = rng.standard_normal((tokens, width_out), np.float32)
        operands = {"x @ W^T (forward)": (x, w), "dy @ W (grad of x)": (dy, w), "dy^T @ x (grad of W)": (dy, x)}
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
