"""Forward speed of the full ViT-B/16: graph mode against PyNative, same weights, same run.

    .venv/bin/python benchmarks/inference.py [--batches 1 8] [--repeats 3]

Prints one table: compile time, seconds per batch and images/s for each mode and batch.
"""

import argparse
import time

import mindspore as ms
import numpy as np

from network_expansion import VisionTransformer


def measure(call, images, repeats):
    start = time.perf_counter()
    call(images).asnumpy()  # compiles in graph mode
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(images).asnumpy()
        times.append(time.perf_counter() - start)
    return first, min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ms.set_seed(0)
    network = VisionTransformer()
    network.set_train(False)
    rows = []
    for batch in args.batches:
        images = ms.Tensor(np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32))
        for mode, call in (("graph (ms.jit)", ms.jit(network.construct)), ("PyNative", network)):
            first, best = measure(call, images, args.repeats)
            compile_s = first - best if mode.startswith("graph") else 0.0
            rows.append((mode, batch, compile_s, best, batch / best))
    print(f"{'mode':<16}{'batch':>6}{'compile s':>11}{'s/batch':>10}{'images/s':>10}")
    for mode, batch, compile_s, best, rate in rows:
        print(f"{mode:<16}{batch:>6}{compile_s:>11.2f}{best:>10.3f}{rate:>10.2f}")


if __name__ == "__main__":
    main()
