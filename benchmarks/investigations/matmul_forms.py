"""MindSpore's CPU MatMul alone, in the three forms a Dense layer's training step uses: the
forward `x @ W^T` and the backward's `dy @ W` and `dy^T @ x`, at ViT-B/16 shapes (batch 8),
interleaved, medians of 15.

    .venv/bin/python benchmarks/investigations/matmul_forms.py

The reproduction for docs/log/performance.md. MindSpore 2.10's CPU MatMul is 2 to 3 times
slower when its second operand is stored (K, N) with a wide N (3072) than stored (N, K):
the MLP's second layer's backward (`dy @ W`, `dy^T @ x` at 3072 -> 768). The fourth form,
`(x^T @ dy)^T`, is the weight gradient the package computes for that layer
(`model._Affine`): the same matrix from the fast layout and one transpose.

    .venv/bin/python benchmarks/investigations/matmul_forms.py --weight-gradient

races the weight gradient's forms (the package's `dy^T @ x`, as one `BatchMatMul`, in two
halves of the tokens, its transpose `x^T @ dy`) compiled as ViT-B's graphs are, against
NumPy's BLAS computing the same product in a worker process (docs/log/performance.md, "The gap's
last account").
"""
import statistics
import os
import sys
import time

import mindspore as ms
import numpy as np
from mindspore import ops

from network_expansion.graphs import compiled  # as the package compiles: without the queue thread
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
from turns import Worker, serve  # noqa: E402  (benchmarks/turns.py)

FORWARD, PLAIN, FIRST_TRANSPOSED = ops.MatMul(transpose_b=True), ops.MatMul(), ops.MatMul(transpose_a=True)


def forward(x, w):
    return FORWARD(x, w)


def input_gradient(dy, w):
    return PLAIN(dy, w)


def weight_gradient(dy, x):
    return FIRST_TRANSPOSED(dy, x)


def weight_gradient_transposed(dy, x):
    return FIRST_TRANSPOSED(x, dy).T


def weight_gradient_batched(dy, x):
    return BATCHED_FIRST_TRANSPOSED(dy.reshape((1,) + dy.shape), x.reshape((1,) + x.shape))[0]


def weight_gradient_halves(dy, x):
    half = dy.shape[0] // 2
    return FIRST_TRANSPOSED(dy[:half], x[:half]) + FIRST_TRANSPOSED(dy[half:], x[half:])


def weight_gradient_other_way(dy, x):
    return FIRST_TRANSPOSED(x, dy)  # x^T dy: the weight gradient's transpose


BATCHED_FIRST_TRANSPOSED = ops.BatchMatMul(transpose_a=True)
FORMS = {"x @ W^T (forward)": forward, "dy @ W (grad of x)": input_gradient, "dy^T @ x (grad of W)": weight_gradient,
         "(x^T @ dy)^T (grad of W)": weight_gradient_transposed}
# --weight-gradient: the weight gradient's other forms, and NumPy's BLAS on the same product
WEIGHT_FORMS = {"dy^T @ x (grad of W)": weight_gradient, "as a BatchMatMul": weight_gradient_batched,
                "in two halves of the tokens": weight_gradient_halves, "x^T @ dy (its transpose)": weight_gradient_other_way}


def weight_gradient_operands():
    rng = np.random.default_rng(0)
    return rng.standard_normal((1576, 3072), np.float32), rng.standard_normal((1576, 768), np.float32)


def numpy_worker() -> None:
    """NumPy's BLAS on the same product, in a process of its own (its threads would
    otherwise compete with MindSpore's between calls)."""
    dy, x = weight_gradient_operands()
    dy.T @ x

    def answer(command):
        start = time.perf_counter()
        dy.T @ x
        return {"seconds": time.perf_counter() - start}
    serve(answer)


def weight_gradient_race(rounds: int) -> None:
    """The weight gradient of ViT-B's MLP layer (1576 tokens, 768 -> 3072) in MindSpore's forms,
    compiled as the package compiles ViT-B's graphs (fused, threads bound), and NumPy's BLAS
    on the same product in a worker process, taking turns."""
    dy, x = weight_gradient_operands()
    runs = {}
    for name, function in WEIGHT_FORMS.items():
        graph, operands = compiled(function, fuse=True), (ms.Tensor(dy), ms.Tensor(x))
        graph(*operands).asnumpy()  # compile

        def run(graph=graph, operands=operands):
            start = time.perf_counter()
            graph(*operands).asnumpy()
            return time.perf_counter() - start
        runs[name] = run
    peer = Worker([sys.executable, __file__, "--numpy-worker"], "numpy")
    runs["NumPy dy.T @ x (another process)"] = lambda: peer.ask({"do": "product"})["seconds"]
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(run())
    peer.close()
    gflop = 2 * 1576 * 768 * 3072 / 1e9
    print(f"weight gradient, 1576 tokens, 768 -> 3072, median of {rounds}, taking turns:")
    for name, t in times.items():
        print(f"  {name}: {1e3 * statistics.median(t):.1f} ms ({gflop / statistics.median(t):.0f} GFLOP/s)")


def main():
    if "--numpy-worker" in sys.argv:
        return numpy_worker()
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weight-gradient", action="store_true", help="race the weight gradient's forms instead")
    parser.parse_args()
    if "--weight-gradient" in sys.argv:
        return weight_gradient_race(rounds=30)
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
