"""MindSpore's CPU kernels against PyTorch's, layer by layer, at a ViT-B/16 train step's shapes.

    .venv/bin/python benchmarks/investigations/kernel_peer.py --peer-python .venv-peer/bin/python [--rounds 7]

Where the package's ViT-B train step loses to timm's (docs/log/performance.md), is it the
package's forms or MindSpore's kernels? Each row is one layer of the network at batch 8
(1576 tokens), computed the same way on both sides from the same NumPy draws (the
coordinator checks that both give the same sum, to 1e-3 relative), in two worker processes
taking turns (benchmarks/turns.py), two threads each:

* MindSpore: the form the package runs (`model._affine`, `model._layer_norm`,
  `model._gelu`, the attention's `BatchMatMul`s; for training, the forward's output and the
  gradients through `ops.GradOperation` with the output's gradient given), compiled as the
  package compiles (`graphs.compiled`), without and with kernel fusion (`fuse=True`: what
  the package compiles at ViT-B's shapes where MindSpore's AKG is available);
* PyTorch: what timm's layer runs (`F.linear`, `F.layer_norm`, `F.gelu`, `softmax`,
  `matmul`; for training, the forward and `autograd.grad` with the same output gradient),
  eager.

A training row returns the forward's output beside the gradients on both sides: a graph
that returned the gradients alone would not compute the forward where the backward does
not need it (a Dense layer's, the GELU's, the attention's products), and the row would
compare MindSpore's backward with PyTorch's forward and backward (it did before
2026-12-04: those rows' MindSpore times were too low by a forward).

The AdamW row is one update of a 3072 x 768 weight and its moments (`recipe.AdamW`, the
package's optimizer; `torch.optim.AdamW`'s default).
Prints median milliseconds per call and MindSpore's time as a multiple of PyTorch's, and
what a ViT-B train step's layers add up to on each side (`TRAIN_STEP`).
"""

from __future__ import annotations

import argparse
import statistics
import os
import sys
import time

import numpy as np
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
from turns import Worker, serve  # noqa: E402  (benchmarks/turns.py)

TOKENS, WIDTH, HIDDEN, HEADS = 8 * 197, 768, 3072, 12
HEAD = WIDTH // HEADS
ATTENTION = (8 * HEADS, 197, HEAD)

# name: input shapes, forward only
FORWARD = {
    "Dense 768 -> 3072 (MLP 1)": [(TOKENS, WIDTH), (HIDDEN, WIDTH), (HIDDEN,)],
    "Dense 3072 -> 768 (MLP 2)": [(TOKENS, HIDDEN), (WIDTH, HIDDEN), (WIDTH,)],
    "Dense 768 -> 768 (q, k, v, out)": [(TOKENS, WIDTH), (WIDTH, WIDTH), (WIDTH,)],
    "LayerNorm 768": [(TOKENS, WIDTH), (WIDTH,), (WIDTH,)],
    "GELU (tanh) 3072": [(TOKENS, HIDDEN)],
    "softmax 12 x 197 x 197": [(8, HEADS, 197, 197)],
    "q k^T": [ATTENTION, ATTENTION],
    "weights v": [(8 * HEADS, 197, 197), ATTENTION],
    "heads' layout (b, n, h, d) -> (b, h, n, d)": [(8, 197, HEADS, HEAD)],
    "residual add 768": [(TOKENS, WIDTH), (TOKENS, WIDTH)],
}
# the layers also raced training: forward and backward, given the output's gradient
TRAINED = ("Dense 768 -> 3072 (MLP 1)", "Dense 3072 -> 768 (MLP 2)", "Dense 768 -> 768 (q, k, v, out)",
           "LayerNorm 768", "GELU (tanh) 3072", "softmax 12 x 197 x 197", "q k^T", "weights v")
# name: (input shapes, training)
LAYERS = {**{name: (shapes, False) for name, shapes in FORWARD.items()},
          **{f"{name}, training": (FORWARD[name], True) for name in TRAINED},
          "AdamW update, 3072 x 768": ([(HIDDEN, WIDTH)] * 4, False)}


