"""Where timm's ViT-B/16 training step's time goes, op by op (`torch.profiler`): the peer of
`benchmarks/profile_step.py --trainer`.

    .venv-peer/bin/python benchmarks/profile_peer.py [--steps 2] [--scale vit-b]

Runs the step `benchmarks/train_step.py` races against the package's (timm's
`vit_base_patch16_224` at batch 8, `torch.optim.AdamW` with DeiT's weight-decay groups,
label-smoothed cross entropy, `timm.utils.ModelEmaV3`; two threads), two warm-up steps, then
profiles `--steps` steps and prints the wall time per step and each ATen op's own
milliseconds per step, calls and share, as profile_step.py prints MindSpore's. Needs torch
and timm (see train_step.py for the peer's venv).
"""

from __future__ import annotations

import argparse
import time

from train_step import SCALES, timm_worker  # benchmarks/train_step.py


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--scale", choices=tuple(SCALES), default="vit-b")
    args = parser.parse_args()
    from torch.profiler import ProfilerActivity, profile

    run = timm_worker(args.scale, "train")
    run(2)
    start = time.perf_counter()
    run(args.steps)
    wall = (time.perf_counter() - start) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run(args.steps)
    rows = [(event.key, event.self_cpu_time_total / 1e3 / args.steps, event.count // args.steps)
            for event in profiler.key_averages() if event.key.startswith("aten::")]
    measured = sum(ms for _, ms, _ in rows)
    print(f"timm, {args.scale}: {wall:.2f} s per step (unprofiled), ATen ops' own time {measured / 1e3:.2f} s\n")
    print("| op | ms per step | calls | share |")
    print("|---|---:|---:|---:|")
    for name, ms, calls in sorted(rows, key=lambda row: -row[1]):
        if ms >= 1.0:
            print(f"| {name} | {ms:.0f} | {calls} | {ms / measured:.1%} |")


if __name__ == "__main__":
    main()
