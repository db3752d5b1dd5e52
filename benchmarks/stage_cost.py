"""What one training step costs at each stage's shape, and what a growth costs in compilation.

    .venv/bin/python benchmarks/stage_cost.py [--shapes 6 12 6x32 6@12] [--rounds 5] [--log-every 1 20]
    .venv/bin/python benchmarks/stage_cost.py --scale vit-b --shapes 6x384 6 12 --rounds 3 --log-every 20

The demo's ViT (scikit-learn's digits, 16x16, width 64) trained at a fixed depth with the
real `Trainer`, once per depth and per `log_every` (how many steps run before loss and
accuracy are read back from the device; 1 is the peer: a read-back every step), their
epochs interleaved. A shape is a depth, DEPTHxWIDTH (heads at the demo's head
dimension, the MLP at its ratio), with @SIZE for images of another size (the digits resized). Prints milliseconds per step (median epoch), each shape's
step time as a share of the largest one's (the bound assumes its share of the blocks'
multiply-adds, `block_flops`), and
the first epoch with its evaluation, which compiles the train step, the EMA update and the
evaluation graph (one for model and EMA, `graphs.SharedForward`): what every stage pays
(before its first epoch since the graphs are compiled ahead).

`--scale vit-b` does the same at ViT-B/16's shapes (224 px, width 768, 12 heads, MLP 3072,
batch 8; 24 of the digits resized to 224 px, so an epoch is three steps): what a stage
costs where the matrix products dominate, which the width-64 proxy cannot show.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mindspore as ms

from network_expansion.demo import DemoSettings, digits
from network_expansion.schedule import Shape, block_flops, shaped
from network_expansion.model import ViTConfig, VisionTransformer
from network_expansion import ArrayData, Trainer, TrainConfig


def build(settings: DemoSettings, shape: Shape, log_every: int, data) -> Trainer:
    train_x, train_y, test_x, test_y = data
    ms.set_seed(0)
    model = VisionTransformer(shaped(settings.model, shape.depth, shape.width, shape.size))
    config = TrainConfig(epochs=1000, lr=settings.recipe.lr, warmup_epochs=1, ema_decay=settings.recipe.ema_decay,
                         log_every=log_every)
    size = model.config.image_size
    return Trainer(model, ArrayData(train_x, train_y, settings.batch_size).at_size(size),
                   ArrayData(test_x, test_y, 256, shuffle=False, drop_remainder=False).at_size(size), config,
                   progress=False)


def one_epoch(trainer: Trainer) -> float:
    """Train exactly one more epoch (no evaluation); returns its training seconds."""
    val_data, trainer.val_data = trainer.val_data, None
    history = trainer.fit(until=trainer.epoch + 1)
    trainer.val_data = val_data
    return history.epochs[-1]["train_seconds"]


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=Shape.parse, nargs="+", default=[Shape(6), Shape(12)])
    parser.add_argument("--rounds", type=int, default=5, help="epochs per configuration after the first")
    parser.add_argument("--log-every", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--scale", choices=("demo", "vit-b"), default="demo")
    args = parser.parse_args()
    settings = DemoSettings()
    data = digits(settings.model.image_size, 0)
    if args.scale == "vit-b":  # ViT-B/16's blocks on a few digits at 224 px (ArrayData.at_size resizes them)
        settings = DemoSettings(model=ViTConfig(image_size=224, patch_size=16, width=768, depth=12, num_heads=12,
                                                mlp_width=3072, num_classes=10), batch_size=8)
        data = (data[0][:24], data[1][:24], data[2][:8], data[3][:8])
    keys = [(log_every, shape) for log_every in args.log_every for shape in args.shapes]
    trainers = {key: build(settings, key[1], key[0], data) for key in keys}
    # First epoch and first evaluation: compilation of the train step, the EMA update and
    # the evaluation graph, as every stage pays.
    compile_seconds = {key: timed(lambda t=t: (one_epoch(t), t.validate())) for key, t in trainers.items()}
    evaluation_seconds = {key: timed(t.validate) for key, t in trainers.items()}
    seconds = {key: [] for key in keys}
    for _ in range(args.rounds):  # interleaved: the machine's speed drifts by minutes
        for key, trainer in trainers.items():
            seconds[key].append(one_epoch(trainer))
    steps = len(next(iter(trainers.values())).train_data)
    for key, values in seconds.items():
        print(f"log_every {key[0]:>3}, {str(key[1]):>9}: epochs of", " ".join(f"{v:.2f}" for v in values), "s")
    ms_per_step = {key: 1e3 * statistics.median(values) / steps for key, values in seconds.items()}

    def work(shape):
        return shape.depth * block_flops(settings.model, shape.width or settings.model.width, shape.size)

    largest = max(args.shapes, key=work)
    print(f"\n{'ViT-B/16 shapes' if args.scale == 'vit-b' else 'the demo ViT'} (width {settings.model.width}), "
          f"batch {settings.batch_size}, {steps} steps per epoch, "
          f"median of {args.rounds} interleaved epochs per row\n")
    print(f"| log_every | shape | ms per step | share of {largest} | bound's share (FLOPs) | "
          "first epoch + evaluation s | one evaluation s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for key in keys:
        log_every, shape = key
        share = ms_per_step[key] / ms_per_step[log_every, largest]
        print(f"| {log_every} | {shape} | {ms_per_step[key]:.1f} | {share:.0%} | {work(shape) / work(largest):.0%} | "
              f"{compile_seconds[key]:.1f} | {evaluation_seconds[key]:.2f} |")


if __name__ == "__main__":
    main()
