"""Data parallelism on MindSpore's launcher: two CPU workers on loopback, identical weights;
two nodes (network namespaces this test makes) give the same weights; a worker killed
mid-epoch ends the job in bounded time with one line, and the job resumes."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # fresh interpreters or whole jobs: the README's test command runs them

HERE = Path(__file__).resolve().parent


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _msrun() -> str:
    msrun = Path(sys.executable).with_name("msrun")
    msrun = str(msrun) if msrun.exists() else shutil.which("msrun")
    assert msrun, "msrun (MindSpore's launcher) is not installed"
    return msrun


def _logs(folder) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(Path(folder).glob("**/*.log")))


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [_msrun(), "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "--join=True", f"--log_dir={out / 'logs'}",
               str(HERE / "distributed_worker.py"), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + _logs(out)
    return out


# -- two nodes: one msrun per network namespace, one worker each ----------------------

MASTER = "10.77.0.1"


@pytest.fixture(scope="module")
def two_hosts():
    """Two network namespaces joined by a veth pair (10.77.0.1 and .2): two hosts for msrun,
    which starts its scheduler wherever the master address is local. Needs root and iproute2;
    the namespaces are removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("two nodes need network namespaces: root and iproute2 (`ip netns`)")
    names = [f"ne{os.getpid()}{side}" for side in "ab"]
    commands = [["ip", "netns", "add", names[0]], ["ip", "netns", "add", names[1]],
                ["ip", "link", "add", f"{names[0]}v", "type", "veth", "peer", "name", f"{names[1]}v"]]
    for i, name in enumerate(names):
        commands += [["ip", "link", "set", f"{name}v", "netns", name],
                     ["ip", "-n", name, "addr", "add", f"10.77.0.{i + 1}/24", "dev", f"{name}v"],
                     ["ip", "-n", name, "link", "set", f"{name}v", "up"], ["ip", "-n", name, "link", "set", "lo", "up"]]
    try:
        for command in commands:
            made = subprocess.run(command, capture_output=True, text=True)
            if made.returncode:
                pytest.skip(f"cannot make network namespaces here: {' '.join(command)}: {made.stderr.strip()}")
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _start_nodes(hosts, program, logs, port, marker="", **popen):
    """One msrun per host (a network namespace), node ranks 0 and 1, one worker each."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               NE_TEST_JOB=marker)
    return [subprocess.Popen(["ip", "netns", "exec", host, _msrun(), "--worker_num=2", "--local_worker_num=1",
                              f"--node_rank={rank}", f"--master_addr={MASTER}", f"--master_port={port}", "--join=True",
                              f"--log_dir={logs}/node{rank}", *program(rank)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **popen)
            for rank, host in enumerate(hosts)]


def _finish(nodes, timeout):
    """Each node's (exit code, console), waiting at most `timeout` seconds in all."""
    end = time.monotonic() + timeout
    results = []
    for node in nodes:
        try:
            out, _ = node.communicate(timeout=max(end - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for other in nodes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(other.pid, signal.SIGKILL)
            out, _ = node.communicate()
            results.append((None, out))
            continue
        results.append((node.returncode, out))
    return results


@pytest.fixture(scope="module")
def two_nodes(two_hosts, tmp_path_factory):
    """The two-worker job of `two_workers`, run as two nodes of one worker each; each node
    writes into a folder of its own."""
    out = tmp_path_factory.mktemp("nodes")
    nodes = _start_nodes(two_hosts, lambda rank: [str(HERE / "distributed_worker.py"), str(out / f"node{rank}")],
                         out / "logs", _free_port(), start_new_session=True)
    results = _finish(nodes, 900)
    assert [code for code, _ in results] == [0, 0], "\n".join(text[-2000:] for _, text in results) + _logs(out)
    return out


def test_two_nodes_of_one_worker_train_the_same_weights_as_one_node_of_two(two_nodes, two_workers):
    one = np.load(two_workers / "rank_0.npz")
    for rank in (0, 1):
        node = np.load(two_nodes / f"node{rank}" / f"rank_{rank}.npz")
        assert sorted(node.files) == sorted(one.files)
        assert any(name.startswith("body.layers.3.") for name in node.files)  # through the growth 2 -> 4
        for name in one.files:
            np.testing.assert_array_equal(node[name], one[name], err_msg=f"node {rank}: {name}")


def test_each_node_writes_only_what_it_owns(two_nodes):
    """Rank 0's node holds the run (checkpoints, log); rank 1's node holds its own result only."""
    assert sorted(p.name for p in (two_nodes / "node1").iterdir()) == ["rank_1.json", "rank_1.npz"]
    assert {"checkpoint.ckpt", "model.ckpt", "log.jsonl"} <= {p.name for p in (two_nodes / "node0" / "run").iterdir()}


def _worker_of(marker, rank):
    """The pid of the job's worker process of `rank` (found by its environment)."""
    wanted = {f"NE_TEST_JOB={marker}", f"RANK_ID={rank}", "MS_ROLE=MS_WORKER"}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and wanted <= set((entry / "environ").read_bytes().decode(errors="replace").split("\0")):
                return int(entry.name)
    return None


def test_a_worker_killed_mid_epoch_ends_the_job_in_bounded_time_with_one_line_and_it_resumes(
        two_hosts, tmp_path):
    """SIGKILL (what the out-of-memory killer sends) to the worker of node 1 in the middle of an
    epoch: node 0's worker finds its all-reduce failed, the scheduler finds node 1 silent; each
    ends with one line naming the checkpoint (no traceback of ours), the job ends in bounded
    time, and the same command with --resume trains on from the last checkpoint to the end."""
    from conftest import noise_folder

    data = noise_folder(tmp_path / "data", classes=("ant", "bee", "cat"), per_class=100, size=32)
    run, marker = tmp_path / "run", uuid.uuid4().hex
    train = ["network-expansion", "train", "--distributed", "--data", str(data), "--schedule", "2,4",
             "--epochs", "12", "--image-size", "32", "--patch-size", "8", "--width", "32", "--num-heads", "2",
             "--mlp-width", "64", "--batch-size", "4", "--output", str(run)]
    command = lambda rank: [str(Path(sys.executable).with_name("network-expansion")), *train[1:]]  # noqa: E731
    nodes = _start_nodes(two_hosts, command, tmp_path / "logs", _free_port(), marker, start_new_session=True)
    try:
        log = run / "log.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (not log.is_file() or log.read_text().count('"epoch"') < 2):
            time.sleep(0.2)
        assert log.is_file() and log.read_text().count('"epoch"') >= 2, _finish(nodes, 5)
        victim = _worker_of(marker, 1)
        assert victim, "the worker of rank 1 is not running"
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        results = _finish(nodes, 180)
        ended = time.monotonic() - killed
    finally:
        _finish(nodes, 1)
    assert all(code not in (0, None) for code, _ in results), results  # ended, not hung, not "done"
    print(f"a worker killed mid-epoch: the job ended {ended:.0f} s later")
    assert ended < 120
    console = results[0][1]
    checkpoint = run / "checkpoint.ckpt"
    ours = [line for line in console.splitlines() if line.strip().startswith("network-expansion: error:")]
    assert any("rank 0 of 2: a collective operation failed at epoch" in line and f"--resume {checkpoint}" in line
               for line in ours), console[-3000:]
    assert any("the data-parallel job lost worker 1" in line and f"--resume {checkpoint}" in line
               for line in ours), console[-3000:]  # the scheduler's, shown by msrun
    for name in ("worker_0.log", "scheduler.log"):  # our processes end with one line, not a traceback
        assert "Traceback" not in (tmp_path / "logs" / "node0" / name).read_text(), name

    resume = lambda rank: [*command(rank), "--resume", str(checkpoint)]  # noqa: E731
    results = _finish(_start_nodes(two_hosts, resume, tmp_path / "again", _free_port(), start_new_session=True), 600)
    assert [code for code, _ in results] == [0, 0], "\n".join(text[-3000:] for _, text in results)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    epochs = [r["epoch"] for r in records if r["event"] == "epoch"]
    assert epochs == list(range(1, 13))  # on from the checkpoint's epoch (no epoch twice), to the end
    assert [r["to"] for r in records if r["event"] == "grow"] == [4]
    assert "done: depth 4" in results[0][1]


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