# How often a ViT-B/16 train step (12 blocks) runs each layer: per block four attention
# projections, two MLP layers, two LayerNorms, a GELU, a softmax and the attention's two
# batched products, trained; the heads' layout changed four times forward and four back; two
# residual adds forward and two gradient sums back; the final LayerNorm; AdamW over the
# 86.6 million parameters (36.7 of the 3072 x 768 updates). The patch embedding, the head and
# the loss are left out (under 2% of either step).
TRAIN_STEP = {
    "Dense 768 -> 768 (q, k, v, out), training": 48, "Dense 768 -> 3072 (MLP 1), training": 12,
    "Dense 3072 -> 768 (MLP 2), training": 12, "LayerNorm 768, training": 25, "GELU (tanh) 3072, training": 12,
    "softmax 12 x 197 x 197, training": 12, "q k^T, training": 12, "weights v, training": 12,
    "heads' layout (b, n, h, d) -> (b, h, n, d)": 96, "residual add 768": 48,
    "AdamW update, 3072 x 768": 86.6e6 / (HIDDEN * WIDTH),
}


def draws(name: str) -> list:
    """The layer's inputs, the same on both sides (weights at the scale of a trained ViT's)."""
    rng = np.random.default_rng(0)
    shapes, _ = LAYERS[name]
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    if name.startswith("Dense"):
        arrays[1] *= 0.02
    if name.startswith("AdamW"):  # parameter, first moment, second moment (positive), gradient
        arrays[2] = np.abs(arrays[2]) * 1e-3
    return arrays


# -- MindSpore: the package's forms ---------------------------------------------------

def mindspore_layers(fuse: bool) -> dict:
    import network_expansion  # noqa: F401  (first: it makes OpenMP's idle threads passive, graphs.py)
    import mindspore as ms
    from mindspore import ops

    from network_expansion import model
    from network_expansion.graphs import compiled

    def dense(narrows):
        def forward(x, w, b):
            return model._affine(x, w, b, narrows)
        return forward

    def inference_dense(x, w, b):  # evaluation runs the nn.Dense: MatMul, BiasAdd
        return ops.BiasAdd()(ops.MatMul(transpose_b=True)(x, w), b)

    def layer_norm(training):
        def forward(x, gain, shift):  # fused graphs take the written-out forward, as the blocks do
            return model._layer_norm(x, gain, shift, 1e-6, training, fuse)
        return forward

    def gelu(x):
        return model._gelu(x, True, fuse)  # fused graphs take the backward fusion runs whole

    def softmax(x):
        return ops.softmax(x, axis=-1)

    def add(x, y):
        return x + y

    def heads_first(x):
        return x.transpose(0, 2, 1, 3)

    def scores(q, k):  # the attention's, as model._attention computes them
        return ops.BatchMatMul(transpose_b=True)(q, k)

    def mix(weights, v):
        return ops.BatchMatMul()(weights, v)

    forms = {
        "Dense 768 -> 3072 (MLP 1)": inference_dense,
        "Dense 3072 -> 768 (MLP 2)": inference_dense,
        "Dense 768 -> 768 (q, k, v, out)": inference_dense,
        "LayerNorm 768": layer_norm(False),
        "GELU (tanh) 3072": gelu,
        "softmax 12 x 197 x 197": softmax,
        "q k^T": scores,
        "weights v": mix,
        "heads' layout (b, n, h, d) -> (b, h, n, d)": heads_first,
        "residual add 768": add,
        "Dense 768 -> 3072 (MLP 1), training": dense(False),
        "Dense 3072 -> 768 (MLP 2), training": dense(True),
        "Dense 768 -> 768 (q, k, v, out), training": inference_dense,  # the attention's, autodiff
        "LayerNorm 768, training": layer_norm(True),
        "GELU (tanh) 3072, training": gelu,
        "softmax 12 x 197 x 197, training": softmax,
        "q k^T, training": scores,
        "weights v, training": mix,
    }
    layers = {}
    for name, function in forms.items():
        inputs = [ms.Tensor(a) for a in draws(name)]
        if LAYERS[name][1]:  # forward and backward, the output's gradient given
            gradient = ops.GradOperation(get_all=True, sens_param=True)(function)
            sens = ms.Tensor(np.random.default_rng(1).standard_normal(function(*inputs).shape).astype(np.float32))

            def train(*args, function=function, gradient=gradient, sens=sens):
                return (function(*args),) + tuple(gradient(*args, sens))
            layers[name] = (compiled(train, fuse), inputs)
        else:
            def run(*args, function=function):
                return function(*args)
            layers[name] = (compiled(run, fuse), inputs)
    layers["AdamW update, 3072 x 768"] = mindspore_adamw(fuse)
    return layers


