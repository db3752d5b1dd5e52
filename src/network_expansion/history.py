"""What a training run tells: its records (one per epoch, per growth, per gate fold and one
for the graphs compiled ahead, also written to
`log.jsonl`), the console line of each, and the meter that reads an epoch's results back
from the device in batches."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class History:
    """What happened: one record per epoch, per growth, per fold of an exact growth's gates
    and one for the graphs compiled ahead (also written to log.jsonl). Every record's
    `epoch` is the number (from 1) of the epoch it belongs to, as the console says it: a
    growth at the start of the third epoch and that epoch's own record both say 3."""

    records: list = field(default_factory=list)
    interrupted: bool = False
    stopped_by: str | None = None    # 'interrupted' (Ctrl-C, SIGINT), 'terminated' (SIGTERM), 'hung up' (SIGHUP)
    checkpoint: str | None = None

    @property
    def epochs(self) -> list:
        return [r for r in self.records if r["event"] == "epoch"]

    @property
    def final(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


def describe_record(record: dict, epochs: int) -> str:
    """One line of the console's story of a run: an epoch, a growth, a fold of gates, or the
    graphs compiled ahead."""
    def top1(key, label):
        return f"  {label} {record[key]:.1%}" if key in record else ""

    if record["event"] == "grow":
        order = record["order"]
        copied = [label[1:] for label in order if label.startswith("e")]
        after = (f"; val top-1 right after: {record['val_top1']:.1%} (EMA {record['ema_val_top1']:.1%})"
                 if "val_top1" in record else "")
        gated = ", behind gates at 0 (exact)" if record.get("growth") == "exact" else ""
        width = (f"width {record['width_from']} -> {record['width_to']} ({record['heads_to']} heads, "
                 f"{record['split']} split, function unchanged)" if "width_to" in record else "")
        if "size_to" in record:
            size = f"images {record['size_from']} -> {record['size_to']} px (positions resampled)"
            width = f"{width} and {size}" if width else size
        took = f"{after}; took {record.get('seconds', 0.0):.1f} s"
        if "pause_seconds" in record:
            took += f" (training paused {record['pause_seconds']:.1f} s)"
        if not copied:
            return f"grew {width} at epoch {record['epoch']}{took}"
        return (f"grew {width + ' and ' if width else ''}{record['from']} -> {record['to']} blocks at epoch "
                f"{record['epoch']}: EMA copies of block{'s' if len(copied) > 1 else ''} {', '.join(copied)}, "
                f"{record.get('mode', 'insert')}ed ({' '.join(order)}){gated}{took}")
    if record["event"] == "compile_ahead":
        stages = record["stages"]
        return (f"compiled the graphs of stage{'s' if len(stages) > 1 else ''} {', '.join(str(i + 1) for i in stages)} "
                f"ahead in {record['seconds']:.1f} s: the growths will not stop training to compile")
    if record["event"] == "fold":
        return f"the new blocks' gates reached 1 after step {record['step']} and were folded away"
    loss = record.get("loss")
    return (f"epoch {record['epoch']}/{epochs}  depth {record['depth']}  loss "
            f"{'-' if loss is None else f'{loss:.4f}'}{top1('train_top1', 'train')}{top1('val_top1', 'val')}"
            f"{top1('ema_val_top1', 'EMA')}  {record['images_per_s']:.0f} img/s  lr {record['lr']:.2e}"
            + (f"  ({record['bad_images']} unreadable image(s) skipped so far)" if record.get("bad_images") else "")
            + (f"  eta {_clock(record['eta_seconds'])}" if record.get("eta_seconds") else ""))


def _clock(seconds: float) -> str:
    """`1:02:03`, `4:05`: a duration as a clock reads."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class EpochMeter:
    """Loss and accuracy of an epoch's steps, read back from the device in batches."""

    def __init__(self, bar):
        self.bar = bar
        self.pending = []  # (loss tensor, predictions tensor, labels, epoch, position)
        self.losses, self.hits, self.seen, self.seconds = [], 0, 0, 0.0
        self.started = time.perf_counter()  # the epoch's wall time, validation included, for the ETA
        self.compile_seconds = 0.0  # ... less the first step's compilation

    @property
    def queued(self) -> int:
        return len(self.pending)

    def queue(self, loss, predictions, labels, epoch: int, position: int) -> None:
        self.pending.append((loss, predictions, labels, epoch, position))

    def read_back(self):
        """Take in the queued steps; returns (loss, epoch, position) of the first that diverged."""
        pending, self.pending = self.pending, []
        for loss, predictions, labels, epoch, position in pending:
            loss = float(loss.asnumpy())
            if not math.isfinite(loss):
                return loss, epoch, position
            self.losses.append(loss)
            self.hits += int((predictions.asnumpy() == labels).sum())
            self.seen += len(labels)
        self.bar.update(len(pending))
        return None

    def show(self, depth: int) -> None:
        if self.seen:
            self.bar.set_postfix(loss=f"{self.mean_loss:.3f}", acc=f"{self.top1:.1%}",
                                 img_s=f"{self.images_per_second:.0f}", depth=depth)

    @property
    def mean_loss(self):
        return float(np.mean(self.losses)) if self.losses else None

    @property
    def top1(self) -> float:
        return self.hits / max(self.seen, 1)

    @property
    def images_per_second(self) -> float:
        return self.seen / max(self.seconds, 1e-9)

    def summary(self, total=None) -> dict:
        """The epoch's loss, training top-1 and images/s for its record. `total`: sums a
        vector over every process of a data-parallel job (`DataParallel.sum`), so that the
        record is the job's, not this process's shard's (images/s: the job's images in this
        process's time)."""
        counts = [float(np.sum(self.losses)), len(self.losses), self.hits, self.seen]
        loss_sum, steps, hits, seen = total(counts) if total is not None else counts
        return {"loss": float(loss_sum / steps) if steps else None, "train_top1": float(hits / max(seen, 1)),
                "images_per_s": float(seen / max(self.seconds, 1e-9))}
