"""Kernel fusion (graphs.compiled(..., fuse=True)): the same numbers, actually fused, and
nothing left behind in the process's environment or working folder."""

import logging
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from conftest import tiny_config
from network_expansion import ViTConfig, VisionTransformer, graphs, model
from network_expansion.demo import DemoSettings


def _chain():
    """A LayerNorm's backward and a GELU: the elementwise chains fusion is for. A new
    function each call: MindSpore 2.10 mixes up two graphs compiled from one function, one
    fused and one not (the second fails to build its kernels)."""
    def loss(x, gain, shift):
        y = model._layer_norm(x, gain, shift, 1e-6, True)
        return (model._gelu(y, True) * y).sum()

    def gradients(x, gain, shift):
        return ms.grad(loss, grad_position=(0, 1, 2))(x, gain, shift)
    return gradients


def _forget_fusion():
    graphs._why_not_fused.cache_clear()
    graphs._warn_once.cache_clear()


def _fused_kernels() -> set:
    return set(graphs.kernel_cache().rglob("Fused_*.so"))


def test_fused_graphs_compute_what_unfused_ones_do_and_leave_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(model, "LARGE", 0)  # the written-out LayerNorm backward, at a tiny size
    assert graphs.fusion_available()  # on this CPU, with the package's dependencies
    rng = np.random.default_rng(0)
    inputs = [ms.Tensor(rng.standard_normal(shape).astype(np.float32) + offset)
              for shape, offset in (((40, 24), 3.0), ((24,), 1.0), ((24,), 0.0))]
    before, kernels = dict(os.environ), _fused_kernels()

    plain = [g.asnumpy() for g in graphs.compiled(_chain())(*inputs)]
    fused = [g.asnumpy() for g in graphs.compiled(_chain(), fuse=True)(*inputs)]

    for a, b in zip(plain, fused):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    assert _fused_kernels() - kernels, "nothing was fused"  # AKG's kernels, in the package's cache
    assert dict(os.environ) == before  # the fusion flags were set for the call only
    assert not list(tmp_path.iterdir())  # no AKG logs in the working folder


def test_fusion_is_off_with_a_warning_when_openmp_threads_spin(monkeypatch, caplog):
    """MindSpore imported before the package, without OMP_WAIT_POLICY=PASSIVE: fused graphs
    would run slower than unfused ones, so nothing fuses, and the log says what to do."""
    monkeypatch.setenv(graphs.OPENMP_WAIT, "ACTIVE")
    _forget_fusion()
    kernels = _fused_kernels()
    try:
        with caplog.at_level(logging.WARNING, logger="network_expansion.graphs"):
            assert not graphs.fusion_available()
        assert "import network_expansion first" in caplog.text
        x = ms.Tensor(np.ones((8, 6), np.float32))
        graphs.compiled(_chain(), fuse=True)(x, ms.Tensor(np.ones(6, np.float32)), ms.Tensor(np.zeros(6, np.float32)))
        assert _fused_kernels() == kernels
    finally:
        _forget_fusion()


