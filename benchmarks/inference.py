"""Inference speed of the full ViT-B/16: this package against timm on PyTorch, same run.

    .venv/bin/python benchmarks/inference.py [--batches 1 8] [--repeats 3]

The peer is what a user would otherwise pick: timm's `vit_base_patch16_224` on PyTorch's
CPU build. It is installed for the benchmark only (`.venv/bin/pip install torch==2.13.0
timm`) and skipped with a message where it is missing. Every row is the best of
`--repeats` timed forward passes after one warm-up (which compiles, in graph mode).
"share of matmul peak" relates the forward's 17.6 GMACs per image to the float32 matmul
throughput this machine measured in the same run (2048^3, MindSpore and NumPy).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

GMACS_PER_IMAGE = 17.6


def best_time(call, repeats: int) -> tuple:
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, min(times)


def matmul_peak(repeats: int) -> dict:
    import mindspore as ms
    from mindspore import ops

    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    flops = 2 * 2048 ** 3
    ta, tb = ms.Tensor(a), ms.Tensor(a)
    matmul = ms.jit(ops.matmul)
    _, ms_time = best_time(lambda: matmul(ta, tb).asnumpy(), repeats + 2)
    _, np_time = best_time(lambda: a @ a, repeats + 2)
    return {"MindSpore": flops / ms_time / 1e9, "NumPy": flops / np_time / 1e9}


def ours(batches, repeats):
    import mindspore as ms

    from network_expansion import VisionTransformer
    from network_expansion.errors import PrecisionError
    from network_expansion.predict import _in_precision

    rows = []
    for precision in ("float32", "float16", "bfloat16"):
        ms.set_seed(0)
        network = VisionTransformer()
        network.set_train(False)
        try:
            network = _in_precision(network, precision)
        except PrecisionError as error:
            rows.append(("network_expansion graph", precision, None, None, None, str(error).split(":")[0]))
            continue
        forward = ms.jit(network.construct)
        for batch in batches:
            images = ms.Tensor(np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32))
            first, best = best_time(lambda: forward(images).asnumpy(), repeats)
            rows.append(("network_expansion graph", precision, batch, first - best, best, ""))
            if precision == "float32":
                _, eager = best_time(lambda: network(images).asnumpy(), max(1, repeats - 1))
                rows.append(("network_expansion PyNative", precision, batch, 0.0, eager, ""))
    return rows


def peer(batches, repeats):
    try:
        import timm
        import torch
    except ImportError as error:
        return [("timm (PyTorch)", "-", None, None, None, f"skipped: {error.name} is not installed "
                 f"(pip install torch==2.13.0 timm)")]
    torch.set_num_threads(2)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    rows = []
    for precision in ("float32", "bfloat16"):
        for batch in batches:
            images = torch.randn(batch, 3, 224, 224)

            def run():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                            enabled=precision == "bfloat16"):
                    model(images)

            first, best = best_time(run, repeats)
            rows.append((f"timm {timm.__version__} / torch {torch.__version__.split('+')[0]}",
                         precision + (" autocast" if precision == "bfloat16" else ""), batch, first - best, best, ""))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    peak = matmul_peak(args.repeats)
    rows = ours(args.batches, args.repeats) + peer(args.batches, args.repeats)
    print(f"float32 matmul 2048^3 on this machine: MindSpore {peak['MindSpore']:.0f} GFLOP/s, "
          f"NumPy {peak['NumPy']:.0f} GFLOP/s\n")
    header = f"| {'implementation':<30} | {'precision':<17} | batch | warm-up s | s/batch | images/s | share of MindSpore matmul peak |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, precision, batch, warmup, best, note in rows:
        if best is None:
            print(f"| {name:<30} | {precision:<17} |     - |         - |       - |        - | {note} |")
            continue
        rate = batch / best
        share = rate * 2 * GMACS_PER_IMAGE / peak["MindSpore"]
        print(f"| {name:<30} | {precision:<17} | {batch:>5} | {warmup:>9.2f} | {best:>7.3f} | {rate:>8.2f} | {share:>29.0%} |")


if __name__ == "__main__":
    main()
