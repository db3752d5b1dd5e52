"""The demo: network expansion against full-depth training, same ViT, same seed, same run.

Real data that ships with scikit-learn: the 1,797 handwritten digits (8x8, upscaled to
16x16). The same small ViT is trained twice for the same epochs: at full depth, and with
expansion (`6,12` by default). A table compares wall time, images/s, top-1 of model and
EMA, the measured speed-up and the schedule's bound; a plot shows accuracy against wall
time for both. Wall time includes MindSpore's graph compilation: every stage's graphs,
compiled before the first epoch (`ahead.py`), so a growth does not stop training.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import TrainConfig, ViTConfig
from .errors import ConfigError
from .schedule import ExpansionSchedule


def _demo_model() -> ViTConfig:
    # 8x8 digits upscaled to 16x16; 4x4 patches, 16 tokens + cls
    return ViTConfig(image_size=16, patch_size=4, width=64, depth=12, num_heads=4, mlp_width=128, num_classes=10)


def _demo_recipe() -> TrainConfig:
    # 32 epochs: long enough to amortise the 12-block stage's compilation (about 5 s more than
    # full depth's);
    # lr 3e-4: 1e-3 leaves a 12-block ViT at chance here; a schedule over image sizes trains its
    # smaller stages on random resized crops (docs/log/expansion.md: 1.6 points better than whole images)
    # exact growth: what the README's table measures (the reference growth dips at the growth)
    return TrainConfig(epochs=32, lr=3e-4, min_lr=3e-4 / 100, warmup_epochs=1, label_smoothing=0.1,
                       weight_decay=0.05, ema_decay=0.99, schedule=(6, 12), size_crops=0.3, seed=0, growth="exact")


@dataclass(frozen=True)
class DemoSettings:
    """The demo's runs: the small ViT at its full depth (`model`), the recipe of every run
    (`recipe`: its `schedule` is the expansion run's, its `seed` also draws the data split),
    and the batch size.

    >>> DemoSettings().changed(epochs=48, seed=1)   # what the command line and benchmarks change
    """

    model: ViTConfig = field(default_factory=_demo_model)
    recipe: TrainConfig = field(default_factory=_demo_recipe)
    batch_size: int = 32

    def __post_init__(self):
        model = self.model
        if self.recipe.shapes(model)[1] != model:
            raise ConfigError(f"the demo's schedule {self.schedule_text} must end at the model's depth "
                              f"{model.depth}, width {model.width} and image size {model.image_size}")

    def changed(self, *, epochs=None, schedule=None, width=None, seed=None) -> "DemoSettings":
        """These settings with the given values: a `schedule` (text or depths) also sets the
        full depth (its last stage); a `width` also sets the MLP width (twice it)."""
        recipe = {k: v for k, v in (("epochs", epochs), ("schedule", schedule), ("seed", seed)) if v is not None}
        new_recipe = dataclasses.replace(self.recipe, **recipe)
        model = {"depth": new_recipe.final_depth(self.model.depth)}
        if width is not None:
            model.update(width=width, mlp_width=2 * width)
        return dataclasses.replace(self, model=dataclasses.replace(self.model, **model), recipe=new_recipe)

    @property
    def schedule_text(self) -> str:
        return ",".join(map(str, self.recipe.schedule))


def digits(image_size: int = 32, seed: int = 0):
    """scikit-learn's digits as (train_x, train_y, test_x, test_y), 3-channel, normalised."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = np.stack([np.asarray(Image.fromarray((img * 255 / 16).astype(np.uint8)).resize(
        (image_size, image_size), Image.BILINEAR), dtype=np.float32) / 255.0 for img in data.images])
    images = (images - images.mean()) / images.std()
    images = np.repeat(images[:, None], 3, axis=1)
    train_x, test_x, train_y, test_y = train_test_split(images, data.target, test_size=0.25,
                                                        random_state=seed, stratify=data.target)
    return train_x, train_y.astype(np.int32), test_x, test_y.astype(np.int32)