def mindspore_adamw(fuse: bool):
    import mindspore as ms

    from network_expansion.graphs import compiled
    from network_expansion.recipe import AdamW, WarmupCosine

    parameter, m, v, gradient = draws("AdamW update, 3072 x 768")
    weight = ms.Parameter(ms.Tensor(parameter), name="w")
    schedule = WarmupCosine(1e-4, 1e-4, 0, 10**9)  # a constant 1e-4
    optimizer = AdamW([{"params": [weight], "weight_decay": 0.05, "lr": schedule}], schedule, born=[0])  # the package's
    optimizer.moments1[0].set_data(ms.Tensor(m))
    optimizer.moments2[0].set_data(ms.Tensor(v))

    def update(gradient):
        optimizer((gradient,))
        return weight
    return compiled(update, fuse), [ms.Tensor(gradient)]


# -- PyTorch: what timm's layers run ------------------------------------------------------

def torch_layers() -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)

    def layer_norm(x, gain, shift):
        return F.layer_norm(x, (x.shape[-1],), gain, shift, 1e-6)

    forms = {
        "Dense 768 -> 3072 (MLP 1)": F.linear,
        "Dense 3072 -> 768 (MLP 2)": F.linear,
        "Dense 768 -> 768 (q, k, v, out)": F.linear,
        "LayerNorm 768": layer_norm,
        "GELU (tanh) 3072": lambda x: F.gelu(x, approximate="tanh"),
        "softmax 12 x 197 x 197": lambda x: x.softmax(-1),
        "q k^T": lambda q, k: q @ k.transpose(-2, -1),
        "weights v": torch.matmul,
        "heads' layout (b, n, h, d) -> (b, h, n, d)": lambda x: x.permute(0, 2, 1, 3).contiguous(),
        "residual add 768": torch.add,
    }
    for name in [n for n in LAYERS if n.endswith(", training")]:
        forms[name] = forms[name[:-len(", training")]]
    layers = {}
    for name, function in forms.items():
        inputs = [torch.from_numpy(a) for a in draws(name)]
        if LAYERS[name][1]:
            inputs = [x.requires_grad_() for x in inputs]
            sens = torch.from_numpy(np.random.default_rng(1).standard_normal(
                tuple(function(*inputs).shape)).astype(np.float32))

            def train(*args, function=function, sens=sens):
                output = function(*args)
                return (output,) + torch.autograd.grad(output, args, sens)
            layers[name] = (train, inputs)
        else:
            def run(*args, function=function):
                with torch.inference_mode():
                    return function(*args)
            layers[name] = (run, inputs)
    parameter, m, v, gradient = draws("AdamW update, 3072 x 768")
    weight = torch.nn.Parameter(torch.from_numpy(parameter))
    optimizer = torch.optim.AdamW([weight], lr=1e-4, weight_decay=0.05)
    weight.grad = torch.from_numpy(gradient)
    optimizer.step()  # creates the moments
    optimizer.state[weight]["exp_avg"].copy_(torch.from_numpy(m))
    optimizer.state[weight]["exp_avg_sq"].copy_(torch.from_numpy(v))

    def update():
        optimizer.step()
        return weight
    layers["AdamW update, 3072 x 768"] = (update, [])
    return layers


# -- the workers and the race -------------------------------------------------------------

def output_sum(output) -> float:
    """The sum of a layer's outputs (the forward's and every gradient: its value checks that
    both sides compute the same; reading them all waits for the call to end)."""
    outputs = output if isinstance(output, (tuple, list)) else (output,)
    return float(sum(np.asarray(o.asnumpy() if hasattr(o, "asnumpy") else o.detach().numpy(), np.float64).sum()
                     for o in outputs))


