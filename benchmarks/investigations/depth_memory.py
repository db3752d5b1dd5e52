"""What a ViT-B forward + backward holds at each depth: the part that grows with the blocks
and the part that does not.

    .venv/bin/python benchmarks/investigations/depth_memory.py [--depths 1 2 4] [--drop-path 0.1] [--baseline OTHER/src]

For each depth (and each version of the package: this one, and `--baseline`'s), in a
fresh process: the package's network at ViT-B/16's widths, batch 8, its forward +
backward of every trainable parameter compiled as the package compiles it (blocks
compiled once), run once, then the process's peak resident memory over three more runs
(`VmHWM`, reset after the first run) and the fastest of the three. Prints a row per depth
and the least-squares line through them: MiB per block (what each block's activations
and kept tensors cost) and the intercept (what the compiled graph holds whatever the
depth: parameters, and a block function's kernels, which MindSpore keeps once per
compiled function, not once per block). `--drop-path`: stochastic depth at that rate
(rising over the blocks from 0, as the package spreads it), which gives each block a rate
of its own. Also prints what each first call took (compilation, mostly).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(depth: int, batch: int, drop_path: float) -> dict:
    import mindspore as ms
    import numpy as np
    from mindspore import ops

    from network_expansion import ViTConfig, VisionTransformer
    from network_expansion.graphs import compiled

    network = VisionTransformer(ViTConfig(image_size=224, num_classes=1000, depth=depth, drop_path_rate=drop_path),
                                seed=0)
    network.set_train(True)

    def loss_of(images, targets):
        return -(targets * ops.log_softmax(network(images), -1)).sum(-1).mean()

    gradients = ms.value_and_grad(loss_of, None, network.trainable_params())

    def forward_backward(images, targets):
        return gradients(images, targets)

    step = compiled(forward_backward)
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((batch, 3, 224, 224), dtype=np.float32))
    targets = ms.Tensor(np.eye(1000, dtype=np.float32)[rng.integers(0, 1000, batch)])
    start = time.perf_counter()
    step(images, targets)[0].asnumpy()
    first = time.perf_counter() - start
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak: what follows is the steady state, compilation excluded
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        step(images, targets)[0].asnumpy()
        seconds.append(time.perf_counter() - start)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    return {"depth": depth, "peak_mib": peak, "ms": 1e3 * min(seconds), "first_s": first}


def line(points):
    """Least-squares slope and intercept of [(x, y)]."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return slope, my - slope * mx


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth's rate at the last block")
    parser.add_argument("--baseline", metavar="SRC", help="another version's src folder, measured the same way")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.batch, args.drop_path)))
        return
    if len(set(args.depths)) < 2:
        parser.error("give at least two different --depths")
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
    versions = {"package": os.path.abspath(here)}
    if args.baseline:
        versions["baseline"] = os.path.abspath(args.baseline)
    rows = []
    for depth in args.depths:  # versions take turns at each depth: the machine's drift falls on both
        for name, src in versions.items():
            env = dict(os.environ, PYTHONPATH=src)
            out = subprocess.run([sys.executable, __file__, "--worker", str(depth), "--batch", str(args.batch),
                                  "--drop-path", str(args.drop_path)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            rows.append({"version": name, **json.loads(out.strip().splitlines()[-1])})
    print("| version | depth | steady peak MiB | ms per forward + backward | first call s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['version']} | {row['depth']} | {row['peak_mib']:.0f} | {row['ms']:.0f} | {row['first_s']:.1f} |")
    print()
    for name in versions:
        slope, intercept = line([(r["depth"], r["peak_mib"]) for r in rows if r["version"] == name])
        print(f"{name}: {slope:.1f} MiB per block, {intercept:.0f} MiB at depth 0 (the line's intercept)")


if __name__ == "__main__":
    main()
