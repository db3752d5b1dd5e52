"""A training run's checkpoint (`checkpoint.ckpt`): what a run writes every epoch to go on
exactly where it was (model, EMA, optimizer moments, and the trainer's state: position,
configs, history, gates, ramp), written whole or not at all, and read back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import mindspore as ms

from .atomic import atomic_write
from .config import TrainConfig
from .errors import CheckpointError, ConfigError
from .formats import read_ckpt

STATE_KEY = "network_expansion_trainer_state"

# What a run writes into its folder: a folder holding any of them belongs to that run.
RUN_FILES = ("checkpoint.ckpt", "log.jsonl", "model.ckpt", "model_ema.ckpt", "config.yaml", "plot.png")
LOCK_FILE = ".run.lock"


class RunFolder:
    """A training run's output folder, owned by one run.

    `claim` refuses a folder that holds another run's files (unless `overwrite`: they are
    removed, the caller asked) or that a running process holds; `resumes`: the checkpoint
    a resumed run continues from, whose own folder is that run's. While `fit` runs, the run
    holds an exclusive lock on `.run.lock`, so a second run into the folder stops before its
    first epoch with the first one's pid, instead of mixing their files."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._handle = None

    def claim(self, *, overwrite: bool = False, resumes=None) -> "RunFolder":
        from .atomic import check_writable_folder
        from .errors import OutputError

        check_writable_folder(self.folder, what="the run's output folder")
        self.lock()
        try:
            own = resumes is not None and Path(resumes).resolve().parent == self.folder.resolve()
            present = [name for name in RUN_FILES if (self.folder / name).exists()]
            if present and not own:
                if not overwrite:
                    raise OutputError(f"{self.folder} holds another run ({', '.join(present)}): continue it with "
                                      f"--resume {self.folder / 'checkpoint.ckpt'}, give another --output, or "
                                      f"pass --overwrite (overwrite=True) to replace it")
                for name in present:
                    (self.folder / name).unlink()
        finally:
            self.release()
        return self

    def lock(self) -> None:
        """Hold the folder for this run (`OutputError` naming the process that holds it)."""
        from .errors import OutputError

        try:
            import fcntl
        except ImportError:  # Windows: no lock
            return
        if self._handle is not None:
            return
        handle = open(self.folder / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputError(f"{self.folder} is in use by a training run ({holder}): wait for it, or give "
                              f"another --output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None

# What a resumed run may change: how long it goes on, how often it reads results back, and
# whether later stages' graphs are compiled ahead.
RESUMABLE = ("epochs", "log_every", "compile_ahead")


def read_training_state(path) -> dict:
    """The trainer state of a `checkpoint.ckpt` (configs, position, batch size), without its tensors."""
    return read_training_checkpoint(path, state_only=True)[1]


def read_training_checkpoint(path, state_only: bool = False):
    """`({name: array}, trainer state)` of a `checkpoint.ckpt` a run wrote."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, ["no such file"], advice="Pass the checkpoint.ckpt a training run wrote.")
    arrays, texts = read_ckpt(path, only=set() if state_only else None)
    if STATE_KEY not in texts:
        raise CheckpointError(path, ["not a training checkpoint (no trainer state)"],
                              advice="To start from weights, use create_network(pretrained=...) instead.")
    try:
        state = json.loads(texts[STATE_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(path, [f"its trainer state is not JSON ({error})"],
                              advice="Resume from another checkpoint, or start a new run.") from None
    problems = state_problems(state)
    if problems:
        raise CheckpointError(path, [f"its trainer state: {problem}" for problem in problems],
                              advice="The file was damaged or edited: resume from another checkpoint, or start "
                                     "a new run.")
    return arrays, state


def state_problems(state) -> list:
    """What is wrong with a saved trainer state (empty: it can be resumed)."""
    from .config import ViTConfig

    if not isinstance(state, dict):
        return [f"a {type(state).__name__}, not a mapping"]
    def whole(value, low):
        return isinstance(value, int) and not isinstance(value, bool) and value >= low
    kinds = {"epoch": lambda v: whole(v, 0), "position": lambda v: whole(v, 0), "step": lambda v: whole(v, 0),
             "depth": lambda v: whole(v, 1), "batch_size": lambda v: whole(v, 1),
             "model_config": lambda v: isinstance(v, dict), "train_config": lambda v: isinstance(v, dict),
             "history": lambda v: isinstance(v, list),
             "wall_seconds": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0}
    optional = {"class_names": lambda v: v is None or (isinstance(v, list) and all(isinstance(n, str) for n in v)),
                "gated_blocks": lambda v: v is None or (isinstance(v, list) and all(whole(i, 0) for i in v)),
                "ramp": lambda v: v is None or isinstance(v, dict),
                "moments_born": lambda v: v is None or isinstance(v, dict),
                "loss_scale": lambda v: isinstance(v, (int, float)) and v > 0,
                "loss_scale_counter": lambda v: whole(v, 0)}
    problems = [f"{key} is missing" for key in kinds if key not in state]
    problems += [f"{key} is {state[key]!r}, not what a run writes" for key, good in {**kinds, **optional}.items()
                 if key in state and not good(state[key])]
    if problems:
        return problems
    for key, build in (("model_config", ViTConfig), ("train_config", TrainConfig)):
        try:
            build(**state[key])
        except (TypeError, ValueError) as error:  # an unknown field, or a value out of range (ConfigError)
            problems.append(f"{key}: {str(error).splitlines()[0][:300]}")
    return problems


def write_training_checkpoint(path, entries: list, state: dict) -> None:
    """`entries` (`{"name", "data"}`: model, EMA, optimizer) and the trainer `state` as a
    MindSpore checkpoint, written to a temporary file, then renamed."""
    with atomic_write(path, advice="The last checkpoint written is intact") as temporary:
        ms.save_checkpoint(entries, str(temporary), append_dict={STATE_KEY: json.dumps(state)})


def resumed_config(state: dict, changes: dict | None, steps_per_epoch: int) -> TrainConfig:
    """The recipe a run resumed from `state` goes on with: the saved one, with `changes` of
    `RESUMABLE` fields only (a longer run keeps its stages where they were planned); any other
    change is refused (`ConfigError`), as a different run."""
    saved = config = TrainConfig(**state["train_config"])
    if changes:
        proposed = dataclasses.replace(saved, **changes)  # normalised as the saved config was
        refused = sorted(k for k in changes if k not in RESUMABLE and getattr(proposed, k) != getattr(saved, k))
        if refused:
            raise ConfigError(
                "a resumed run keeps its recipe; these differ from the checkpoint's: "
                + ", ".join(f"{k}={getattr(proposed, k)!r} (saved {getattr(saved, k)!r})" for k in refused)
                + f". Only {', '.join(RESUMABLE)} can change; start a new run for the others")
        config = dataclasses.replace(saved, **{k: v for k, v in changes.items() if k in RESUMABLE})
        if config.epochs != saved.epochs and saved.schedule and saved.stage_starts is None:
            planned = saved.expansion_schedule(saved.final_depth(state["depth"]), steps_per_epoch).starts
            config = dataclasses.replace(config, stage_starts=planned)
    if config.epochs < state["epoch"]:
        raise ConfigError(f"epochs={config.epochs}: the checkpoint is already at epoch {state['epoch']}")
    return config
