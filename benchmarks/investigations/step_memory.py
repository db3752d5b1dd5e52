"""What a ViT-B forward + backward graph needs in memory, against what the process holds.

    .venv/bin/python benchmarks/investigations/step_memory.py [--depths 2 4] [--batch 8]

For each depth, in a fresh process: compiles the package's network's forward + backward
(every trainable parameter's gradient, as `benchmarks/train_step.py --parts` does) with
MindSpore's IR dump on, runs it, and reports
* the peak resident memory's growth over the process before the first call (measured);
* what the compiled kernel graph needs if every tensor lives from its kernel to its last
  reader, in the graph's execution order (`graph_build_*.ir`, simulated; views such as
  Reshape share their source's memory), the tensors alive at that peak by the op that
  made them, and the graph's Transpose kernels;
* the slope per block between the depths of each.

The difference between the two slopes is memory the runtime keeps beyond the tensors'
lifetimes (`benchmarks/investigations/kernel_memory.py` measures it kernel by kernel).

The graph is compiled with its blocks inlined (`VisionTransformer.blocks_inlined`), as
every version before 4e56a77 compiled it, so that the kernel graph is one flat file to
simulate; the package's own steps call one compiled block function instead and hold less
(docs/log/performance.md, "Blocks compiled once").
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile

NODE = re.compile(r"^\s+%(\d+)\([^)]*\) = ([\w.]+)\((.*)")
TENSOR = re.compile(r"<Tensor\[(\w+)\], \(([\d, ]*)\)")
VIEWS = {"Reshape", "Load", "Depend", "ExpandDims", "Squeeze", "TupleGetItem"}
BOOKKEEPING = {"MakeTuple", "UpdateState", "Return"}


def read_kernels(path: str) -> list:
    """(id, op, input ids, output bytes, scope) for each node, in the file's (execution) order."""
    lines, kernels, i = open(path).read().split("\n"), [], 0
    while i < len(lines):
        match = NODE.match(lines[i])
        if not match:
            i += 1
            continue
        node, op, rest = int(match.group(1)), match.group(2).replace("PrimFunc_", ""), match.group(3)
        size, scope, i = 0, "", i + 1
        while i < len(lines) and not NODE.match(lines[i]):
            if "->" in lines[i] and not size:
                for dtype, dims in TENSOR.findall(lines[i].split("->", 1)[1]):
                    count = 1
                    for dim in filter(str.strip, dims.split(",")):
                        count *= int(dim)
                    size += count * int(re.sub(r"\D", "", dtype) or 8) // 8
            if "Fullname with scope" in lines[i] and not scope:
                scope = lines[i].split("(", 1)[1].rstrip(")")
            i += 1
        kernels.append((node, op, [int(x) for x in re.findall(r"%(\d+)\b", rest)], size, scope))
    return kernels


def simulate(kernels: list) -> dict:
    """The peak of the memory alive when every tensor is freed after its last reader."""
    source = {}
    for node, op, inputs, _, _ in kernels:
        source[node] = source.get(inputs[0], inputs[0]) if op in VIEWS and inputs else node
    last_reader = {}
    for index, (_, op, inputs, _, _) in enumerate(kernels):
        if op != "Return":
            for x in inputs:
                last_reader[source.get(x, x)] = index
    alive, current, peak = {}, 0, (0, {})
    for index, (node, op, inputs, size, scope) in enumerate(kernels):
        if source[node] == node and op not in VIEWS | BOOKKEEPING:
            alive[node] = (size, ("backward " if "Gradients" in scope or "Expand" in scope else "forward ") + op)
            current += size
        if current > peak[0]:
            peak = (current, dict(alive))
        for x in {source.get(y, y) for y in inputs}:
            if last_reader.get(x) == index and x in alive:
                current -= alive.pop(x)[0]
    by_op = collections.Counter()
    for size, name in peak[1].values():
        by_op[name] += size / 2**20
    transposes = [size for _, op, _, size, _ in kernels if op == "Transpose"]
    return {"need_mib": peak[0] / 2**20, "at_peak": dict(by_op.most_common(6)),
            "transposes": len(transposes), "transposed_mib": sum(transposes) / 2**20}


def worker(depth: int, batch: int) -> None:
    import mindspore as ms
    import numpy as np
    import psutil

    from network_expansion import ViTConfig, VisionTransformer
    from network_expansion.graphs import compiled
    from network_expansion.recipe import soft_cross_entropy

    folder = tempfile.mkdtemp(prefix="step-memory-")
    ms.set_context(save_graphs=2, save_graphs_path=folder)
    network = VisionTransformer(ViTConfig(image_size=224, num_classes=1000, depth=depth), seed=0)
    network.set_train(True)
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((batch, 3, 224, 224), dtype=np.float32))
    targets = ms.Tensor(np.eye(1000, dtype=np.float32)[rng.integers(0, 1000, batch)])

    def loss_of(x, t):
        return soft_cross_entropy(network(x), t)

    gradients = ms.value_and_grad(loss_of, None, network.trainable_params())

    def forward_backward(x, t):
        return gradients(x, t)

    step = compiled(forward_backward)
    before = psutil.Process().memory_info().rss / 2**20
    # the blocks inlined (one flat kernel graph, which the simulation reads); versions
    # before 4e56a77 always inline them
    with getattr(network, "blocks_inlined", contextlib.nullcontext)():
        step(images, targets)[0].asnumpy()
        step(images, targets)[0].asnumpy()
    measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    path = max(glob.glob(os.path.join(folder, "graph_build_*.ir")), key=os.path.getsize)
    print(json.dumps({"depth": depth, "measured_mib": measured, **simulate(read_kernels(path))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs=2, default=[2, 4])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--worker", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    rows = []
    for depth in args.depths:
        out = subprocess.run([sys.executable, __file__, "--worker", str(depth), str(args.batch)], capture_output=True,
                             text=True, check=True, env={"GLOG_v": "3", **os.environ}).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print("| depth | measured peak growth MiB | graph's need MiB | Transpose kernels | their outputs MiB "
          "| alive at the need's peak, MiB by op |")
    print("|---:|---:|---:|---:|---:|---|")
    for row in rows:
        alive = ", ".join(f"{name} {mib:.0f}" for name, mib in row["at_peak"].items())
        print(f"| {row['depth']} | {row['measured_mib']:.0f} | {row['need_mib']:.0f} | {row['transposes']} "
              f"| {row['transposed_mib']:.0f} | {alive} |")
    first, last = rows
    blocks = last["depth"] - first["depth"]
    print(f"per block: measured {(last['measured_mib'] - first['measured_mib']) / blocks:.0f} MiB, "
          f"graph's need {(last['need_mib'] - first['need_mib']) / blocks:.0f} MiB, "
          f"Transposes {(last['transposes'] - first['transposes']) / blocks:.0f} "
          f"({(last['transposed_mib'] - first['transposed_mib']) / blocks:.0f} MiB of outputs)")


if __name__ == "__main__":
    main()
