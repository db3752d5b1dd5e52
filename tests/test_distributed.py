"""Data parallelism on MindSpore's launcher: two CPU workers on loopback, identical weights."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # fresh interpreters or whole jobs: the README's test command runs them

HERE = Path(__file__).resolve().parent


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    msrun = Path(sys.executable).with_name("msrun")
    if not msrun.exists():
        msrun = shutil.which("msrun")
    assert msrun, "msrun (MindSpore's launcher) is not installed"
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [str(msrun), "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "--join=True", f"--log_dir={out / 'logs'}",
               str(HERE / "distributed_worker.py"), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=out)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((out / "logs").glob("*.log"))) if (out / "logs").is_dir() else ""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + logs
    return out


def test_both_ranks_end_with_identical_weights_and_ema_after_growing(two_workers):
    rank0, rank1 = (np.load(two_workers / f"rank_{r}.npz") for r in (0, 1))
    assert sorted(rank0.files) == sorted(rank1.files)
    assert any(name.startswith("body.layers.3.") for name in rank0.files)  # grown 2 -> 4
    assert any(name.startswith("ema.") for name in rank0.files)
    for name in rank0.files:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)


def test_each_rank_trained_on_half_the_data_and_only_rank_0_wrote_checkpoints(two_workers):
    infos = [json.loads((two_workers / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [i["size"] for i in infos] == [2, 2] and [i["steps_per_epoch"] for i in infos] == [4, 4]  # 64 / 2 / 8
    print(f"data parallel on CPU: 2 workers, {infos[0]['seconds_per_step'] * 1000:.0f} ms per step at depth 4, "
          f"{infos[0]['seconds']:.1f} s for 4 epochs")
    run = two_workers / "run"
    assert (run / "checkpoint.ckpt").is_file() and (run / "model.ckpt").is_file()
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["compile_ahead", "epoch", "epoch", "grow", "epoch", "epoch"]  # once
    assert next(r for r in records if r["event"] == "grow")["compiled_ahead"]  # the growth did not stop to compile


def test_every_rank_reports_the_jobs_loss_and_accuracy_not_its_shards(two_workers):
    """The epoch records (and the command's one `done:` line, from rank 0) hold the job's
    numbers: the loss and accuracy summed over both ranks' shards."""
    infos = [json.loads((two_workers / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert infos[0]["epochs"] == infos[1]["epochs"] and len(infos[0]["epochs"]) == 4
