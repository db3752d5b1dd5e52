"""One worker of the data-parallel test; launched by msrun (see test_distributed.py).

    msrun ... python distributed_worker.py OUT
Trains a tiny ViT 2 -> 4 blocks on its shard of a fixed dataset, then writes its final
weights and EMA to OUT/rank_<r>.npz and its step timing to OUT/rank_<r>.json.
"""

import json
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np

from network_expansion import VisionTransformer, ViTConfig
from network_expansion.distributed import init_data_parallel
from network_expansion import ArrayData, Trainer, TrainConfig


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)  # a node of its own writes into a folder of its own
    job = init_data_parallel()
    ms.set_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 64)
    images = rng.standard_normal((64, 3, 16, 16)).astype(np.float32)
    images[:, labels % 3, :4, :4] += 2.0
    model = VisionTransformer(ViTConfig(image_size=16, patch_size=4, width=16, depth=2, num_heads=2, mlp_width=32,
                                        num_classes=4))
    train = job.shard(ArrayData(images, labels, 8))
    trainer = Trainer(model, train, None, TrainConfig(epochs=4, schedule="2,4", warmup_epochs=1, lr=2e-3,
                                                      ema_decay=0.9, seed=1),
                      output_dir=out / "run", progress=False, distributed=job)
    start = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - start
    np.savez(out / f"rank_{job.rank}.npz", **{p.name: p.asnumpy() for p in model.get_parameters()},
             **{p.name: p.asnumpy() for p in trainer.ema.network.get_parameters()})
    steady = [r["train_seconds"] / len(train) for r in history.epochs[1:] if r["depth"] == history.epochs[-1]["depth"]]
    (out / f"rank_{job.rank}.json").write_text(json.dumps({
        "rank": job.rank, "size": job.size, "steps_per_epoch": len(train), "seconds": seconds,
        "seconds_per_step": min(steady) if steady else None, "depth": model.depth,
        "epochs": [{k: r[k] for k in ("loss", "train_top1")} for r in history.epochs]}))


if __name__ == "__main__":
    main(sys.argv[1])
