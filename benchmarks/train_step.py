"""One training step of this package against timm + PyTorch's AdamW, in the same run.

    .venv/bin/python benchmarks/train_step.py [--scales vit-b demo] [--rounds 5] [--drop-path 0.1]
        [--peer-python /path/to/python-with-torch-and-timm] [--baseline OTHER/src]

Each side runs in a worker process of its own (so each has its own peak memory), and the
coordinator makes them take turns, a few steps each round: this machine's speed drifts by
up to 20% within minutes, and runs that take turns share the drift.

* package: the step the `Trainer` runs (soft targets on the host, forward, loss, backward,
  AdamW, then the EMA update), through the real `Trainer` on random images; beside it,
  the same network's forward alone (train mode) and forward + backward, compiled the same
  way, to say where the step's time goes.
* timm: `vit_base_patch16_224` (or the demo's shape), `torch.optim.AdamW` with DeiT's
  weight-decay groups, label-smoothed cross entropy, `timm.utils.ModelEmaV3` updated every
  step; two threads, as MindSpore uses here.
* inference: the eval-mode forward of each side (batch 8 at ViT-B).

Scales: `vit-b` is ViT-B/16 at 224 px, batch 8, fp32; `demo` the demo's ViT (width 64,
12 blocks, 16x16 px, patch 4), batch 32. The peer needs torch and timm, which the package
does not depend on; put them in a venv of their own (the MindSpore wheel pins NumPy < 2,
PyTorch's wants NumPy 2) and name its python with `--peer-python`:

    python3 -m venv .venv-peer && .venv-peer/bin/pip install torch==2.14.1 torchvision==0.29.1 timm

Prints a table: median milliseconds per step over the rounds, images/s, the package's step
as a share of timm's speed, each worker's peak resident memory (whole process), and what
its first steps took beyond the median's pace (MindSpore's compilation; PyTorch's first
allocations).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
from turns import Worker, serve  # benchmarks/turns.py

SCALES = {
    # name: (architecture, batch size)
    "vit-b": (dict(image_size=224, patch_size=16, width=768, depth=12, num_heads=12, mlp_width=3072,
                   num_classes=1000), 8),
    "demo": (dict(image_size=16, patch_size=4, width=64, depth=12, num_heads=4, mlp_width=128, num_classes=10), 32),
}


# -- the workers: each answers "steps N" with the seconds of N steps -----------------

def compile_as_package(network, function):
    """`function` compiled as the package compiles its graphs, in whatever version of it is
    imported: since 2026-12-04 fused at ViT-B's size with the blocks in their fused forms
    (`graphs.compiled_for`); before, `graphs.compiled` (fused on request) or plain `ms.jit`."""
    try:
        from network_expansion.graphs import compiled_for
        return compiled_for(network, function)
    except ImportError:
        pass
    try:  # on the CPU without MindSpore's queue thread (since 2026-12-01)
        from network_expansion.graphs import compiled
    except ImportError:
        import mindspore as ms
        return ms.jit(function)
    fuse = getattr(network, "fuses_kernels", False)
    return compiled(function, fuse) if fuse else compiled(function)


def package_worker(scale: str, job: str, drop_path: float = 0.0):
    architecture, batch = SCALES[scale]
    tune_for_this_cpu(architecture)
    from network_expansion import ArrayData, TrainConfig, Trainer, ViTConfig, VisionTransformer

    import mindspore as ms

    config = ViTConfig(**architecture, drop_path_rate=drop_path)
    rng = np.random.default_rng(0)
    model = VisionTransformer(config, seed=0)
    if job == "inference":
        from network_expansion.graphs import compiled_forward

        model.set_train(False)
        forward = compiled_forward(model)
        images = ms.Tensor(rng.standard_normal((batch, 3, config.image_size, config.image_size), dtype=np.float32))

        def run(steps):
            for _ in range(steps):
                out = forward(images)
            out.asnumpy()
        return run
    if job in ("forward", "backward"):
        from network_expansion.recipe import soft_cross_entropy  # (not in versions before 2026-12-01)

        model.set_train(True)
        images = ms.Tensor(rng.standard_normal((batch, 3, config.image_size, config.image_size), dtype=np.float32))
        targets = ms.Tensor(np.eye(config.num_classes, dtype=np.float32)[rng.integers(0, config.num_classes, batch)])

        def loss_of(x, t):
            return soft_cross_entropy(model(x), t)

        gradients = ms.value_and_grad(loss_of, None, model.trainable_params())

        def forward_only(x, t):
            return loss_of(x, t)

        def forward_backward(x, t):
            return gradients(x, t)  # all of it: a graph that returned the loss alone would drop the backward

        function = forward_only if job == "forward" else forward_backward
        compiled = compile_as_package(model, function)

        def run(steps):
            for _ in range(steps):
                out = compiled(images, targets)
            (out[0] if isinstance(out, tuple) else out).asnumpy()
        return run
    # the Trainer's own step, on random images: one "epoch" is `steps` steps
    state = {"trainer": None}

    def run(steps):
        if state["trainer"] is None or len(state["trainer"].train_data) != steps:
            x = rng.standard_normal((steps * batch, 3, config.image_size, config.image_size), dtype=np.float32)
            y = rng.integers(0, config.num_classes, steps * batch).astype(np.int32)
            recipe = TrainConfig(epochs=10_000, warmup_epochs=1, log_every=steps)
            fresh = state["trainer"] is None
            state["trainer"] = Trainer(model if fresh else state["trainer"].model, ArrayData(x, y, batch, flip=False),
                                       config=recipe, progress=False)
        trainer = state["trainer"]
        trainer.fit(until=trainer.epoch + 1)
    return run


def tune_for_this_cpu(architecture: dict) -> None:
    """The benchmark is the program: it tunes the process as the command line does
    (`tune_cpu`, kernel fusion where it pays), before MindSpore is imported. Versions of
    the package before 2026-12-06 have no `tune_cpu`: importing them tuned the process."""
    try:
        from network_expansion.tuning import tune_cpu
    except ImportError:
        import network_expansion  # noqa: F401  (it set OpenMP's wait policy on import)
        return
    tune_cpu(kernel_fusion=False)  # first: before MindSpore is imported
    from network_expansion.config import ViTConfig
    from network_expansion.cpu_forms import fusion_pays

    tune_cpu(kernel_fusion=fusion_pays(ViTConfig(**architecture)))


def timm_worker(scale: str, job: str, drop_path: float = 0.0):
    import timm
    import torch
    from timm.utils import ModelEmaV3

    torch.set_num_threads(2)
    torch.manual_seed(0)
    architecture, batch = SCALES[scale]
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=architecture["image_size"], patch_size=architecture["patch_size"], embed_dim=architecture["width"],
        depth=architecture["depth"], num_heads=architecture["num_heads"],
        mlp_ratio=architecture["mlp_width"] / architecture["width"], num_classes=architecture["num_classes"],
        drop_path_rate=drop_path)
    images = torch.randn(batch, 3, architecture["image_size"], architecture["image_size"])
    if job == "inference":
        model.eval()

        def run(steps):
            with torch.inference_mode():
                for _ in range(steps):
                    model(images)
        return run
    labels = torch.randint(0, architecture["num_classes"], (batch,))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and n not in ("cls_token", "pos_embed")]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and n not in ("cls_token", "pos_embed"))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=5e-4)
    ema = ModelEmaV3(model, decay=0.99996)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()

    def run(steps):
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            ema.update(model)
    return run


def serve_side(side: str, scale: str, job: str, drop_path: str = "0"):
    """The worker's loop: answers `steps N` with the seconds of N steps (turns.serve)."""
    run = (package_worker if side == "package" else timm_worker)(scale, job, float(drop_path))

    def answer(command):
        start = time.perf_counter()
        run(command["steps"])
        return {"seconds": time.perf_counter() - start}
    serve(answer)


