"""MindSpore's kernel threads bound one per core (`graphs.bind_kernel_threads`) against the
scheduler's placement, in one process, the placements taking turns step by step.

    .venv/bin/python benchmarks/investigations/thread_binding.py [--scale vit-b] [--job train] [--rounds 12]

A fused graph's kernels split their work over MindSpore's pool (the MatMuls: its first
thread and its `KernelThread_k`) and OpenMP's team (AKG's kernels: the pool's first thread
and the workers it started). Each round runs `train_step.py`'s worker (the Trainer's step,
or `--job inference`, `backward`: forward + backward) once with every placement:

* free: every MindSpore thread may run on every core (the scheduler's choice);
* bound: the package's binding;
* halves on one core: the pool's first thread and OpenMP's worker on one core (the
  placement the binding rules out, to show what the scheduler's worst choice costs).

Prints each placement's median milliseconds per step, its quartiles, and the paired
difference from free (per round: the same drift falls on all placements).
"""

from __future__ import annotations

import argparse
import os
import sys
import statistics
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
from train_step import SCALES, package_worker  # noqa: E402  (benchmarks/train_step.py)

from network_expansion import graphs


def place(threads: list, cores: list, placement: str) -> None:
    """Bind `threads` ([(id, name)]) for `placement` (see the docstring)."""
    plan = graphs.binding_plan(threads, cores) or {}
    if placement == "halves on one core":
        plan = {thread: cores[0] for thread in plan}
        kernel_threads = [t for t, name in threads if name.startswith("KernelThread_")]
        plan.update({thread: cores[1] for thread in kernel_threads})
    for thread, _ in threads:
        try:
            os.sched_setaffinity(thread, {plan[thread]} if placement != "free" and thread in plan else cores)
        except OSError:
            pass


def quartiles(values: list) -> str:
    low, middle, high = statistics.quantiles(values, n=4)
    return f"{low:.1f} / {middle:.1f} / {high:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=tuple(SCALES), default="vit-b")
    parser.add_argument("--job", choices=("train", "inference", "backward"), default="train")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        parser.exit(2, "thread_binding.py: needs two cores or more\n")
    steps = 1 if args.scale == "vit-b" else 20
    run = package_worker(args.scale, args.job)
    run(steps), run(steps)  # compile, and OpenMP's team started
    threads = [(t, name) for t, name in graphs._threads() if name.startswith(("ActorThread_", "KernelThread_"))]
    print(f"MindSpore's kernel threads: {threads}; package's binding: {graphs.binding_plan(threads, cores)}")
    placements = ("free", "bound", "halves on one core")
    seconds = {p: [] for p in placements}
    for round_number in range(args.rounds):
        turn = round_number % len(placements)
        for placement in placements[turn:] + placements[:turn]:
            place(threads, cores, placement)
            start = time.perf_counter()
            run(steps)
            seconds[placement].append(1e3 * (time.perf_counter() - start) / steps)
    place(threads, cores, "free")
    print(f"\n{args.scale} {args.job}, {args.rounds} rounds of {steps} step(s), placements taking turns\n")
    print("| placement | ms per step (median) | quartiles | paired difference from free (median, quartiles) |")
    print("|---|---:|---:|---:|")
    for placement, times in seconds.items():
        paired = [a - b for a, b in zip(times, seconds["free"])]
        print(f"| {placement} | {statistics.median(times):.1f} | {quartiles(times)} | "
              f"{statistics.median(paired):+.1f} ({quartiles(paired)}) |")


if __name__ == "__main__":
    main()
