"""Network expansion against full-depth training: speed-up and accuracy, several seeds.

    .venv/bin/python benchmarks/expansion.py [--seeds 0 1 2] [--epochs 24] [--schedules 6,12 4,8,12 8,12]
        [--carry-moments]

The longer version of `network-expansion demo` (scikit-learn's digits, the same small ViT
for every run). For every seed it trains the full-depth baseline and each schedule from the
same initial weights, then prints one table: mean wall time, speed-up over the baseline,
the schedule's bound (blocks' share of the work), the share of the bound reached, and mean
top-1 of the model and its EMA with their spread over seeds. Wall time includes graph
compilation (again after each growth) and the per-epoch evaluations, as a user pays them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

from network_expansion.demo import DemoSettings, run
from network_expansion.expansion import ExpansionSchedule


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--schedules", nargs="+", default=["6,12", "4,8,12", "8,12"])
    parser.add_argument("--carry-moments", action="store_true", help="carry AdamW moments across growths")
    parser.add_argument("--output", default=None, help="folder for the runs' logs (default: a temporary one)")
    args = parser.parse_args()
    base = dataclasses.replace(DemoSettings(), epochs=args.epochs)
    output = Path(args.output or tempfile.mkdtemp(prefix="expansion-benchmark-"))
    results = {}
    for seed in args.seeds:
        settings = dataclasses.replace(base, seed=seed)
        for schedule in [None] + args.schedules:
            key = schedule or "full"
            summary = run(settings, schedule, output / f"{key}-seed{seed}", progress=False,
                          carry_moments=args.carry_moments)
            results.setdefault(key, []).append(summary)
            print(f"seed {seed} {key:>8}: {summary['wall_seconds']:.1f} s, top-1 {summary['top1']:.2%}, "
                  f"EMA {summary['ema_top1']:.2%}", flush=True)
    (output / "results.json").write_text(json.dumps(results, indent=1))
    full_time = statistics.mean(r["wall_seconds"] for r in results["full"])
    print(f"\n{len(args.seeds)} seeds, {args.epochs} epochs, {base.width}-wide ViT on digits "
          f"(carry moments: {args.carry_moments}); logs in {output}\n")
    print("| schedule | wall s | speed-up | bound | share of bound | top-1 | EMA top-1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, runs in results.items():
        wall = statistics.mean(r["wall_seconds"] for r in runs)
        bound = 1.0 if key == "full" else ExpansionSchedule.parse(key, args.epochs).speedup_bound(args.epochs)
        speedup = full_time / wall
        top1 = [100 * r["top1"] for r in runs]
        ema = [100 * r["ema_top1"] for r in runs]
        spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
        print(f"| {key} | {wall:.1f} | {speedup:.2f}x | {bound:.2f}x | {speedup / bound:.0%} | "
              f"{statistics.mean(top1):.2f} ± {spread(top1):.2f} | {statistics.mean(ema):.2f} ± {spread(ema):.2f} |")


if __name__ == "__main__":
    main()
