"""Whether a grown network's steps cost what the same shape's steps cost when trained from
the start: the demo's ViT at full depth against `6,12` grown four ways, racing epoch by
epoch.

    .venv/bin/python benchmarks/investigations/grown_steps.py [--epochs 12]

Five runs of the demo's recipe (scikit-learn's digits, width 64, batch 32) over `--epochs`
epochs, taking turns every epoch (`demo.race`): full depth; `6,12` by exact growth (the
entering blocks behind gates ramped to 1 over an epoch, then folded); by exact growth
without the graphs compiled ahead; by the reference growth (no gates); by the reference
growth carrying the AdamW moments. Prints each run's median training seconds per epoch
over the second stage after its first epoch (the same 12-block shape in every run) and that
as a share of full depth's over the same epochs.
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

RUNS = {
    "full depth": (None, {}),
    "6,12 exact": ((6, 12), {"growth": "exact"}),
    "6,12 exact, not compiled ahead": ((6, 12), {"growth": "exact", "compile_ahead": False}),
    "6,12 reference": ((6, 12), {"growth": "reference"}),
    "6,12 reference, moments carried": ((6, 12), {"growth": "reference", "carry_moments": True}),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    settings = DemoSettings().changed(epochs=args.epochs)
    output = Path(tempfile.mkdtemp(prefix="grown-steps-"))
    race(settings, RUNS, output, progress=False)
    start = args.epochs // 2 + 1  # the second stage's epochs after its first
    seconds = {}
    for name in RUNS:
        with open(output / name.replace(" ", "-") / "log.jsonl") as f:
            records = [json.loads(line) for line in f]
        seconds[name] = [r["train_seconds"] for r in records if r["event"] == "epoch"][start:]
    full = statistics.median(seconds["full depth"])
    print(f"| run | s per 12-block epoch (median of epochs {start + 1}-{args.epochs}) | vs full depth |")
    print("|---|---:|---:|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.median(values) / full:.3f} |")


if __name__ == "__main__":
    main()
