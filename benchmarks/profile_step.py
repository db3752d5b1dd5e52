"""Where a ViT-B/16 training step's time goes, op type by op type (`mindspore.Profiler`).

    .venv/bin/python benchmarks/profile_step.py [--depth 12] [--batch 8] [--steps 2] [--forward-only | --inference | --trainer]
    PYTHONPATH=OTHER/src .venv/bin/python benchmarks/profile_step.py    # another version of the package

Compiles the package's network's forward + backward (the gradients of every trainable
parameter, all returned: a graph that returned the loss alone would lose its backward to
dead-code elimination) in train mode (`--forward-only`: the loss alone; `--inference`: the
logits in evaluation mode, as `predict` computes them; `--trainer`: the `Trainer`'s whole step, with
AdamW and the EMA update), runs two warm-up steps, then profiles `--steps`
steps and prints, per step: wall time, and each op type's milliseconds, calls and share,
with the forward's ops and the gradient's ops apart where MindSpore's names say which.
"""

from __future__ import annotations

import argparse
import csv
import glob
import tempfile
import time
from collections import defaultdict

# the package before MindSpore: OpenMP's idle threads passive, so that it fuses kernels
# (graphs.fusion_available)
from network_expansion import ViTConfig, VisionTransformer

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import ops  # noqa: E402
from train_step import compile_as_package  # noqa: E402  (benchmarks/train_step.py)


def trainer_step(network, batch: int, rng):
    """One step of the `Trainer` (its epoch is one batch), as `benchmarks/train_step.py` runs it."""
    from network_expansion import ArrayData, TrainConfig, Trainer

    x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
    y = rng.integers(0, 1000, batch).astype(np.int32)
    trainer = Trainer(network, ArrayData(x, y, batch, flip=False),
                      config=TrainConfig(epochs=10_000, warmup_epochs=1, log_every=1), progress=False)

    def run():
        trainer.fit(until=trainer.epoch + 1)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--forward-only", action="store_true")
    parser.add_argument("--inference", action="store_true", help="the forward in evaluation mode (logits only)")
    parser.add_argument("--trainer", action="store_true",
                        help="the Trainer's whole step: soft targets, forward, loss, backward, AdamW, EMA update")
    args = parser.parse_args()
    network = VisionTransformer(ViTConfig(image_size=224, num_classes=1000, depth=args.depth), seed=0)
    network.set_train(not args.inference)

    def loss_of(images, targets):  # the trainer's loss (recipe.soft_cross_entropy), written here so that
        # earlier versions of the package can be profiled too
        return -(targets * ops.log_softmax(network(images), -1)).sum(-1).mean()

    gradients = ms.value_and_grad(loss_of, None, network.trainable_params())

    def forward_backward(images, targets):
        return gradients(images, targets)

    def inference(images, targets):
        return network(images)

    rng = np.random.default_rng(0)
    if args.trainer:
        run = trainer_step(network, args.batch, rng)
    else:
        function = inference if args.inference else loss_of if args.forward_only else forward_backward
        step = compile_as_package(network, function)
        images = ms.Tensor(rng.standard_normal((args.batch, 3, 224, 224), dtype=np.float32))
        targets = ms.Tensor(np.eye(1000, dtype=np.float32)[rng.integers(0, 1000, args.batch)])

        def run():
            out = step(images, targets)
            (out[0] if isinstance(out, tuple) else out).asnumpy()

    run(), run()
    start = time.perf_counter()
    for _ in range(args.steps):
        run()
    wall = (time.perf_counter() - start) / args.steps
    folder = tempfile.mkdtemp(prefix="profile-step-")
    print("profile in", folder)
    profiler = ms.Profiler(output_path=folder)
    for _ in range(args.steps):
        run()
    profiler.analyse()
    totals, calls = defaultdict(float), defaultdict(int)
    for path in glob.glob(f"{folder}/**/cpu_op_detail_info_*.csv", recursive=True):
        with open(path) as f:
            for row in csv.DictReader(f):
                part = "backward" if row["full_op_name"].startswith(("Gradients/", "Expand/")) else "forward"
                key = (row["op_type"], part)
                totals[key] += float(row["op_total_time(ms)"]) / args.steps
                calls[key] += int(row["op_occurrences"]) // args.steps
    measured = sum(totals.values())
    print(f"depth {args.depth}, batch {args.batch}: {wall:.2f} s per step (unprofiled), "
          f"op time {measured / 1e3:.2f} s\n")
    print("| op type | part | ms per step | calls | share |")
    print("|---|---|---:|---:|---:|")
    for (op_type, part), ms_per_step in sorted(totals.items(), key=lambda item: -item[1]):
        if ms_per_step >= 1.0:
            print(f"| {op_type} | {part} | {ms_per_step:.0f} | {calls[op_type, part]} | {ms_per_step / measured:.1%} |")


if __name__ == "__main__":
    main()
