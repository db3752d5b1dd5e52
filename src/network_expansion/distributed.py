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
"""

from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import nn


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


def init_data_parallel() -> DataParallel:
    """Join the job `msrun` started (reads its environment), in data-parallel mode."""
    from mindspore.communication import get_group_size, get_rank, init

    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return DataParallel(rank=get_rank(), size=get_group_size())
