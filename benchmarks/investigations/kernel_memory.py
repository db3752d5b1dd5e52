"""What each MindSpore CPU kernel keeps in memory for good, by op form (the attention's
Transposes).

    .venv/bin/python benchmarks/investigations/kernel_memory.py [--counts 4 24]

A compiled graph of N independent copies of one op, each on its own scaled copy of a
(8, 197, 12, 64) float32 tensor (4.6 MiB: ViT-B's heads at batch 8) and each summed into
one scalar, so that every copy's output is dead right after its sum and a runtime that
frees at last use needs the same memory for any N. Each (form, N) runs in a fresh process;
the table gives the peak resident memory's growth over the process before the first call,
and the slope between the two counts: what one copy keeps beyond its tensors' lifetimes.
The `... backward` forms differentiate N products `P_i @ v` (P: the attention weights,
(8, 12, 197, 197)) written with `ops.matmul` or with the `BatchMatMul` primitive.

Found with it (MindSpore 2.10, 2026-12-03): every Transpose kernel keeps about twice its
output's size (Tensor.transpose, ops.permute and ops.swapaxes alike; mint.permute keeps
about its output's size but runs seven times slower), where other kernels keep a fixed
quarter MiB; and the gradient of `ops.matmul` transposes P and v explicitly, where
`BatchMatMul`'s uses the kernel's transpose flags.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

FORMS = ("multiply", "Tensor.transpose", "ops.permute", "mint.permute", "reshape", "softmax",
         "ops.matmul backward", "BatchMatMul backward")


def worker(form: str, count: int) -> None:
    import mindspore as ms
    import numpy as np
    import psutil
    from mindspore import mint, ops

    from network_expansion.graphs import compiled

    heads = ms.Tensor(np.ones((8, 197, 12, 64), np.float32))
    weights = ms.Tensor(np.full((8, 12, 197, 197), 1 / 197, np.float32))
    mix = ops.BatchMatMul()

    def one(x, i):
        scaled = x * (1.0 + i)
        if form == "Tensor.transpose":
            return scaled.transpose(0, 2, 1, 3)
        if form == "ops.permute":
            return ops.permute(scaled, (0, 2, 1, 3))
        if form == "mint.permute":
            return mint.permute(scaled, (0, 2, 1, 3))
        if form == "reshape":
            return scaled.reshape(8, 12, 197, 64)
        if form == "softmax":
            return ops.softmax(scaled.reshape(8, 12, 197, 64), -1)
        return scaled

    def graph(x):  # only what it reads: an unread graph input slows every run (benchmarks/investigations/unused_input.py)
        total = x.sum()
        for i in range(count):
            total = total + one(x, i).sum()
        return total

    def products(p, v):
        total = v.sum()
        for i in range(count):
            scaled = p * (1.0 + i)
            total = total + (ops.matmul(scaled, v) if form == "ops.matmul backward" else mix(scaled, v)).sum()
        return total

    gradient = ops.grad(products, grad_position=(0, 1))

    def backward(p, v):
        return gradient(p, v)

    if form.endswith("backward"):
        function, inputs = compiled(backward), (weights, heads.transpose(0, 2, 1, 3))
    else:
        function, inputs = compiled(graph), (heads,)
    before = psutil.Process().memory_info().rss / 2**20
    out = function(*inputs)
    start = time.perf_counter()
    for _ in range(5):
        out = function(*inputs)
    (out[0] if isinstance(out, tuple) else out).asnumpy()
    milliseconds = (time.perf_counter() - start) / 5 * 1000
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before, milliseconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs=2, default=[4, 24], metavar=("FEW", "MANY"))
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]))
    few, many = args.counts
    print(f"| form | peak growth, {few} copies (MiB) | {many} copies (MiB) | kept per copy (MiB) "
          f"| ms per copy |")
    print("|---|---:|---:|---:|---:|")
    for form in args.forms:
        results = []
        for count in (few, many):
            line = subprocess.run([sys.executable, __file__, "--worker", form, str(count)], capture_output=True,
                                  text=True, check=True, env={"GLOG_v": "3", **os.environ})
            results.append([float(value) for value in line.stdout.split()[-2:]])
        (memory_few, time_few), (memory_many, time_many) = results
        print(f"| {form} | {memory_few:.0f} | {memory_many:.0f} | {(memory_many - memory_few) / (many - few):.2f} "
              f"| {(time_many - time_few) / (many - few):.2f} |", flush=True)


if __name__ == "__main__":
    main()
