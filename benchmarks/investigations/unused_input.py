"""MindSpore 2.10 on the CPU: a compiled graph's unused input slows every run of it.

    .venv/bin/python benchmarks/investigations/unused_input.py [--kernels 400] [--rounds 7] [--queue]

Three graphs of the same chain of `--kernels` small MatMuls (64 x 64) and one multiply,
compiled with `ms.jit`, taking turns, 50 runs each per round, median milliseconds per run:

* `one input`: `f(x) = chain(x) * 2`;
* `unused input`: `f(x, s) = chain(x) * 2`, `s` never read: the Trainer's step until
  2026-12-01, which took the gates' value also when there were no gates to set;
* `input read`: `f(x, s) = chain(x) * s`.

The cost of the unused input grows with the graph's kernels, so it weighs on a launch-bound
graph (the demo's ViT, width 64: about 1,800 kernels a step), not on ViT-B's (its
kernels are large: no difference measured at depth 4, 2.50 against 2.52 s a step).
MindSpore's queue thread is switched off as the package does (`graphs.compiled`) unless
`--queue`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mindspore as ms
import numpy as np
from mindspore import ops


def graphs(kernels: int) -> dict:
    """`{name: (function, number of inputs)}`, each over Parameters of its own."""
    def chain_of():
        weights = [ms.Parameter(ms.Tensor(np.eye(64, dtype=np.float32)), name=f"w{i}") for i in range(kernels)]

        def chain(x):
            for w in weights:
                x = ops.matmul(x, w)
            return x
        return chain

    one, unused, read = chain_of(), chain_of(), chain_of()

    def one_input(x):
        return one(x) * 2.0

    def unused_input(x, s):
        return unused(x) * 2.0

    def input_read(x, s):
        return read(x) * s

    return {"one input": (one_input, 1), "unused input": (unused_input, 2), "input read": (input_read, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--queue", action="store_true", help="keep MindSpore's queue thread on")
    args = parser.parse_args()
    if not args.queue:
        from network_expansion.tuning import _run_on_calling_thread

        _run_on_calling_thread()
    x = ms.Tensor(np.ones((64, 64), np.float32))
    s = ms.Tensor(1.0, ms.float32)
    runs = {}
    for name, (function, inputs) in graphs(args.kernels).items():
        compiled = ms.jit(function)
        arguments = (x, s)[:inputs]
        compiled(*arguments).asnumpy()  # compile
        runs[name] = (compiled, arguments)
    times = {name: [] for name in runs}
    for round_ in range(args.rounds):
        names = list(runs) if round_ % 2 == 0 else list(runs)[::-1]
        for name in names:
            compiled, arguments = runs[name]
            start = time.perf_counter()
            for _ in range(50):
                out = compiled(*arguments)
            out.asnumpy()
            times[name].append((time.perf_counter() - start) / 50 * 1000)
    base = statistics.median(times["one input"])
    print(f"{args.kernels} MatMuls 64x64, {args.rounds} rounds of 50 runs, queue thread "
          f"{'on' if args.queue else 'off'}\n")
    print("| graph | ms per run | vs one input |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
