"""Data-parallel training on MindSpore's own launcher (`msrun`) and communication.

Launch one process per device; each calls `init_data_parallel()` and passes the result
to the `Trainer`, which then averages gradients across processes
(`nn.DistributedGradReducer`), shards the data by rank, and writes checkpoints and logs
from rank 0 only. Every rank applies the same averaged gradients to the same initial
weights, so weights, EMA and every growth stay identical on all ranks.

    msrun --worker_num=8 --local_worker_num=8 --master_addr=127.0.0.1 --master_port=8118 \\
        --join=True --log_dir=msrun_logs network-expansion train --distributed --data ...

On CPU (as in this project's tests) the backend is MindSpore's own gloo-based CPU
collective; on GPU it is NCCL, on Ascend HCCL: the code is the same.

A process that dies (SIGKILL, the out-of-memory killer, a node gone) ends the job instead
of leaving the others waiting in a collective: on its node `msrun` kills the rest at once;
elsewhere the next all-reduce fails (MindSpore's CPU collective gives up after about 30 s)
and the scheduler reports the silent process (after its heartbeat timeout, about 30 s).
Each of our processes that learns of it ends with one `JobLost` line that names the last
checkpoint to resume from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import nn

from .errors import JobLost

_WHY = "killed, out of memory, or its node went down"


@dataclass
class DataParallel:
    """This process's place in the job."""

    rank: int
    size: int

    def reducer(self, parameters):
        """Averages gradients over all processes (an all-reduce, then / size)."""
        return nn.DistributedGradReducer(parameters, mean=True, degree=self.size)

    def shard(self, data):
        """`data` (ArrayData or FolderData) restricted to this rank's share (a copy)."""
        return data.shard(self.size, self.rank)

    def sum(self, values) -> list:
        """`values` (a few numbers) summed over every process of the job; every process must
        call it, in the same order (an all-reduce)."""
        from mindspore import ops

        return ops.AllReduce()(ms.Tensor(np.asarray(values, np.float32))).asnumpy().tolist()

    def lost(self, error: Exception, where: str, checkpoint) -> JobLost:
        """MindSpore's `error` from a step or an all-reduce of this process, as what it means:
        another process of the job stopped answering."""
        return JobLost(f"rank {self.rank} of {self.size}: a collective operation failed at {where}: another "
                       f"process of the job stopped answering ({_WHY}). {resume_advice(checkpoint)} "
                       f"(MindSpore: {_first_line(error)})")


def resume_advice(checkpoint) -> str:
    """What to do after a lost job: resume from `checkpoint` if it was written."""
    if checkpoint is not None and Path(checkpoint).is_file():
        return f"The last checkpoint is {checkpoint}: run the job again with --resume {checkpoint} (Trainer.resume)."
    return "No checkpoint was written yet: run the job again (with --overwrite, its folder has begun)."


def _first_line(error: Exception) -> str:
    """The first line of MindSpore's message that says something (its messages run to C++
    call stacks)."""
    for line in str(error).splitlines():
        if line.strip() and not line.strip().startswith("-"):
            return line.strip()
    return type(error).__name__


def init_data_parallel() -> DataParallel:
    """Join the job `msrun` started (reads its environment), in data-parallel mode.

    In `msrun`'s scheduler process `init()` is the scheduler: it returns when the job has
    ended, or raises `JobLost` when a process stopped answering."""
    from mindspore.communication import get_group_size, get_rank, init

    try:
        init()
    except RuntimeError as error:
        if os.environ.get("MS_ROLE") == "MS_SCHED":
            silent = re.search(r"worker (\d+) is the first one timed out", str(error))
            who = f"worker {silent.group(1)}" if silent else "a process"
            raise JobLost(f"the data-parallel job lost {who} (MindSpore: {_first_line(error)}): it stopped "
                          f"answering ({_WHY}), and the job ended.") from error
        raise JobLost(f"could not join the data-parallel job: {_first_line(error)}") from error
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return DataParallel(rank=get_rank(), size=get_group_size())