def trainer_for(settings: DemoSettings, schedule, output_dir: Path, progress: bool = True,
                changes: dict | None = None, name: str = ""):
    """The Trainer of one run (`schedule` None: full depth): the model at the schedule's
    first depth, from the recipe's seed; `changes`: other recipe fields of this run (e.g.
    `{"growth": "exact"}`)."""
    import mindspore as ms

    from .datasets import ArrayData
    from .model import VisionTransformer
    from .train import Trainer

    seed = settings.recipe.seed
    train_x, train_y, test_x, test_y = digits(settings.model.image_size, seed)
    config = dataclasses.replace(settings.recipe, schedule=schedule, **(changes or {}))
    ms.set_seed(seed)
    model = VisionTransformer(config.shapes(settings.model)[0])
    return Trainer(model, ArrayData(train_x, train_y, settings.batch_size, flip=False),
                   ArrayData(test_x, test_y, 256, shuffle=False, drop_remainder=False), config,
                   output_dir=output_dir, progress=progress, name=name,
                   overwrite=True)  # the demo's runs are its own: a second demo replaces the first's


def race(settings: DemoSettings, runs: dict, output_dir: Path, progress: bool = True) -> dict:
    """Train several runs of `settings` in turn, an epoch each, every run on its own clock.

    `runs` maps a name (also the run's folder under `output_dir`) to
    `(schedule or None, {recipe field: value} of that run)`. This machine's speed drifts by up to 20% within
    minutes: runs trained one after the other put that drift into the speed-up, runs that
    take turns every epoch (in a rotating order) share it. A run's wall time is its own
    time in `fit` (graph compilation, training, evaluation, checkpoints), nothing of the
    others'. Returns `{name: summary}`.
    """
    trainers = {name: trainer_for(settings, schedule, Path(output_dir) / name.replace(" ", "-"), progress,
                                  changes, name=name)
                for name, (schedule, changes) in runs.items()}
    order = list(trainers.values())
    for epoch in range(1, settings.recipe.epochs + 1):
        turn = epoch % len(order)  # who goes first rotates: no run always follows the same one
        for trainer in order[turn:] + order[:turn]:
            trainer.fit(until=epoch)
    return {name: summary(trainer, name) for name, trainer in trainers.items()}


def summary(trainer, name: str) -> dict:
    """What the table and the plot need of a finished run."""
    epochs = trainer.history.epochs
    images = sum(r["images_per_s"] * r["train_seconds"] for r in epochs)
    growths = []
    for position, record in enumerate(trainer.history.records):
        if record["event"] == "grow":  # top-1 at the epoch before, right after the growth, an epoch later
            before = [r for r in trainer.history.records[:position] if r["event"] == "epoch"][-1]
            later = [r for r in trainer.history.records[position:] if r["event"] == "epoch"][0]
            growths.append({"epoch": record["epoch"], "before": before["val_top1"], "at": record["val_top1"],
                            "epoch_after": later["val_top1"], "pause_seconds": record.get("pause_seconds")})
    return {"run": name, "wall_seconds": trainer.wall_seconds, "growths": growths,
            "train_seconds": steps_seconds(epochs),
            "compile_seconds": compile_seconds(trainer.history.records),
            "images_per_s": images / sum(r["train_seconds"] for r in epochs),
            "top1": epochs[-1]["val_top1"], "ema_top1": epochs[-1]["ema_val_top1"],
            "curve": [(r["wall_seconds"], r["val_top1"]) for r in epochs],
            "growth": [(r["wall_seconds"], r["val_top1"]) for r in trainer.history.records if r["event"] == "grow"]}


def steps_seconds(epochs) -> float:
    """The training steps' own seconds over a run's epoch records: each stage's epochs
    after its first, scaled to the stage's length, so that a graph compiled inside a
    stage's first step (the run's first epoch; a growth's, without compile_ahead) does not
    count. The mean, not the median: the machine's drift stays in, as it does for the runs
    it is compared with."""
    return sum(statistics.mean(seconds[1:] or seconds) * len(seconds) for seconds in _by_stage(epochs))