def serve_side(side: str) -> None:
    layers = torch_layers() if side == "torch" else mindspore_layers(fuse=side == "mindspore-fused")
    checks = {}
    for name, (function, inputs) in layers.items():  # compile, allocate, and check
        checks[name] = output_sum(function(*inputs))

    def answer(command):
        name = command["layer"]
        if command["do"] == "check":
            return {"sum": checks[name]}
        function, inputs = layers[name]
        start = time.perf_counter()
        for _ in range(command["calls"]):
            output = function(*inputs)
        output_sum(output)  # waits for the last call
        return {"seconds": (time.perf_counter() - start) / command["calls"]}
    serve(answer)


def race(peer_python: str, rounds: int, calls: int, only: list | None = None) -> list:
    names = [n for n in LAYERS if not only or any(word in n for word in only)]
    workers = [Worker([sys.executable, __file__, "--worker", "mindspore"], "MindSpore"),
               Worker([sys.executable, __file__, "--worker", "mindspore-fused"], "MindSpore fused"),
               Worker([peer_python, __file__, "--worker", "torch"], "PyTorch")]
    rows = []
    for name in names:
        sums = [w.ask({"do": "check", "layer": name})["sum"] for w in workers]
        # (AdamW: every call is one more step, and the sides count their steps from different starts: not compared)
        agree = None if name.startswith("AdamW") else all(
            abs(mine - sums[-1]) <= 1e-3 * max(1.0, abs(sums[-1])) for mine in sums[:-1])
        seconds = {w.name: [] for w in workers}
        for round_number in range(rounds):
            turn = round_number % len(workers)
            for worker in workers[turn:] + workers[:turn]:
                seconds[worker.name].append(worker.ask({"do": "time", "layer": name, "calls": calls})["seconds"])
        plain, fused, torch_ = (1e3 * statistics.median(seconds[w.name]) for w in workers)
        rows.append({"layer": name, "mindspore_ms": plain, "fused_ms": fused, "torch_ms": torch_, "same": agree})
        print(f"{name}: {plain:.2f} / {fused:.2f} / {torch_:.2f} ms", file=sys.stderr, flush=True)
    for worker in workers:
        worker.close()
    return rows


def table(rows: list) -> str:
    lines = ["| layer (ViT-B, batch 8) | MindSpore ms | fused ms | PyTorch ms | MindSpore / PyTorch | fused / PyTorch "
             "| same sums |", "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['layer']} | {row['mindspore_ms']:.2f} | {row['fused_ms']:.2f} | {row['torch_ms']:.2f} | "
                     f"{row['mindspore_ms'] / row['torch_ms']:.2f}x | {row['fused_ms'] / row['torch_ms']:.2f}x | "
                     f"{'-' if row['same'] is None else 'yes' if row['same'] else 'NO'} |")
    return "\n".join(lines)


def step_estimate(rows: list) -> str:
    """What a ViT-B train step's layers (`TRAIN_STEP`) add up to on each side."""
    times = {row["layer"]: row for row in rows}
    if not all(name in times for name in TRAIN_STEP):
        return ""
    plain, fused, torch_ = (sum(count * times[name][key] for name, count in TRAIN_STEP.items())
                            for key in ("mindspore_ms", "fused_ms", "torch_ms"))
    return (f"\nA ViT-B/16 train step's layers at batch 8 (TRAIN_STEP's counts): MindSpore {plain:.0f} ms "
            f"({plain / torch_:.2f}x PyTorch's), fused {fused:.0f} ms ({fused / torch_:.2f}x), PyTorch {torch_:.0f} ms")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return serve_side(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", required=True, help="a python with torch (see benchmarks/train_step.py)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5, help="calls per turn")
    parser.add_argument("--only", nargs="+", help="the layers whose names contain one of these words")
    args = parser.parse_args()
    rows = race(args.peer_python, args.rounds, args.calls, args.only)
    print(table(rows))
    print(step_estimate(rows))
    print(f"\nmedian of {args.rounds} turns of {args.calls} calls each, the three workers taking turns")


if __name__ == "__main__":
    main()
