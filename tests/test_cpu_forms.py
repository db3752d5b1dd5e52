"""The CPU's forms (`cpu_forms.py`): chosen by the device, in one place; computing what the
plain model computes, fused or not; on a network only while the package's own graphs run."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from conftest import SMALL, learnable_data, off_defaults, tiny_config
from network_expansion import ArrayData, TrainConfig, Trainer, ViTConfig, VisionTransformer, cpu_forms, graphs, tuning
from network_expansion.demo import DemoSettings
from network_expansion.ema import EMA
from network_expansion.recipe import build_optimizer


@pytest.fixture()
def fusing(monkeypatch, tmp_path):
    """Graphs compiled inside fuse kernels, as `tune_cpu()` makes them (the suite's process
    has OpenMP's idle threads passive: conftest.py); returns a function listing the kernels
    AKG compiled since (in the suite's cache: MindSpore keeps the folder it first used). In
    a folder of its own: AKG writes a log into the working folder."""
    monkeypatch.chdir(tmp_path)
    cache = tuning.kernel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv(tuning.FUSION_FLAGS, "--opt_level=1")
    monkeypatch.setenv(tuning.KERNEL_CACHE, str(cache))
    monkeypatch.setenv(tuning.AKG_TRUSTED, str(tuning._akg_folder()))
    before = set(cache.rglob("Fused_*.so"))
    return lambda: set(cache.rglob("Fused_*.so")) - before


# -- the chooser ---------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["GPU", "Ascend"])
def test_every_device_but_the_cpu_gets_mindsporess_own_forms(device, monkeypatch):
    monkeypatch.setattr(cpu_forms, "device_target", lambda: device)
    assert cpu_forms.choose() is None
    network = VisionTransformer(ViTConfig(depth=1, num_classes=10), initialize=False)
    assert not any(build_optimizer(network, TrainConfig(), 1, 1).optimizer.large)  # AdamWeightDecay throughout
    assert len(EMA(network, 0.99)._step.large) == 0  # lerp throughout
    assert cpu_forms.choose("CPU") == cpu_forms.CPUForms(fused=False)


def test_the_cpu_gets_its_forms_fused_where_the_process_fuses_kernels(fusing):
    assert cpu_forms.choose() == cpu_forms.CPUForms(fused=True)
    network = VisionTransformer(ViTConfig(depth=1, num_classes=10), initialize=False)
    assert any(build_optimizer(network, TrainConfig(), 1, 1).optimizer.large)  # the Adam kernel for ViT-B's weights
    assert len(EMA(network, 0.99)._step.large) > 0  # added in place


def test_kernel_fusion_pays_from_vit_b_tokens_on():
    assert cpu_forms.fusion_pays(ViTConfig(depth=1))  # 197 x 768
    assert not cpu_forms.fusion_pays(DemoSettings().model)  # 17 x 64: bound by kernel launches
    assert not cpu_forms.fusion_pays(tiny_config())


@pytest.mark.parametrize("device", ["GPU", "Ascend"])
def test_a_run_with_a_growth_on_a_faked_gpu_or_ascend_trains_in_the_plain_forms(device, fake_device):
    """MindSpore's device target reported as GPU or Ascend: the Trainer's graphs run the
    blocks in MindSpore's own forms, AdamW uses one kernel for every tensor and the EMA
    `lerp` (the forms GPU and Ascend kernels are built for), and a run through a growth
    completes (here on the CPU)."""
    seen = fake_device(device)  # the forms the package's graphs apply
    images, labels = learnable_data(32)
    model = VisionTransformer(ViTConfig(**{**SMALL, "width": 256, "num_heads": 4, "mlp_width": 512}, depth=1), seed=0)
    trainer = Trainer(model, ArrayData(images, labels, 16), ArrayData(images, labels, 32, shuffle=False),
                      TrainConfig(epochs=2, schedule="1,2", warmup_epochs=1, ema_decay=0.9), progress=False)
    history = trainer.fit()
    assert [r["depth"] for r in history.epochs] == [1, 2] and np.isfinite(history.final["loss"])
    assert seen == [] and not any(trainer.optimizer.large)  # no form applied; no tensor on the Adam kernel
    assert len(trainer.ema._step.large) == 0  # lerp for every average
    assert cpu_forms.CPUForms().large((256, 256))  # on the CPU these would have taken the large forms


# -- the forms compute what the plain model computes ------------------------------------

FORMS = {"plain": None, "cpu": cpu_forms.CPUForms(), "cpu, every tensor large": cpu_forms.CPUForms(large_from=0),
         "cpu, blocks inlined": cpu_forms.CPUForms(large_from=0, compiled_once=False)}


def _loss_and_gradients(network, images, forms):
    parameters = network.trainable_params()

    def loss(x):
        return (ops.log_softmax(network(x), -1)[:, 3]).mean()

    gradients = ms.value_and_grad(loss, None, parameters)

    def step(x):
        return gradients(x)
    value, grads = graphs.compiled_for(network, step, forms)(images)
    return [value.asnumpy()] + [g.asnumpy() for g in grads]


def test_the_cpu_forms_compute_the_plain_models_loss_and_gradients(tiny_images):
    """For a network with a gate (an exact growth's entering block: another form of the
    block function), in training mode: every form's loss and gradients equal the plain
    model's, and the caller's network is left in the plain forms."""
    network = off_defaults(VisionTransformer(tiny_config(depth=3)), seed=3)
    network.add_gates([1], value=0.4, trainable=True)
    network.set_train(True)
    images = ms.Tensor(tiny_images)
    results = {name: _loss_and_gradients(network, images, forms) for name, forms in FORMS.items()}
    assert all(block.form is None for block in network.blocks)
    names = ["loss"] + [p.name for p in network.trainable_params()]
    assert any("gate" in name for name in names)
    for name, values in results.items():
        for label, a, b in zip(names, values, results["plain"]):
            assert np.abs(b).max() > 0, label
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {label}")


def test_stochastic_depth_compiled_once_computes_what_inlined_blocks_do(tiny_images, monkeypatch):
    """With stochastic depth each block has its own rate; compiled once, every block draws
    its residuals' scales outside and passes them to the one compiled block function. With
    the draw made deterministic (its rate decides which sample is dropped), the loss and
    every gradient equal the inlined blocks'; with every later block dropped the network
    computes what its first block alone computes, in the CPU's forms and the plain ones."""
    def drop_scale(tokens, drop_rate):  # drops sample 0 or 1, by the rate, scaled as the real one
        if drop_rate == 0.0:
            return ops.ones((tokens.shape[0], 1, 1), tokens.dtype)
        first = ops.ones((1, 1, 1), tokens.dtype) if drop_rate < 0.3 else ops.zeros((1, 1, 1), tokens.dtype)
        mask = ops.concat((first, 1 - first, ops.ones((tokens.shape[0] - 2, 1, 1), tokens.dtype)))
        return mask / (1.0 - drop_rate)

    monkeypatch.setattr(cpu_forms, "_drop_scale", drop_scale)
    network = off_defaults(VisionTransformer(tiny_config(depth=3, drop_path_rate=0.5)), seed=3)
    assert [block[0].drop_path.rate for block in network.blocks] == pytest.approx([0.0, 0.25, 0.5])
    network.set_train(True)
    images = ms.Tensor(np.concatenate([tiny_images] * 2)[:4])
    once = _loss_and_gradients(network, images, FORMS["cpu"])
    inlined = _loss_and_gradients(network, images, FORMS["cpu, blocks inlined"])
    for a, b in zip(once, inlined):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def drop_all(tokens, drop_rate):
        return ops.ones((tokens.shape[0], 1, 1), tokens.dtype) * (0.0 if drop_rate > 0 else 1.0)

    def never_kept(x, p):  # the plain DropPath's draw: every sample dropped
        return ops.zeros_like(x)

    monkeypatch.setattr(cpu_forms, "_drop_scale", drop_all)
    monkeypatch.setattr(ops, "bernoulli", never_kept)
    blocks = network.blocks
    three = {name: graphs.compiled_forward(network, forms)(images).asnumpy() for name, forms in FORMS.items()}
    network.set_blocks(blocks[:1])
    one = graphs.compiled_forward(network, None)(images).asnumpy()
    for name, logits in three.items():
        np.testing.assert_allclose(logits, one, rtol=1e-6, atol=1e-6, err_msg=name)


# -- fused forms ----------------------------------------------------------------------------

def test_a_tiny_vit_step_fused_equals_the_plain_step(fusing, tiny_images, monkeypatch):
    """The whole network's loss and gradients through a fused graph in the fused forms (the
    LayerNorms' forward written out, the GELU's through tanh and exp; every tensor large)
    equal the plain model's unfused ones, to AKG's approximations; and it did fuse."""
    network = off_defaults(VisionTransformer(tiny_config()), seed=1)
    network.set_train(True)
    images = ms.Tensor(tiny_images)
    fused = _loss_and_gradients(network, images, cpu_forms.CPUForms(large_from=0, fused=True))
    assert fusing(), "nothing was fused: the test would prove nothing"
    monkeypatch.delenv(tuning.FUSION_FLAGS)
    plain = _loss_and_gradients(network, images, None)
    for a, b in zip(fused, plain):  # AKG's tanh and exp are approximations: 2e-5 of gradients about 0.1
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("fuse", [False, True])
def test_the_gelus_fused_form_equals_the_sigmoid_one(fuse, request):
    """`_TanhGELU(fused=True)` computes the forward as x/2 + x/2 tanh(z/2) and the backward's
    sigmoid as 1 / (1 + e^-z): the same values and gradient, compiled with fusion or
    without, and no overflow into NaN far out on either side."""
    if fuse:
        request.getfixturevalue("fusing")
    x = ms.Tensor(np.concatenate([np.linspace(-60, 60, 241), np.random.default_rng(3).standard_normal(59)])
                  .astype(np.float32))
    upstream = ms.Tensor(np.random.default_rng(4).standard_normal(300).astype(np.float32))

    def value_and_gradient_of(cell):
        def through(x):
            return (cell(x) * upstream).sum()

        def both(x):
            return cell(x), ms.grad(through)(x)
        return [t.asnumpy() for t in graphs.compiled(both)(x)]

    (values, grads), (fused_values, fused_grads) = (value_and_gradient_of(cpu_forms._TanhGELU()),
                                                    value_and_gradient_of(cpu_forms._TanhGELU(fused=True)))
    assert np.isfinite(fused_values).all() and np.isfinite(fused_grads).all()
    np.testing.assert_allclose(fused_values, values, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused_grads, grads, rtol=1e-4, atol=1e-4)
    exact = 0.5 * x.asnumpy() * (1 + np.tanh(np.sqrt(2 / np.pi) * (x.asnumpy() + 0.044715 * x.asnumpy() ** 3)))
    np.testing.assert_allclose(values, exact, rtol=1e-4, atol=1e-5)  # the zoo's tanh GELU


@pytest.mark.parametrize("training", [False, True])
def test_the_written_out_layer_norm_equals_mindspores(training, fusing):
    """Graphs that fuse kernels run a large LayerNorm's forward in reductions and elementwise
    ops (`_layer_norm(..., fused=True)`): the same values and gradients as MindSpore's
    kernel, for tokens with means far from 0."""
    rng = np.random.default_rng(5)
    x = ms.Tensor(rng.standard_normal((30, 24)).astype(np.float32) * 2 + 7)
    gain = ms.Tensor(rng.standard_normal(24).astype(np.float32) + 1)
    shift = ms.Tensor(rng.standard_normal(24).astype(np.float32))
    upstream = ms.Tensor(rng.standard_normal((30, 24)).astype(np.float32))

    def run(fused):
        def loss(x, gain, shift):
            return (cpu_forms._layer_norm(x, gain, shift, 1e-6, training, 0, fused) * upstream).sum()

        def values_and_gradients(x, gain, shift):
            return ms.value_and_grad(loss, grad_position=(0, 1, 2))(x, gain, shift)
        value, grads = graphs.compiled(values_and_gradients)(x, gain, shift)
        return [value.asnumpy()] + [g.asnumpy() for g in grads]

    for kernel, written_out in zip(run(False), run(True)):
        np.testing.assert_allclose(written_out, kernel, rtol=1e-4, atol=1e-4)