def compile_seconds(records) -> float:
    """The seconds a run spent compiling graphs and standing still at growths, from its
    records: the graphs compiled ahead (`compile_ahead`), each stage's first epoch above
    the mean of its others (the train step and EMA update compiled in its first step) and
    every growth's `pause_seconds`. The first stage's evaluation graph, compiled inside
    its first evaluation, is not counted (the same for every run). Wall time minus this is
    what the run would take if MindSpore compiled nothing."""
    epochs = [r for r in records if r["event"] == "epoch"]
    first = sum(max(seconds[0] - statistics.mean(seconds[1:]), 0.0) for seconds in _by_stage(epochs)
                if len(seconds) > 1)
    return (first + sum(r["seconds"] for r in records if r["event"] == "compile_ahead")
            + sum(r.get("pause_seconds") or 0.0 for r in records if r["event"] == "grow"))


def _by_stage(epochs) -> list:
    """The epochs' `train_seconds`, one list per stage, in order."""
    by_stage = {}
    for record in epochs:
        by_stage.setdefault(record["stage"], []).append(record["train_seconds"])
    return list(by_stage.values())


def compare(settings: DemoSettings = DemoSettings(), output_dir="runs/expansion-demo", progress: bool = True) -> dict:
    """Both runs (taking turns every epoch), the table and the plot.
    Returns {'full': ..., 'expansion': ..., 'table': str}."""
    output_dir = Path(output_dir)
    schedule, epochs = settings.recipe.schedule, settings.recipe.epochs
    results = race(settings, {"full": (None, {}), "expansion": (schedule, {})}, output_dir, progress)
    full, grown = results["full"], results["expansion"]
    full["run"], grown["run"] = f"full depth {settings.model.depth}", f"expansion {settings.schedule_text}"
    bound = ExpansionSchedule.of(schedule, epochs).speedup_bound(epochs, settings.model)
    speedup = full["wall_seconds"] / grown["wall_seconds"]
    table = format_table([full, grown], speedup, bound)
    plot_path = plot([full, grown], output_dir / "accuracy_vs_time.png",
                     f"Network expansion on scikit-learn digits ({settings.recipe.growth} growth)")
    report = {"settings": dataclasses.asdict(settings), "full": full, "expansion": grown,
              "speedup": speedup, "bound": bound, "plot": str(plot_path)}
    (output_dir / "summary.json").write_text(json.dumps(report, indent=2))
    return {**report, "table": table}


def format_table(runs, speedup: float, bound: float) -> str:
    lines = ["| run | wall s | images/s | top-1 | EMA top-1 |", "|---|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['run']} | {r['wall_seconds']:.1f} | {r['images_per_s']:.0f} | "
                     f"{r['top1']:.2%} | {r['ema_top1']:.2%} |")
    lines.append("")
    lines.append(f"speed-up {speedup:.2f}x (bound of the schedule {bound:.2f}x, "
                 f"{speedup / bound:.0%} of it)")
    if all("train_seconds" in r for r in runs):  # what this machine's step costs allow
        lines.append(f"the training steps alone (no compilation, evaluation, checkpoints): "
                     f"{runs[0]['train_seconds'] / runs[1]['train_seconds']:.2f}x")
    if all("compile_seconds" in r for r in runs):  # what the run would reach if nothing were compiled
        rest = [r["wall_seconds"] - r["compile_seconds"] for r in runs]
        lines.append(f"without graph compilation (MindSpore's, {runs[0]['compile_seconds']:.0f} s and "
                     f"{runs[1]['compile_seconds']:.0f} s): {rest[0] / rest[1]:.2f}x, "
                     f"{rest[0] / rest[1] / bound:.0%} of the bound")
    return "\n".join(lines)


def plot(runs, path: Path, title: str = "Network expansion on scikit-learn digits") -> Path:
    """Accuracy against wall-clock time, one line per run (growths marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for r in runs:
        seconds, accuracy = zip(*sorted(r["curve"] + r["growth"]))  # the growth's evaluation: the dip, if any
        axes.plot(seconds, [100 * a for a in accuracy], marker="o", markersize=3, label=r["run"])
        for s, a in r["growth"]:
            axes.axvline(s, color="gray", linestyle=":", linewidth=1)
            axes.annotate("grown", (s, 100 * a), fontsize=8, color="gray")
    axes.set_xlabel("wall-clock seconds")
    axes.set_ylabel("test top-1 (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