# -- the coordinator -------------------------------------------------------------------

def has_peer(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import timm, torch"], capture_output=True)
    return probe.returncode == 0


def race(scale: str, rounds: int, peer_python: str | None, baseline: str | None = None, parts: bool = False,
         drop_path: float = 0.0) -> list:
    """Rows of one scale: every job's median seconds per step, taking turns each round.

    The workers stay alive through the race, so their memory adds up (about 7 GiB for the
    package's ViT-B train step): `parts` races the forward and forward + backward graphs
    alone instead of the train steps."""
    _, batch = SCALES[scale]
    steps = 2 if scale == "vit-b" else 20
    if parts:
        jobs = [("package", "forward", None), ("package", "backward", None)]
    else:
        jobs = [("package", "train", None), ("package", "inference", None)]
        if baseline:
            jobs += [("package", "train", baseline), ("package", "inference", baseline)]
        if peer_python:
            jobs += [("timm", "train", None), ("timm", "inference", None)]
    workers, warm_up = [], {}
    for side, job, source in jobs:  # one at a time: no worker's build or compile overlaps another's timing
        python = sys.executable if side == "package" else peer_python
        worker = Worker([python, __file__, "--worker", side, scale, job, str(drop_path)],
                        f"{side}{' (baseline)' if source else ''} {job}", source)
        # warm-up: compiles, allocates the optimizer state
        warm_up[worker.name] = worker.ask({"do": "steps", "steps": steps})["seconds"]
        workers.append(worker)
    seconds = {w.name: [] for w in workers}
    for round_number in range(rounds):
        turn = round_number % len(workers)
        for worker in workers[turn:] + workers[:turn]:
            seconds[worker.name].append(worker.ask({"do": "steps", "steps": steps})["seconds"] / steps)
    rows = []
    for worker in workers:
        per_step = statistics.median(seconds[worker.name])
        rows.append({"scale": scale, "run": worker.name, "ms_per_step": 1e3 * per_step,
                     "first_s": warm_up[worker.name] - steps * per_step,
                     "images_per_s": batch / per_step, "peak_mib": worker.ask({"do": "memory"})["peak_mib"],
                     "all_ms": [1e3 * s for s in seconds[worker.name]]})
        worker.close()
    return rows


def table(rows: list) -> str:
    lines = ["| scale | run | ms per step | images/s | speed vs timm's | peak RSS MiB | first steps' excess s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:  # a train step against timm's train step, a forward against timm's forward
        job = row["run"].split()[-1]
        peer = next((r for r in rows if r["scale"] == row["scale"] and r["run"] == f"timm {job}"), None)
        relative = f"{peer['ms_per_step'] / row['ms_per_step']:.2f}x" if peer else "-"
        lines.append(f"| {row['scale']} | {row['run']} | {row['ms_per_step']:.1f} | {row['images_per_s']:.2f} | "
                     f"{relative} | {row['peak_mib']:.0f} | {row['first_s']:.1f} |")
    return "\n".join(lines)


def paired(rows: list) -> str:
    """Each job against the baseline's, round by round (the same round shares the machine's
    speed): the median difference and its quartiles, in ms per step."""
    lines = ["| scale | job | package - baseline, paired (median) | quartiles | rounds faster |",
             "|---|---|---:|---:|---:|"]
    by_run = {(r["scale"], r["run"]): r for r in rows}
    for row in rows:
        job = row["run"].split()[-1]
        base = by_run.get((row["scale"], f"package (baseline) {job}"))
        if base is None or row["run"] != f"package {job}":
            continue
        differences = [a - b for a, b in zip(row["all_ms"], base["all_ms"])]
        low, _, high = statistics.quantiles(differences, n=4) if len(differences) > 1 else differences * 3
        lines.append(f"| {row['scale']} | {job} | {statistics.median(differences):+.1f} | "
                     f"{low:+.1f} to {high:+.1f} | {sum(d < 0 for d in differences)} of {len(differences)} |")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return serve_side(*sys.argv[2:6])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", choices=tuple(SCALES), default=list(SCALES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peer-python", default=sys.executable,
                        help="a python with torch and timm (default: this one)")
    parser.add_argument("--baseline", metavar="SRC",
                        help="also race the package found in this src folder (e.g. a worktree of an earlier commit)")
    parser.add_argument("--parts", action="store_true",
                        help="race the package's forward (train mode) and forward + backward graphs instead")
    parser.add_argument("--drop-path", type=float, default=0.0,
                        help="stochastic depth, rising over the blocks to this rate, on both sides (DeiT: 0.1)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    peer = args.peer_python if has_peer(args.peer_python) else None
    if peer is None:
        print(f"no torch/timm in {args.peer_python}: the peer is left out (see the docstring)", file=sys.stderr)
    rows = []
    for scale in args.scales:
        rows += race(scale, args.rounds, peer, args.baseline, args.parts, args.drop_path)
        print(table(rows), flush=True)
    steps = {scale: 2 if scale == "vit-b" else 20 for scale in args.scales}
    print(f"\nmedian of {args.rounds} rounds of {steps} steps per worker, workers taking turns")
    if args.baseline:
        print(paired(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
