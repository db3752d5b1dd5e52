"""Training and fine-tuning, with or without network expansion: the `Trainer`'s loop.

    >>> trainer = Trainer(model, ArrayData(x, y, batch_size=64), val_data=..., config=TrainConfig(
    ...     epochs=20, schedule="6,12", ema_decay=0.99), output_dir="runs/digits")
    >>> history = trainer.fit()

The recipe is `recipe.py`'s (DeiT's and the authors'); the data follow the batch protocol of
`datasets.py`. At each stage of `config.schedule` the run grows (`stages.Stages`: the model,
its EMA and the moments, into graphs compiled before the first epoch), and the grown model
is evaluated at once. Every epoch `output_dir/checkpoint.ckpt` is written whole
(`training_checkpoint.py`); `Trainer.resume(path, ...)` goes on exactly, across a growth and
from the middle of an epoch (Ctrl-C and SIGTERM save there). Bit-exact when dropout and
drop-path are 0: MindSpore's random state is not part of a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import mindspore as ms

from .errors import ConfigError, DataError, NetworkExpansionError, OutputError, TrainingDiverged
from .ema import EMA
from .expansion import Ramp
from .graphs import as_input, pad_batch
from .datasets import bad_images, check_labels, mixed_batches
from .memory import check_fits, training_bytes
from .schedule import shaped
from .history import EpochMeter, History, describe_record
from .model import ViTConfig, VisionTransformer
from .recipe import BatchTargets, TrainConfig
from .stages import StageGraphs, Stages
from .stopping import StopNow, StopOnSignal
from .training_checkpoint import (RunFolder, read_training_checkpoint, read_training_state, resumed_config,
                                  write_training_checkpoint)

logger = logging.getLogger(__name__)


class Trainer:
    """Trains `model` on `train_data`, growing it as `config.schedule` says.

    `model` must start at the schedule's first depth (e.g. `create_network(depth=6)` for
    "6,12"). `train_data`/`val_data`: `ArrayData` or `FolderData`. `output_dir` receives
    `checkpoint.ckpt` (every epoch), `log.jsonl`, `model.ckpt` and `model_ema.ckpt` (at the
    end; loadable with `create_network(pretrained=...)`); a folder that holds another run is
    refused unless `overwrite` (`training_checkpoint.RunFolder`; `resumes`: the checkpoint
    `Trainer.resume` continues from), and `fit` holds it against a second run.
    """

    def __init__(self, model: VisionTransformer, train_data, val_data=None, config: TrainConfig = TrainConfig(), *,
                 output_dir=None, progress: bool = True, distributed=None, name: str = "", overwrite: bool = False,
                 resumes=None):
        self.model, self.train_data, self.val_data, self.config = model, train_data, val_data, config
        self.name = name  # shown in the progress bar
        self.output_dir = Path(output_dir) if output_dir else None
        self.progress = progress
        self.distributed = distributed  # set by distributed.py: gradient reducer and rank
        if model.config.num_classes < 2:
            raise ConfigError(f"a classifier of {model.config.num_classes} output(s) cannot be trained: it learns to "
                              f"tell classes apart and needs two or more (num_classes)")
        if len(train_data) == 0:
            raise DataError(
                f"the training data has {train_data.num_samples} sample(s) per process, fewer than one batch of "
                f"{train_data.batch_size}: use a batch size of at most {max(train_data.num_samples, 1)}")
        names = check_labels(model.config.num_classes, train_data, val_data)
        if names is not None and len(names) == model.config.num_classes:
            model.class_names = tuple(names)  # saved with the weights: predictions say "cat", not "3"
        self.final_depth = config.final_depth(model.depth)
        final = shaped(model.config, self.final_depth, config.final_width(model.config.width),
                       config.final_size(model.config.image_size))
        check_fits(f"training a ViT of depth {final.depth}, width {final.width} at {final.image_size} px",
                   lambda batch: training_bytes(final, batch), train_data.batch_size,
                   "lower the batch size (--batch-size) or the image size")
        self.schedule = config.expansion_schedule(self.final_depth, len(train_data))
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.history = History()
        self._ramp = None           # the gates' schedule while new blocks enter (exact growth)
        self._started = None        # the clock runs only inside fit()
        self._stop = StopOnSignal()
        self._elapsed_before = 0.0
        self._stages = Stages(config, self.schedule, len(train_data), self.final_depth, model.config, distributed)
        # the output folder, owned by this run: claimed once everything above is known to be
        # right, so that a refused run removes nothing (`overwrite`) and holds nothing
        self._folder = None
        if self.output_dir is not None and (distributed is None or distributed.rank == 0):
            self._folder = RunFolder(self.output_dir).claim(overwrite=overwrite, resumes=resumes)
        self._sources = (train_data, val_data)  # as given; a schedule over image sizes resizes them
        self._pending = None  # a growth's record, until its pause is known (two steps later)
        self._prepared = None  # {stage index: StageGraphs} compiled ahead, when fit() first starts
        if any(stage.size is not None for stage in self.schedule.stages):
            self._use_size(model.config.image_size)
        self._take(self._stages.build(model, EMA(model, config.ema_decay), self.schedule.stage_at(self._clock),
                                      step=self.step))

    # -- building blocks -------------------------------------------------------------

    def _use_size(self, size: int) -> None:
        """Train and validate on images of `size` (the data as given, resized if the
        schedule trains at another size; data without `at_size` are used as they are).
        Below the final size, `size_crops` asks the training data for random resized crops."""
        train, val = self._sources
        crops = self.config.size_crops if size < self.config.final_size(size) else None
        if hasattr(train, "at_size"):
            self.train_data = train.at_size(size, crops=crops)
        if val is not None and hasattr(val, "at_size"):
            self.val_data = val.at_size(size)

    def _take(self, graphs: StageGraphs) -> None:
        """Train with `graphs` from now on (a step that first runs them compiles them: said before)."""
        self._graphs = graphs
        self._compiling = not graphs.compiled
        self.ema = graphs.ema
        self.optimizer, self.lr_schedule = graphs.optimizer, graphs.optimization.lr_schedule
        self._train_step, self._evaluation = graphs.train_step, graphs.evaluation

    def _compile_ahead(self) -> None:
        """Compile the graphs of every later stage the run reaches now (`Stages.compile_ahead`),
        so that a growth only hands values over. Logs one record with the seconds it took."""
        if self._prepared is not None:
            return
        self._prepared = {}
        later = self._stages.later(self.schedule.stage_at(self._clock))
        if not self.config.compile_ahead or not later:
            return
        started = time.perf_counter()
        logger.info("%scompiling the graphs of stage%s %s ahead, so that the growths do not stop training ...",
                    f"{self.name}: " if self.name else "", "s" if len(later) > 1 else "",
                    ", ".join(str(i + 1) for i in later))
        eval_batch = None
        if self.val_data is not None:
            eval_batch = len(next(iter(self.val_data.evaluation_batches()))[1])
            self._stop.rearm()
        self._prepared = self._stages.compile_ahead(self._graphs, self.schedule.stage_at(self._clock),
                                                    self.train_data.batch_size, eval_batch, rearm=self._stop.rearm)
        self._log({"event": "compile_ahead", "epoch": self.epoch + 1, "step": self.step,
                   "stages": sorted(self._prepared), "seconds": time.perf_counter() - started,
                   "wall_seconds": self.wall_seconds})

    # -- the loop --------------------------------------------------------------------

    def fit(self, until: int | None = None) -> History:
        """Train to `config.epochs`, or only to epoch `until` (call again to go on); returns the
        history (also on Ctrl-C or SIGTERM, after saving). `model.ckpt` and `model_ema.ckpt`
        are written when the last epoch is done."""
        if self._folder is not None:
            self._folder.lock()  # OutputError if another run holds the folder
        self._started = time.perf_counter()
        try:
            with self._stop:
                self._compile_ahead()
                return self._fit(self.config.epochs if until is None else min(int(until), self.config.epochs))
        finally:
            self._elapsed_before, self._started = self.wall_seconds, None
            if self._folder is not None:
                self._folder.release()

    def _fit(self, end: int) -> History:
        from tqdm.auto import tqdm

        meter = None
        try:
            while self.epoch < end:
                self._grow_if_due()
                self.model.set_train(True)
                bar = tqdm(total=len(self.train_data), initial=self.batch_in_epoch, leave=False,
                           desc=f"{self.name + ': ' if self.name else ''}epoch {self.epoch + 1}/{self.config.epochs}",
                           unit="batch",
                           disable=not self.progress or not self.is_main, file=sys.stderr)
                meter = EpochMeter(bar)
                for inputs, targets, labels in self._epoch_batches(meter):
                    compiling, self._compiling = self._compiling, False
                    if compiling and self.is_main:  # the step waits for its graphs: say why before, not after
                        logger.info("%scompiling the training step for %s (the first step waits for it) ...",
                                    f"{self.name}: " if self.name else "", _shape_text(self.model.config))
                        bar.set_postfix_str("compiling the training step ...")
                    start = time.perf_counter()
                    gate = self._ramp.value(self.step) if self._ramp else 1.0
                    loss, predictions = self._train_step(as_input(inputs), as_input(targets), ms.Tensor(gate, ms.float32))
                    if compiling:
                        meter.compile_seconds += time.perf_counter() - start  # left out of the ETA
                        if self.is_main:
                            logger.info("%scompiled the training step in %.1f s",
                                        f"{self.name}: " if self.name else "", meter.compile_seconds)
                    self.ema.update()
                    if self._pending is not None:
                        self._time_pause(loss, start)
                    self._fold_if_ramped()
                    meter.queue(loss, predictions, labels, self.epoch, self.batch_in_epoch)
                    self.batch_in_epoch += 1
                    self.step += 1
                    meter.seconds += time.perf_counter() - start
                    if meter.queued >= self.config.log_every:
                        self._read_back(meter)
                    self._stop.check()  # a signal stops here, between whole steps: resume is exact
                self._read_back(meter)
                bar.close()
                self._log_growth()
                self.epoch += 1
                self.batch_in_epoch = 0
                self._record_epoch(meter)
                self.save_checkpoint()
                self._stop.check()
        except StopNow:
            self.history.interrupted, self.history.stopped_by = True, self._stop.name
            logger.warning("stopped at once (asked twice): nothing saved since %s", self._checkpoint_path()
                           or "the start (no output_dir)")
            return self.history
        except KeyboardInterrupt:
            self._stop.ignore()  # a second Ctrl-C must not cut the checkpoint in half
            self._log_growth()
            self.history.interrupted = True
            self.history.stopped_by = self._stop.name
            if meter is not None:
                self._read_back(meter)  # a NaN raises here: nothing diverged is saved
            path = self.save_checkpoint()
            if self.is_main:
                where = f"saved {path}" if path else "nothing saved (no output_dir)"
                logger.warning("%s: %s at epoch %d, batch %d; resume with Trainer.resume or --resume",
                               self._stop.name, where, self.epoch + 1, self.batch_in_epoch)
            return self.history
        except RuntimeError as error:  # a data-parallel job's collective failed: a process is gone
            if self.distributed is None or isinstance(error, NetworkExpansionError):
                raise
            raise self.distributed.lost(error, f"epoch {self.epoch + 1}, batch {self.batch_in_epoch + 1}",
                                        self._checkpoint_path()) from error
        if self.epoch >= self.config.epochs:
            self._save_final()
        return self.history

    def _epoch_batches(self, meter: EpochMeter):
        """This epoch's training batches from `batch_in_epoch` on. With stages counted in
        steps, a growth can come between two batches; one that changes the image size
        switches to the new size's batches at the same position (as a resume there would)."""
        mix = BatchTargets(self.model.config.num_classes, self.config, self.epoch)
        while True:
            data = self.train_data
            for batch in mixed_batches(data, self.epoch, self.config.seed, self.batch_in_epoch, mix):
                self._stop.rearm()  # the epoch's dataset pipeline installs MindSpore's handlers again
                if self.schedule.unit == "step":
                    self._grow_if_due(meter)
                if self.train_data is not data:
                    break
                yield batch
            else:
                return

    def _time_pause(self, loss, start: float) -> None:
        """Time the first two steps after a growth (waiting for each): the first compiles
        the new graphs, the second is an ordinary step; then log the growth's record."""
        loss.asnumpy()
        self._pending["steps"].append(time.perf_counter() - start)
        if len(self._pending["steps"]) == 2:
            self._log_growth()

    def _log_growth(self) -> None:
        """Log the pending growth's record with `pause_seconds`: the wall time training
        stood still for it (surgery, optimizer rebuild, compiling every new graph: the
        first step's excess over the second), the evaluation of its record excluded."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        steps = pending["steps"]
        excess = steps[0] - steps[1] if len(steps) == 2 else (steps[0] if steps else 0.0)
        pending["record"]["pause_seconds"] = pending["pause"] + max(excess, 0.0)
        self._log(pending["record"])

    def _read_back(self, meter: EpochMeter) -> None:
        """Wait for the queued steps and take in their loss and accuracy.

        Steps are dispatched asynchronously and read back every `log_every` steps, so the
        host never waits on the device just to log (on a GPU it queues the next steps
        meanwhile). On this CPU, reading back every step measured no different
        (benchmarks/stage_cost.py: epochs vary by +-15% either way).
        """
        start = time.perf_counter()
        diverged = meter.read_back()
        meter.seconds += time.perf_counter() - start
        if diverged:
            loss, epoch, position = diverged
            raise TrainingDiverged(
                f"the loss became {loss} at epoch {epoch + 1}, batch {position + 1}: training stopped. "
                f"The last good checkpoint is {self._checkpoint_path() or '(none: no output_dir)'}; lower the "
                f"learning rate or set clip_grad, then resume from it.")
        meter.show(self.model.depth)

    @property
    def is_main(self) -> bool:
        """Whether this process speaks for the run (writes its files and its story): rank 0 of a
        data-parallel job, or the only process."""
        return self.distributed is None or self.distributed.rank == 0

    @property
    def _clock(self) -> int:
        """Where training is, in the schedule's unit."""
        return self.step if self.schedule.unit == "step" else self.epoch

    def _fold_if_ramped(self):
        """Once a step has run with the gates at 1, fold them away (model and EMA): the
        checkpoints have the released names again. The compiled graphs keep multiplying by
        a gate fixed at 1, bitwise the same as none, until they are next rebuilt (a growth,
        a resume): recompiling now would cost more than the multiply ever does."""
        if self._ramp is None or not self._ramp.done(self.step):
            return
        self.model.fold_gates()
        self.ema.network.fold_gates()
        self._ramp = None
        self._log({"event": "fold", "epoch": self.epoch + 1, "step": self.step + 1, "wall_seconds": self.wall_seconds})

    def _grow_if_due(self, meter: EpochMeter | None = None) -> None:
        """Grow into the stage the clock is in, if it is deeper, wider or larger: `Stages`
        grows the model, its EMA and the moments and returns what to train with."""
        index = self.schedule.stage_at(self._clock)
        if not self._stages.grows(self.model, index):
            return
        if meter is not None:
            self._read_back(meter)  # mid-epoch: grow from weights known to be finite
        self._log_growth()  # a growth two steps after another: its pause has no second step
        started = time.perf_counter()
        grown = self._stages.grow_into(self._graphs, index, self.step, (self._prepared or {}).pop(index, None))
        ramped = self.config.growth == "exact" and self.config.growth_gate == "ramp" and bool(grown.growth.gates)
        self._ramp = Ramp(self.step, self.config.growth_ramp or len(self.train_data)) if ramped else None
        if grown.growth.grew["size"]:
            self._use_size(self.model.config.image_size)
        self._take(grown.graphs)
        if not grown.graphs.compiled:
            self._warm_evaluation()
        pause = time.perf_counter() - started
        record = {**grown.record, "epoch": self.epoch + 1, **self.validate()}
        record["seconds"] = time.perf_counter() - started
        record["wall_seconds"] = self.wall_seconds
        self._pending = {"record": record, "pause": pause, "steps": []}

    def _warm_evaluation(self) -> None:
        """Compile the evaluation graph now (one batch), so that the growth's pause counts
        its compilation and not the evaluation that follows. (Prepared graphs: compiled.)"""
        if self.val_data is None:
            return
        images, _ = next(iter(self.val_data.evaluation_batches()))
        self._stop.rearm()
        self._evaluation.forward(ms.Tensor(images)).asnumpy()

    def validate(self) -> dict:
        """Top-1 of the model and of its EMA on `val_data` (empty without it), both through
        one compiled forward (`graphs.SharedForward`)."""
        if self.val_data is None:
            return {}
        return {"val_top1": self._top1(self.model), "ema_val_top1": self._top1(self.ema.network)}

    def _top1(self, network) -> float:
        """`network`'s top-1 on `val_data`, every batch padded to one shape (a short last
        batch would compile the network again)."""
        from tqdm.auto import tqdm

        forward = self._evaluation.of(network)
        hits = seen = 0
        size = None
        with tqdm(total=self.val_data.num_samples, desc=f"{self.name + ': ' if self.name else ''}validating "
                  f"{'the EMA' if network is not self.model else 'the model'}", unit="img", leave=False,
                  disable=not self.progress or not self.is_main, file=sys.stderr) as bar:
            for images, labels in self.val_data.evaluation_batches():
                self._stop.rearm()  # the evaluation pipeline installs MindSpore's handlers again
                size = size or len(labels)
                logits = forward(ms.Tensor(pad_batch(images, size))).asnumpy()[:len(labels)]
                hits += int((logits.argmax(-1) == labels).sum())
                seen += len(labels)
                bar.update(len(labels))
        return hits / max(seen, 1)

    @property
    def wall_seconds(self) -> float:
        """Seconds spent in fit() (over all calls, and before a resume)."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._elapsed_before + running

    def _record_epoch(self, meter: EpochMeter):
        record = {"event": "epoch", "epoch": self.epoch, "depth": self.model.depth,
                  "stage": self.schedule.stage_at(self._clock - 1),
                  **meter.summary(self.distributed.sum if self.distributed is not None else None),
                  "lr": self.lr_schedule.value(self.step - 1),
                  "train_seconds": meter.seconds, **self._stages.scale_state()}
        skipped = bad_images(self.train_data)  # DataError above datasets.MAX_BAD_SHARE
        if skipped:
            record["bad_images"] = skipped
        record.update(self.validate())
        record["wall_seconds"] = self.wall_seconds
        record["eta_seconds"] = self._eta(time.perf_counter() - meter.started - meter.compile_seconds)
        self._log(record)

    def _eta(self, epoch_seconds: float) -> float:
        """Seconds the rest of the run should take: this epoch's time (steps and validation)
        for each epoch left, scaled by its stage's cost per image (depth x width^2 x tokens)
        against this stage's: an expansion's later, larger stages take longer."""
        def cost(stage) -> float:
            config = self.model.config
            width = stage.width or config.width
            size = stage.size or config.image_size
            return stage.depth * width * width * (size // config.patch_size) ** 2

        now = cost(self.schedule.stage(self._clock - 1))
        if self.schedule.unit == "step":
            left = [self.schedule.stage(step) for step in range(self.step, self.config.epochs * len(self.train_data),
                                                                 max(len(self.train_data), 1))]
        else:
            left = [self.schedule.stage(epoch) for epoch in range(self.epoch, self.config.epochs)]
        return sum(epoch_seconds * cost(stage) / now for stage in left)

    def _log(self, record: dict):
        self.history.records.append(record)
        if self.is_main:
            logger.info("%s%s", f"{self.name}: " if self.name else "", describe_record(record, self.config.epochs))
        if self.output_dir and self.is_main:
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                with open(self.output_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as error:  # a full disk, say: one clean error; the last checkpoint stays
                raise OutputError(f"cannot write {self.output_dir / 'log.jsonl'} ({error.strerror or error}): the "
                                  f"run stops; the last checkpoint, {self._checkpoint_path()}, is intact: free "
                                  f"space and --resume from it") from None

    # -- checkpoints -----------------------------------------------------------------

    def _checkpoint_path(self):
        return self.output_dir / "checkpoint.ckpt" if self.output_dir else None

    def save_checkpoint(self, path=None):
        """Model, EMA, optimizer and position, written to a temporary file, then renamed."""
        path = Path(path) if path else self._checkpoint_path()
        if path is None or not self.is_main:
            return path
        state = {"epoch": self.epoch, "position": self.batch_in_epoch, "step": self.step,
                 "depth": self.model.depth, "model_config": dataclasses.asdict(self.model.config),
                 "train_config": dataclasses.asdict(self.config), "history": self.history.records,
                 "wall_seconds": self.wall_seconds, "class_names": self.model.class_names,
                 "batch_size": self.train_data.batch_size, "gated_blocks": self.model.gated_blocks(),
                 "ramp": dataclasses.asdict(self._ramp) if self._ramp else None,
                 "moments_born": self.optimizer.born_by_name(), **self._stages.scale_state()}
        entries = [{"name": p.name, "data": p.value()} for p in self.model.get_parameters()]
        entries += [{"name": p.name, "data": p.value()} for p in self.ema.network.get_parameters()]
        entries += self.optimizer.state()
        write_training_checkpoint(path, entries, state)
        return path

    def _save_final(self):
        if not self.output_dir or not self.is_main:
            return
        from .weights import save_weights

        save_weights(self.model, self.output_dir / "model.ckpt")  # gates folded in: the released names
        ema_model = self.ema.network.folded_copy()
        ema_model.class_names = self.model.class_names
        save_weights(ema_model, self.output_dir / "model_ema.ckpt")
        self.history.checkpoint = str(self.output_dir / "model.ckpt")

    @classmethod
    def resume(cls, path, train_data, val_data=None, *, output_dir=None, progress: bool = True,
               distributed=None, changes: dict | None = None) -> "Trainer":
        """A trainer in the exact state `path` was saved in (model depth, EMA, optimizer).

        `changes`: `TrainConfig` fields to change on the way, only those of
        `training_checkpoint.RESUMABLE` (e.g. `{"epochs": 400}`: the cosine stretches to the
        new end; the stages start where they were planned). Anything else would not be the
        same run: `ConfigError`.
        """
        loaded, state = read_training_checkpoint(path)
        saved, names = state.get("class_names"), getattr(train_data, "class_names", None)
        if saved is not None and names is not None and tuple(saved) != tuple(names):
            raise DataError(f"{path} trained on the classes {tuple(saved)[:6]}, this data has {tuple(names)[:6]}: "
                            f"resume on the run's own training tree")
        config = resumed_config(state, changes, len(train_data))
        grown = ViTConfig(**state["model_config"])
        model = VisionTransformer(config.shapes(grown)[0])
        trainer = cls(model, train_data, val_data, config, output_dir=output_dir or Path(path).parent,
                      progress=progress, distributed=distributed, resumes=path)
        if grown != model.config:  # grown since the start: the checkpoint's shape, its weights loaded below
            model.rebuild(grown)
            if grown.image_size != getattr(trainer.train_data, "image_size", grown.image_size):
                trainer._use_size(grown.image_size)
        if state.get("gated_blocks"):  # saved inside an exact growth's ramp (or with learned gates)
            model.add_gates(state["gated_blocks"], trainable=config.growth_gate == "learned")
        trainer._ramp = Ramp(**state["ramp"]) if state.get("ramp") else None
        trainer.epoch, trainer.batch_in_epoch, trainer.step = state["epoch"], state["position"], state["step"]
        trainer.history.records = state["history"]
        trainer._elapsed_before = state["wall_seconds"]
        if state.get("class_names") is not None:
            model.class_names = tuple(state["class_names"])
        for parameter in model.get_parameters():
            parameter.set_data(ms.Tensor(loaded[parameter.name]))
        ema = EMA(model, config.ema_decay)
        ema.load_state({name: loaded[name] for name in loaded if name.startswith("ema.")})
        trainer._take(trainer._stages.build(model, ema, trainer.schedule.stage_at(trainer._clock),
                                            born=state.get("moments_born"), step=trainer.step))
        trainer.optimizer.load_state(loaded)
        trainer._stages.load_scale_state(state)
        return trainer


def folder_trainer(model, train_dir, val_dir=None, config: TrainConfig | None = None, *, batch_size: int = 64,
                   workers: int | None = None, output_dir=None, distributed=None, resume=None, changes=None,
                   progress: bool = True, overwrite: bool = False) -> Trainer:
    """A `Trainer` on ImageFolder trees, as `network-expansion train` and `finetune` build it.

    `model` starts at the schedule's first depth (None with `resume`: the checkpoint builds
    its own). The images go through the model's data config; a folder with fewer images
    than `batch_size` trains with smaller batches (and says so); `distributed` (a
    `DataParallel`) shards the training images. With `resume`, the run continues from that
    `checkpoint.ckpt`, taking `changes` as `Trainer.resume` does.
    """
    from .datasets import FolderData
    from .preprocess import data_config

    state = read_training_state(resume) if resume else None
    data = data_config(ViTConfig(**state["model_config"]) if state else model)
    train = FolderData(train_dir, data, batch_size, workers=workers)
    if distributed is not None:
        train = distributed.shard(train)
    if len(train) == 0 and not state and train.num_samples > 0:
        logger.info("note: %s has %d training image(s) per process, fewer than a batch of %d: training with "
                    "batches of %d", train_dir, train.num_samples, batch_size, train.num_samples)
        train.batch_size = train.num_samples
    val = FolderData(val_dir, data, train.batch_size, train=False, workers=workers) if val_dir else None
    if state:
        return Trainer.resume(resume, train, val, output_dir=output_dir, distributed=distributed, changes=changes,
                              progress=progress)
    return Trainer(model, train, val, config or TrainConfig(), output_dir=output_dir, distributed=distributed,
                   progress=progress, overwrite=overwrite)


def _shape_text(config) -> str:
    """`depth 12, width 768, 224 px`: what a stage trains, in a line of the story."""
    return f"depth {config.depth}, width {config.width}, {config.image_size} px"
