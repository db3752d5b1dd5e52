"""A training run's checkpoint (`checkpoint.ckpt`): what a run writes every epoch to go on
exactly where it was (model, EMA, optimizer moments, and the trainer's state: position,
configs, history, gates, ramp), written whole or not at all, and read back.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mindspore as ms

from .atomic import atomic_write
from .config import TrainConfig
from .errors import CheckpointError, ConfigError
from .formats import read_ckpt

STATE_KEY = "network_expansion_trainer_state"

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
        return arrays, json.loads(texts[STATE_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(path, [f"its trainer state is not JSON ({error})"],
                              advice="Resume from another checkpoint, or start a new run.") from None


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