def test_fusion_is_off_with_a_warning_when_its_cache_cannot_be_written(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setattr(graphs, "kernel_cache", lambda: blocked / "kernels")
    _forget_fusion()
    try:
        with caplog.at_level(logging.WARNING, logger="network_expansion.graphs"):
            assert not graphs.fusion_available()
        assert "cannot keep the fused kernels" in caplog.text and "NETWORK_EXPANSION_CACHE" in caplog.text
    finally:
        _forget_fusion()


def test_networks_fuse_their_kernels_from_vit_b_tokens_on():
    assert VisionTransformer(ViTConfig(depth=1), initialize=False).fuses_kernels  # 197 x 768
    assert not VisionTransformer(DemoSettings().model, initialize=False).fuses_kernels  # 17 x 64: launch-bound
    assert not VisionTransformer(tiny_config(), initialize=False).fuses_kernels


def test_the_blocks_take_the_fused_forms_only_for_graphs_that_fuse():
    """The forms fusion runs fastest run slower unfused: a network keeps MindSpore's forms
    until the package compiles a fused graph of it (`graphs.compiled_for`)."""
    vit_b, demo = (VisionTransformer(config, initialize=False) for config in (ViTConfig(depth=2), DemoSettings().model))
    assert not any(block.fused for network in (vit_b, demo) for block in network.blocks)  # e.g. for ms.jit

    def forward(images):
        return images

    graphs.compiled_for(vit_b, forward)
    graphs.compiled_for(demo, forward)
    assert all(block.fused for block in vit_b.blocks) and not any(block.fused for block in demo.blocks)


@pytest.mark.parametrize("fused_forms", [False, True])
def test_a_tiny_vit_step_fused_equals_the_unfused_step(monkeypatch, fused_forms):
    """The whole network's loss and gradients through the fused graph (every large-tensor
    form on, `model.LARGE = 0`) equal the unfused graph's in MindSpore's forms: in MindSpore's
    forms too, and in the forms the blocks take in graphs that fuse (`use_fused_forms`: the
    LayerNorms' forward written out, the GELU's through tanh and exp, AKG's approximations)."""
    monkeypatch.setattr(model, "LARGE", 0)
    network = VisionTransformer(tiny_config(), seed=1)
    kernels = _fused_kernels()
    network.set_train(True)
    images = ms.Tensor(np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32))

    def step():  # a new function for each graph (_chain says why)
        def loss(images):
            return ops.log_softmax(network(images), -1)[:, 3].mean()
        gradients = ms.value_and_grad(loss, None, network.trainable_params())

        def run(images):
            return gradients(images)
        return run

    network.use_fused_forms(fused_forms)
    value, grads = graphs.compiled(step(), fuse=True)(images)
    network.use_fused_forms(False)
    reference_value, reference = graphs.compiled(step())(images)
    assert abs(float(value.asnumpy()) - float(reference_value.asnumpy())) < 1e-5
    for a, b, parameter in zip(grads, reference, network.trainable_params()):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-5 if fused_forms else 1e-6,
                                   err_msg=parameter.name)
    assert _fused_kernels() - kernels  # it did fuse


@pytest.mark.parametrize("fuse", [False, True])
def test_the_gelus_fused_forms_equal_the_sigmoid_one(fuse):
    """`_TanhGELU(fused=True)` computes the forward as x/2 + x/2 tanh(z/2) and the backward's
    sigmoid as 1 / (1 + e^-z) (fusion leaves Sigmoid out): the same values and gradient,
    compiled with fusion or without, and no overflow into NaN far out on either side."""
    x = ms.Tensor(np.concatenate([np.linspace(-60, 60, 241), np.random.default_rng(3).standard_normal(59)])
                  .astype(np.float32))
    upstream = ms.Tensor(np.random.default_rng(4).standard_normal(300).astype(np.float32))
    def value_and_gradient_of(cell):
        def through(x):
            return (cell(x) * upstream).sum()

        def both(x):
            return cell(x), ms.grad(through)(x)
        return [t.asnumpy() for t in graphs.compiled(both, fuse=fuse)(x)]

    (values, grads), (fused_values, fused_grads) = (value_and_gradient_of(model._TanhGELU()),
                                                    value_and_gradient_of(model._TanhGELU(fused=True)))
    assert np.isfinite(fused_values).all() and np.isfinite(fused_grads).all()
    np.testing.assert_allclose(fused_values, values, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused_grads, grads, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [False, True])
