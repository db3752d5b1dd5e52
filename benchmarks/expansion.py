"""Network expansion against full-depth training: speed-up and accuracy, several seeds.

    .venv/bin/python benchmarks/expansion.py [--seeds 0 1 2] [--epochs 48] [--schedules 6,12 4,8,12 6@12,12@16]
        [--growth reference exact learned] [--width-schedules 6x32,12x64] [--width-split random ema equal]
        [--width-lr same scaled]
        [--carry-moments] [--size-crops none 0.3] [--plot FILE] [--output DIR]

The longer version of `network-expansion demo` (scikit-learn's digits, the same small ViT
for every run). For every seed it trains the full-depth baseline and each schedule from the
same initial weights and data split, taking turns every epoch (`demo.race`: the machine's
drift falls on all runs alike), then prints one table: mean wall time, speed-up over the
baseline, the schedule's bound (blocks' share of the work), the share of the bound reached,
the speed-up of the training steps alone (their seconds without compilation, evaluation
and checkpoints, each stage's first epoch left out: `demo.steps_seconds`; what the proxy's
own step costs allow), the speed-up without compilation (wall time less the graphs compiled
ahead, each stage's first epoch above its others and the growths' pauses:
`demo.compile_seconds`; what the run would reach if MindSpore compiled nothing),
mean top-1 of the model and its EMA with their spread over seeds, and the paired difference
to the baseline of the same seed. Wall time includes graph compilation (again after each
growth), the per-epoch evaluations and checkpoints, as a user pays them.

`--growth` says how each schedule grows: `reference` (the authors' EMA copies, row `6,12`),
`exact` (the same copies behind gates at 0 that ramp to 1 over an epoch, row `6,12 exact`),
`learned` (gates learned from 0, row `6,12 learned`). The second table gives, per run with
a growth, top-1 at the epoch before the (first) growth, right after it and at the end of
the epoch after it, the final top-1 paired with the reference growth of the same seed, and
each growth's `pause_seconds` (training at a standstill: surgery, rebuild, compilation). A
schedule may grow the image size too (`6@12,12@16`: the digits at 12x12, then 16x16; its
bound counts the blocks' FLOPs at each stage's tokens). Its smaller stages train on random
resized crops as the demo's recipe says (`TrainConfig.size_crops`, 0.3); `--size-crops none
0.3` runs each such schedule once per value instead (rows `6@12,12@16 exact whole images`,
`6@12,12@16 exact crops 0.3`).
`--width-schedules` (`6x32,12x64`: half width and half depth, then the full model) run once
per `--width-split` and `--width-lr` (row `6x32,12x64 random/same`), their depth growth exact;
its bound is the blocks' FLOPs at each stage's shape (`ExpansionSchedule.speedup_bound`).
`--carry-moments` adds, for each schedule, a run that carries the AdamW moments across
growths (row `6,12 carried`). `DIR/results.json` is written after every seed; `--plot`
draws top-1 against time for the first seed's runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

try:  # the benchmark is the program: tuned as `network-expansion demo` is (no fusion at the demo's size)
    from network_expansion.tuning import tune_cpu
except ImportError:  # versions before 2026-12-06 tuned the process on import
    def tune_cpu(**options):
        return None

tune_cpu(kernel_fusion=False)

from network_expansion.demo import DemoSettings, race  # noqa: E402
from network_expansion.ranges import AREA_SHARE  # noqa: E402
try:
    from network_expansion.schedule import ExpansionSchedule  # noqa: E402
except ImportError:  # before 2026-12-06
    from network_expansion.expansion import ExpansionSchedule  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=48)
    parser.add_argument("--schedules", nargs="*", default=["6,12", "4,8,12", "8,12"],
                        help="depth (and size) schedules; none with --schedules alone (e.g. a width ablation)")
    parser.add_argument("--growth", nargs="+", choices=("reference", "exact", "learned"), default=["reference"],
                        help="how each schedule grows (default: reference)")
    parser.add_argument("--width-schedules", nargs="+", default=[],
                        help="schedules that grow the width too, e.g. 6x32,12x64 (their depth growth is exact)")
    parser.add_argument("--width-split", nargs="+", choices=("random", "ema", "equal"), default=["random"],
                        help="for --width-schedules: how copied columns split")
    parser.add_argument("--width-lr", nargs="+", choices=("same", "scaled"), default=["same"],
                        help="for --width-schedules: the grown matrices' learning rate")
    parser.add_argument("--plot", help="draw top-1 against wall time of the first seed's runs to this file")
    parser.add_argument("--carry-moments", action="store_true",
                        help="also run each schedule with the AdamW moments carried across growths")
    parser.add_argument("--size-crops", type=_share_or_none, nargs="+", default=[], metavar="SHARE",
                        help="run each schedule that grows the image size once per value: its smaller stages "
                             "train on random resized crops keeping at least SHARE of the area, or on whole "
                             "images ('none'); default: the demo recipe's (row `6@12,12@16 exact`)")
    parser.add_argument("--output", default=None, help="folder for logs and results.json (default: a temporary one)")
    args = parser.parse_args()
    base = DemoSettings().changed(epochs=args.epochs)
    output = Path(args.output or tempfile.mkdtemp(prefix="expansion-benchmark-"))
    growths = {"reference": ("", {}), "exact": (" exact", {"growth": "exact"}),
               "learned": (" learned", {"growth": "exact", "growth_gate": "learned"})}
    variants = {"full": (None, {})}
    for schedule in args.schedules:
        variants.update({schedule + growths[g][0]: (schedule, growths[g][1]) for g in args.growth})
    for schedule in args.width_schedules:  # one run per split and learning-rate rule, the depth exact
        variants.update({f"{schedule} {split}/{lr}": (schedule, {"growth": "exact", "width_split": split,
                                                                 "width_lr": lr})
                         for split in args.width_split for lr in args.width_lr})
    if args.carry_moments:
        variants.update({f"{s} carried": (s, {"carry_moments": True}) for s in args.schedules})
    for key, (schedule, changes) in list(variants.items()):
        if schedule and "@" in schedule and args.size_crops:
            del variants[key]
            variants.update({f"{key} crops {share:g}" if share else f"{key} whole images":
                             (schedule, {**changes, "size_crops": share}) for share in args.size_crops})
    runs = {key: [] for key in variants}
    for seed in args.seeds:
        results = race(base.changed(seed=seed), variants, output / f"seed{seed}", progress=False)
        for key, summary in results.items():
            runs[key].append({"seed": seed, **summary})
            print(f"seed {seed} {key:>14}: {summary['wall_seconds']:.1f} s, top-1 {summary['top1']:.2%}, "
                  f"EMA {summary['ema_top1']:.2%}", flush=True)
        output.mkdir(parents=True, exist_ok=True)
        (output / "results.json").write_text(json.dumps({"epochs": args.epochs, "runs": runs}, indent=1))
    print(f"\nseeds {' '.join(map(str, args.seeds))}, {args.epochs} epochs, {base.model.width}-wide ViT on digits, "
          f"runs of a seed taking turns every epoch; logs in {output}\n")
    print(table(runs, args.epochs, base.model))
    print()
    print(growth_table(runs))
    if args.plot:
        from network_expansion.demo import plot

        first = args.seeds[0]
        print("plot:", plot([{**r, "run": key} for key, rows in runs.items() for r in rows if r["seed"] == first],
                            Path(args.plot)))


def _share_or_none(text):
    return None if text.lower() == "none" else AREA_SHARE.parse(text)


def table(runs: dict, epochs: int, model) -> str:
    """The results as a Markdown table (each row paired, seed by seed, with the baseline)."""
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    by_seed = {key: {r["seed"]: r for r in rows} for key, rows in runs.items()}
    full = by_seed["full"]
    full_time = statistics.mean(r["wall_seconds"] for r in full.values())
    full_steps = statistics.mean(r["train_seconds"] for r in full.values()) if all(
        "train_seconds" in r for r in full.values()) else None
    compiled = all("compile_seconds" in r for rows in by_seed.values() for r in rows.values())
    full_rest = statistics.mean(r["wall_seconds"] - r["compile_seconds"] for r in full.values()) if compiled else None
    lines = ["| schedule | wall s | speed-up | bound | share of bound | steps' speed-up | without compilation "
             "| top-1 | EMA top-1 | top-1 - full (paired) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, rows in by_seed.items():
        if not rows:
            continue
        wall = statistics.mean(r["wall_seconds"] for r in rows.values())
        schedule = key.split()[0]
        bound = 1.0 if key == "full" else ExpansionSchedule.of(schedule, epochs).speedup_bound(epochs, model)
        speedup = full_time / wall
        top1 = [100 * r["top1"] for r in rows.values()]
        ema = [100 * r["ema_top1"] for r in rows.values()]
        # same seed: same data split, same initial weights; the difference the method makes
        paired = [100 * (r["top1"] - full[seed]["top1"]) for seed, r in rows.items() if seed in full]
        steps = (f"{full_steps / statistics.mean(r['train_seconds'] for r in rows.values()):.2f}x"
                 if full_steps and all("train_seconds" in r for r in rows.values()) else "-")
        rest = "-"
        if compiled:
            ratio = full_rest / statistics.mean(r["wall_seconds"] - r["compile_seconds"] for r in rows.values())
            rest = f"{ratio:.2f}x ({ratio / bound:.0%})"
        lines.append(f"| {key} | {wall:.1f} | {speedup:.2f}x | {bound:.2f}x | {speedup / bound:.0%} | {steps} | {rest} | "
                     f"{statistics.mean(top1):.2f} ± {spread(top1):.2f} | {statistics.mean(ema):.2f} ± "
                     f"{spread(ema):.2f} | {statistics.mean(paired):+.2f} ± {spread(paired):.2f} |")
    return "\n".join(lines)


def growth_table(runs: dict) -> str:
    """Top-1 around the first growth (mean ± spread over seeds) and the final top-1 paired
    with the reference growth of the same schedule and seed."""
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    cell = lambda xs: f"{statistics.mean(xs):.2f} ± {spread(xs):.2f}"  # noqa: E731
    lines = ["| run | top-1 before growth | right after | an epoch after | after - before | "
             "final - reference (paired) | pause s per growth |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, rows in runs.items():
        rows = [r for r in rows if r["growths"]]
        if not rows:
            continue
        first = [r["growths"][0] for r in rows]
        before, at, later = ([100 * g[k] for g in first] for k in ("before", "at", "epoch_after"))
        reference = {r["seed"]: r for r in runs.get(key.split()[0], [])} if " " in key else {}
        paired = [100 * (r["top1"] - reference[r["seed"]]["top1"]) for r in rows if r["seed"] in reference]
        pauses = [g["pause_seconds"] for r in rows for g in r["growths"] if g.get("pause_seconds") is not None]
        lines.append(f"| {key} | {cell(before)} | {cell(at)} | {cell(later)} | "
                     f"{cell([a - b for a, b in zip(at, before)])} | {cell(paired) if paired else '-'} | "
                     f"{cell(pauses) if pauses else '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
