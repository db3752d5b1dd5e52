"""A run's curves from its `log.jsonl`: accuracy and loss against wall-clock time, growths
marked; several runs overlaid. Needs matplotlib (`pip install matplotlib`; the `demo` and
`test` extras have it).

    network-expansion plot runs/a runs/b --output compare.png
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError, DataError

LOG = "log.jsonl"


def read_run(folder) -> dict:
    """`{'name', 'epochs': [(seconds, top1, loss, kind)], 'growths': [(seconds, text)]}` of the
    run in `folder`; `kind` is 'val' where the run validated, else 'train'."""
    path = Path(folder) / LOG
    if not path.is_file():
        raise DataError(f"{folder}: no {LOG} (a training run's folder holds one)")
    epochs, growths, last = [], [], 0.0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path}, line {number}: not JSON (a damaged log)") from None
            if not isinstance(record, dict):
                continue
            if record.get("event") == "epoch":
                last = float(record.get("wall_seconds", last))
                top1, kind = (record["val_top1"], "val") if "val_top1" in record else (record.get("train_top1"), "train")
                epochs.append((last, top1, record.get("loss"), kind))
            elif record.get("event") == "grow":
                growths.append((last, f"{record.get('from', '?')}->{record.get('to', '?')}"))
    if not epochs:
        raise DataError(f"{path}: no epoch finished yet")
    return {"name": Path(folder).resolve().name, "epochs": epochs, "growths": growths}


def plot_runs(folders, path) -> Path:
    """Accuracy (validation, else training) and loss against wall-clock time for each run in
    `folders`, growths as dotted lines; written to `path` (PNG)."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install matplotlib") from None
    from .atomic import atomic_write

    runs = [read_run(folder) for folder in folders]
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (accuracy, loss) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for run in runs:
        seconds, top1, losses, kinds = zip(*run["epochs"])
        label = f"{run['name']} ({'val' if 'val' in kinds else 'train'})"
        line, = accuracy.plot(seconds, [100 * (t or 0.0) for t in top1], marker="o", markersize=3, label=label)
        loss.plot(seconds, [float("nan") if v is None else v for v in losses], marker="o", markersize=3,
                  color=line.get_color(), label=run["name"])
        for at, text in run["growths"]:
            for axes in (accuracy, loss):
                axes.axvline(at, color=line.get_color(), linestyle=":", linewidth=1)
            accuracy.annotate(f"grew {text}", (at, accuracy.get_ylim()[0]), fontsize=7, color=line.get_color(),
                              rotation=90, va="bottom")
    accuracy.set(xlabel="wall-clock seconds", ylabel="top-1 (%)", title="accuracy")
    loss.set(xlabel="wall-clock seconds", ylabel="training loss", title="loss")
    for axes in (accuracy, loss):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    with atomic_write(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
    return path