def test_the_written_out_layer_norm_equals_the_kernel(training, monkeypatch):
    """Graphs that fuse kernels run the LayerNorm's forward in reductions and elementwise ops
    (`model._layer_norm(..., fused=True)`): the same values and gradients as MindSpore's
    kernel, for tokens with means far from 0."""
    monkeypatch.setattr(model, "LARGE", 0)
    rng = np.random.default_rng(5)
    x = ms.Tensor(rng.standard_normal((30, 24)).astype(np.float32) * 2 + 7)
    gain = ms.Tensor(rng.standard_normal(24).astype(np.float32) + 1)
    shift = ms.Tensor(rng.standard_normal(24).astype(np.float32))
    upstream = ms.Tensor(rng.standard_normal((30, 24)).astype(np.float32))
    def run(fused):
        def loss(x, gain, shift):
            return (model._layer_norm(x, gain, shift, 1e-6, training, fused) * upstream).sum()

        def values_and_gradients(x, gain, shift):
            return ms.value_and_grad(loss, grad_position=(0, 1, 2))(x, gain, shift)
        value, grads = graphs.compiled(values_and_gradients, fuse=fused)(x, gain, shift)
        return [value.asnumpy()] + [g.asnumpy() for g in grads]

    results = [run(False), run(True)]
    for kernel, written_out in zip(*results):
        np.testing.assert_allclose(written_out, kernel, rtol=1e-4, atol=1e-4)


def test_the_binding_gives_each_half_of_a_kernel_its_own_core():
    """The layout measured here (docs/performance.md, "Each half of a kernel on its own
    core"): the pool's first thread, its kernel thread, OpenMP's worker started by the first
    (named after it); and the same rule on more cores."""
    here = [(10, "python"), (15, "ActorThread_0"), (16, "KernelThread_0"), (17, "backend_queue"),
            (30, "ActorThread_0"), (31, "infer_queue")]
    assert graphs.binding_plan(here, [0, 1]) == {15: 0, 16: 1, 30: 1}
    assert graphs.binding_plan(here, [2, 5]) == {15: 2, 16: 5, 30: 5}
    assert graphs.binding_plan(here[:4], [0, 1]) == {15: 0, 16: 1}  # before any fused kernel ran
    four = [(1, "ActorThread_0"), (2, "KernelThread_0"), (3, "KernelThread_1"), (4, "KernelThread_2"),
            (7, "ActorThread_0"), (8, "ActorThread_0"), (9, "ActorThread_0")]
    assert graphs.binding_plan(four, [0, 1, 2, 3]) == {1: 0, 2: 1, 3: 2, 4: 3, 7: 1, 8: 2, 9: 3}
    # layouts it does not know: left to the scheduler
    assert graphs.binding_plan(here, [0]) is None
    assert graphs.binding_plan(here + [(40, "ActorThread_1")], [0, 1]) is None
    assert graphs.binding_plan(four, [0, 1]) is None
    assert graphs.binding_plan([(10, "python")], [0, 1]) is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="binds threads to two cores or more")
def test_a_fused_graphs_first_call_binds_mindspores_kernel_threads(monkeypatch):
    cores = sorted(os.sched_getaffinity(0))
    for thread, _ in graphs._threads():  # as the scheduler had them, whatever ran before
        os.sched_setaffinity(thread, cores)
    rng = np.random.default_rng(0)
    inputs = [ms.Tensor(rng.standard_normal(shape).astype(np.float32)) for shape in ((40, 24), (24,), (24,))]
    graphs.compiled(_chain(), fuse=True)(*inputs)

    names = dict(graphs._threads())
    pool = [t for t, name in names.items() if name.startswith(("ActorThread_", "KernelThread_"))]
    assert len(pool) >= 2
    bound = {t: os.sched_getaffinity(t) for t in pool}
    assert all(len(bound[t]) == 1 for t in pool), bound
    actor, kernel = pool[0], next(t for t in pool if names[t].startswith("KernelThread_"))
    assert bound[actor] != bound[kernel]  # a MatMul's two halves on two cores

    for thread, _ in graphs._threads():
        os.sched_setaffinity(thread, cores)
    monkeypatch.setenv(graphs.BIND_THREADS, "0")
    assert graphs.bind_kernel_threads() is None
    monkeypatch.delenv(graphs.BIND_THREADS)
    monkeypatch.setenv("MS_ROLE", "MS_WORKER")  # an msrun job: its processes share the cores
    assert graphs.bind_kernel_threads() is None
    assert all(os.sched_getaffinity(t) == set(cores) for t in pool)
