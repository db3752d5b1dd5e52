"""`tune_cpu()`: the one call that changes the process for MindSpore's CPU kernels. Each case
runs in a fresh interpreter: what it changes is the whole process's."""

import json
import os
import subprocess
import sys

import pytest

from network_expansion import tuning

pytestmark = pytest.mark.slow  # fresh interpreters or whole jobs: the README's test command runs them

# After tune_cpu(): the environment it set, whether a fused graph of a ViT-B-sized block
# fused, and each of MindSpore's kernel threads' cores after that graph's first call.
TUNED = """
import json, os, sys
import network_expansion as ne
before = dict(os.environ)
tuning = ne.tune_cpu({options})
import mindspore as ms, numpy as np
network = ne.create_network(depth=1, width=384, num_heads=6, mlp_width=768, num_classes=3)
network.set_train(False)
from network_expansion.graphs import compiled_forward
compiled_forward(network)(ms.Tensor(np.zeros((1, 3, 224, 224), np.float32))).asnumpy()
from network_expansion.tuning import _threads, kernel_cache

threads = [(t, name) for t, name in _threads() if name.startswith(("ActorThread_", "KernelThread_"))]
print(json.dumps({{"set": {{k: v for k, v in os.environ.items() if before.get(k) != v}},
                  "tuning": tuning.environment, "notes": tuning.notes,
                  "fused": bool(list(kernel_cache().rglob("Fused_*.so"))),
                  "cores": [sorted(os.sched_getaffinity(t)) for t, _ in threads]}}))
"""


def _run(script, tmp_path, env=None):
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
    environment.update(NETWORK_EXPANSION_CACHE=str(tmp_path / "cache"), **(env or {}))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="binds threads to two cores or more")
def test_tune_cpu_sets_what_it_says_fuses_and_binds_each_half_of_a_kernel_to_a_core(tmp_path):
    result, _ = _run(TUNED.format(options=""), tmp_path)
    assert result["set"] == result["tuning"]  # it says what it changed, and changed only that
    assert set(result["set"]) == {tuning.OPENMP_WAIT, tuning.FUSION_FLAGS, tuning.KERNEL_CACHE, tuning.AKG_TRUSTED}
    assert result["fused"] and not result["notes"]
    cores = result["cores"]
    assert len(cores) >= 2 and all(len(c) == 1 for c in cores) and cores[0] != cores[1]  # a MatMul's halves apart


def test_tune_cpu_without_fusion_or_binding_leaves_the_threads_to_the_scheduler(tmp_path):
    result, _ = _run(TUNED.format(options="kernel_fusion=False, bind_threads=False"), tmp_path)
    assert result["set"] == {tuning.OPENMP_WAIT: "PASSIVE"} and not result["fused"]
    every = sorted(os.sched_getaffinity(0))
    assert all(c == every for c in result["cores"])


def test_tune_cpu_after_mindspore_was_imported_says_what_to_do_and_does_not_fuse(tmp_path):
    """OpenMP read its wait policy when MindSpore was imported: fused graphs would run with
    spinning threads, slower than unfused ones; so it does not fuse, and says why."""
    result, stderr = _run("import mindspore\n" + TUNED.format(options=""), tmp_path)
    assert not result["fused"] and tuning.FUSION_FLAGS not in result["set"]
    assert any("call tune_cpu() before importing mindspore" in note for note in result["notes"])
    assert "call tune_cpu() before importing mindspore" in stderr  # in the log too


def test_the_binding_gives_each_half_of_a_kernel_its_own_core():
    """The layout measured here (docs/performance.md, "Each half of a kernel on its own
    core"): the pool's first thread, its kernel thread, OpenMP's worker started by the first
    (named after it); and the same rule on more cores."""
    here = [(10, "python"), (15, "ActorThread_0"), (16, "KernelThread_0"), (17, "backend_queue"),
            (30, "ActorThread_0"), (31, "infer_queue")]
    assert tuning.binding_plan(here, [0, 1]) == {15: 0, 16: 1, 30: 1}
    assert tuning.binding_plan(here, [2, 5]) == {15: 2, 16: 5, 30: 5}
    assert tuning.binding_plan(here[:4], [0, 1]) == {15: 0, 16: 1}  # before any fused kernel ran
    four = [(1, "ActorThread_0"), (2, "KernelThread_0"), (3, "KernelThread_1"), (4, "KernelThread_2"),
            (7, "ActorThread_0"), (8, "ActorThread_0"), (9, "ActorThread_0")]
    assert tuning.binding_plan(four, [0, 1, 2, 3]) == {1: 0, 2: 1, 3: 2, 4: 3, 7: 1, 8: 2, 9: 3}
    # layouts it does not know: left to the scheduler
    assert tuning.binding_plan(here, [0]) is None
    assert tuning.binding_plan(here + [(40, "ActorThread_1")], [0, 1]) is None
    assert tuning.binding_plan(four, [0, 1]) is None
    assert tuning.binding_plan([(10, "python")], [0, 1]) is None
