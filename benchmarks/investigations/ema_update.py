"""The EMA update's forms: compile seconds and step milliseconds, raced in one process.

    .venv/bin/python benchmarks/investigations/ema_update.py [--depth 12] [--width 64] [--rounds 30]

The EMA update launches kernels per tensor (about 200 tensors at the demo's depth 12), so
its form decides both what it costs every step and how long it takes to compile at every
stage. Forms: `mul-add` (`decay ema + (1 - decay) live`, four kernels per tensor),
`lerp` (`ops.lerp`, two kernels), the package's (`EMA`: `lerp` for small tensors, `mul-add`
for large ones), and
each as one `HyperMap` over the tensors instead of an unrolled loop, and `lerp` as one
`ms.no_inline` function per block, compiled once. The rounds take turns
(every form ten steps a round), so the machine's drift falls on all of them; the table
gives each form's compile seconds and its median step.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

# the package before MindSpore: OpenMP's idle threads passive, so that `--fuse` fuses
from network_expansion.demo import DemoSettings

import mindspore as ms  # noqa: E402
from mindspore import nn, ops  # noqa: E402


from network_expansion import cpu_forms  # noqa: E402
from network_expansion.ema import EMA, _EMAUpdate  # noqa: E402
from network_expansion.tuning import tune_cpu  # noqa: E402
from network_expansion.graphs import compiled  # noqa: E402
from network_expansion.model import VisionTransformer  # noqa: E402

_lerp = ops.MultitypeFuncGraph("lerp")
_mul_add = ops.MultitypeFuncGraph("mul_add")


@_lerp.register("Number", "Tensor", "Tensor")
def _lerp_one(weight, average, live):
    return ops.assign(average, ops.lerp(average, live, weight))


@_mul_add.register("Number", "Tensor", "Tensor")
def _mul_add_one(weight, average, live):
    return ops.assign(average, average * (1.0 - weight) + live * weight)


class Loop(nn.Cell):
    def __init__(self, average, live, decay):
        super().__init__()
        self.average = ms.ParameterTuple(average.get_parameters())
        self.live = ms.ParameterTuple(live.get_parameters())
        self.weight = 1.0 - decay


class MulAddLoop(Loop):
    def construct(self):
        for average, live in zip(self.average, self.live):
            ops.assign(average, average * (1.0 - self.weight) + live * self.weight)
        return True


class AddLoop(Loop):
    def construct(self):
        for average, live in zip(self.average, self.live):
            ops.assign_add(average, (live - average) * self.weight)
        return True


class LerpLoop(Loop):
    def construct(self):
        for average, live in zip(self.average, self.live):
            ops.assign(average, ops.lerp(average, live, self.weight))
        return True


@ms.no_inline
def _lerp_block(averages, lives, weight):
    for average, live in zip(averages, lives):
        ops.assign(average, ops.lerp(average, live, weight))
    return True


class LerpPerBlock(Loop):
    """One `no_inline` function per block's tensors, compiled once and called for each (as
    the model's blocks run: docs/log/performance.md, "Blocks compiled once"); the rest looped."""

    def __init__(self, average, live, decay):
        super().__init__(average, live, decay)
        blocks = [list(block.get_parameters()) for block in average.blocks]
        in_blocks = {id(p) for block in blocks for p in block}
        self.per_block, self.depth = len(blocks[0]), len(blocks)
        pairs = list(zip(average.get_parameters(), live.get_parameters()))
        self.block_average = ms.ParameterTuple([a for a, _ in pairs if id(a) in in_blocks])
        self.block_live = ms.ParameterTuple([b for a, b in pairs if id(a) in in_blocks])
        self.rest_average = ms.ParameterTuple([a for a, _ in pairs if id(a) not in in_blocks])
        self.rest_live = ms.ParameterTuple([b for a, b in pairs if id(a) not in in_blocks])

    def construct(self):
        n = self.per_block
        for i in range(self.depth):
            _lerp_block(self.block_average[i * n:(i + 1) * n], self.block_live[i * n:(i + 1) * n], self.weight)
        for average, live in zip(self.rest_average, self.rest_live):
            ops.assign(average, ops.lerp(average, live, self.weight))
        return True


class Mapped(Loop):
    def __init__(self, average, live, decay, function):
        super().__init__(average, live, decay)
        self.map, self.function = ops.HyperMap(), function

    def construct(self):
        return self.map(ops.partial(self.function, self.weight), self.average, self.live)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--fuse", action="store_true", help="compile with kernel fusion (as the package at ViT-B's width)")
    args = parser.parse_args()
    if args.fuse:  # kernel fusion is the process's (tune_cpu); MindSpore reads the flags at each compile
        tune_cpu(kernel_fusion=True, bind_threads=False)
    config = dataclasses.replace(DemoSettings().model, depth=args.depth, width=args.width, mlp_width=2 * args.width)
    live = VisionTransformer(config)
    average = EMA(live, 0.99).network
    cells = {"mul-add loop": MulAddLoop(average, live, 0.99), "lerp loop": LerpLoop(average, live, 0.99),
             "assign-add loop": AddLoop(average, live, 0.99),
             "by size: lerp below 65536 elements, assign-add above (EMA)": _EMAUpdate(average, live, 0.99, cpu_forms.choose()),
             "mul-add HyperMap": Mapped(average, live, 0.99, _mul_add),
             "lerp HyperMap": Mapped(average, live, 0.99, _lerp),
             "lerp per block, compiled once": LerpPerBlock(average, live, 0.99)}
    steps, compile_seconds = {}, {}
    for name, cell in cells.items():
        def update(cell=cell):
            return cell()
        steps[name] = compiled(update)
        start = time.perf_counter()
        steps[name]()
        compile_seconds[name] = time.perf_counter() - start
    times = {name: [] for name in cells}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(10):
                step()
            average.cls.asnumpy()
            times[name].append((time.perf_counter() - start) / 10 * 1000)
    tensors = len(list(live.get_parameters()))
    print(f"EMA update of the demo ViT at depth {args.depth}, width {args.width} ({tensors} tensors, "
          f"{'fused' if args.fuse else 'not fused'}), "
          f"{args.rounds} rounds of 10 steps taking turns\n")
    print("| form | compile s | step ms (median) |\n|---|---:|---:|")
    for name in cells:
        print(f"| {name} | {compile_seconds[name]:.2f} | {statistics.median(times[name]):.2f} |")


if __name__ == "__main__":
    main()
