"""Mixed precision: the package's Trainer in float16 (loss scaling, growth), the network under
MindSpore's own `amp_level`s, bfloat16 where the device has it. On this CPU's float16 kernels:
slow, so tiny networks; the numbers are checked against float32 to float16's tolerance."""

import mindspore as ms
import numpy as np
import pytest
from conftest import SMALL, learnable_data, small_trainer
from mindspore import nn

from network_expansion import ArrayData, PrecisionError, Trainer, TrainConfig, VisionTransformer, ViTConfig
from network_expansion import cpu_forms, recipe
from network_expansion.expansion import grow
from network_expansion.graphs import compiled_forward

SMALL_IMAGES = ms.Tensor(learnable_data(8)[0])


def _weights(network) -> dict:
    return {p.name: p.asnumpy().copy() for p in network.get_parameters()}


def _computes_in(cell) -> str:
    """'fp16', 'fp32' or 'bf16': what `to_float` last set on `cell` ('' if never)."""
    flags = cell.get_flags()
    return next((name for name in ("fp16", "fp32", "bf16") if flags.get(name)), "")


def _logits(network, forms=None):
    network.set_train(False)
    return compiled_forward(network, forms)(SMALL_IMAGES).asnumpy()


@pytest.fixture(scope="module")
def float16_run():
    """Four epochs in float16 growing 2 -> 4 by exact growth, compiled ahead."""
    trainer = small_trainer(precision="float16", growth="exact")
    return trainer, trainer.fit()


def test_a_float16_run_lowers_the_loss_through_a_growth_keeping_float32_weights(float16_run):
    trainer, history = float16_run
    losses = [record["loss"] for record in history.epochs]
    assert [record["depth"] for record in history.epochs] == [2, 2, 4, 4]
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    assert [r["compiled_ahead"] for r in history.records if r["event"] == "grow"] == [True]
    assert trainer.model.precision == "float16"
    # the master weights, the EMA and the optimizer's moments stay float32
    assert {p.dtype for p in trainer.model.get_parameters()} == {ms.float32}
    assert {p.dtype for p in trainer.ema.network.get_parameters()} == {ms.float32}
    assert all(entry["data"].dtype == ms.float32 for entry in trainer.optimizer.state()
               if entry["data"].dtype in (ms.float16, ms.bfloat16, ms.float32))
    # dynamic loss scaling, logged with every epoch: no overflow at this size, the scale kept
    assert [record["loss_scale"] for record in history.epochs] == [recipe.DYNAMIC_SCALE] * 4


def test_a_float16_network_computes_in_float16_with_layernorms_softmax_and_logits_in_float32():
    network = VisionTransformer(ViTConfig(**SMALL, depth=2), seed=0)
    full = _logits(network)
    network.set_precision("float16")
    half = _logits(network)
    assert half.dtype == np.float32
    difference = np.abs(half - full).max()
    assert 0 < difference < 2e-2 * np.abs(full).max()  # float16's rounding, and nothing worse
    norms = [cell for _, cell in network.cells_and_names() if isinstance(cell, nn.LayerNorm)]
    assert norms and {_computes_in(cell) for cell in norms} == {"fp32"} and _computes_in(network) == "fp16"
    assert cpu_forms.choose(precision="float16") is None  # the CPU's forms are float32's


def test_a_growth_in_float16_keeps_the_logits_and_casts_the_new_blocks():
    network = VisionTransformer(ViTConfig(**SMALL, depth=2), seed=0).set_precision("float16")
    before = _logits(network)
    grow(network, 4, exact=True, seed=1)
    after = _logits(network)
    np.testing.assert_allclose(after, before, atol=2e-3 * np.abs(before).max() + 1e-4)
    new_block = network.body.layers[1]  # e0, the copy of block 0
    assert {_computes_in(cell) for _, cell in new_block[0].cell[1].cells_and_names()} == {"fp16"}
    assert _computes_in(new_block[0].cell[0]) == "fp32"  # its LayerNorm


def test_loss_scaling_skips_steps_whose_gradients_overflow(monkeypatch, tmp_path):
    """A dynamic scale that starts far too high (2**40): every float16 backward overflows, so
    no weight moves, the scale halves at each of the 3 steps, the learning rate's clock goes
    on; the scale is saved with the run and a resumed run takes it."""
    monkeypatch.setattr(recipe, "DYNAMIC_SCALE", 2.0 ** 40)
    trainer = small_trainer(epochs=1, precision="float16", schedule=None)
    before = _weights(trainer.model)
    trainer.fit()
    after = _weights(trainer.model)
    assert all(np.array_equal(before[name], after[name]) for name in before)
    assert trainer._stages.scale_state() == {"loss_scale": 2.0 ** 37, "loss_scale_counter": 0}
    assert int(trainer.optimizer.global_step.asnumpy()[0]) == trainer.step == 3
    path = trainer.save_checkpoint(tmp_path / "checkpoint.ckpt")
    images, labels = learnable_data()
    resumed = Trainer.resume(path, ArrayData(images, labels, 16), progress=False)
    assert resumed._stages.scale_state() == {"loss_scale": 2.0 ** 37, "loss_scale_counter": 0}


def test_a_fixed_loss_scale_trains_too():
    trainer = small_trainer(epochs=3, precision="float16", schedule=None, loss_scale=1024.0)
    losses = [record["loss"] for record in trainer.fit().epochs]
    assert losses[-1] < losses[0] and [r["loss_scale"] for r in trainer.history.epochs] == [1024.0] * 3


def test_bfloat16_is_refused_on_the_cpu_and_allowed_elsewhere(monkeypatch):
    with pytest.raises(PrecisionError, match="bfloat16 is not available on the CPU"):
        small_trainer(precision="bfloat16")
    cpu_forms.check_precision("bfloat16", device="GPU")
    cpu_forms.check_precision("bfloat16", device="Ascend")
    with pytest.raises(Exception, match="precision must be one of float32, float16, bfloat16"):
        TrainConfig(precision="float64")


@pytest.mark.parametrize("device", ["GPU", "Ascend"])
def test_a_faked_gpu_or_ascend_runs_a_float16_growth_in_the_plain_forms(device, fake_device):
    seen = fake_device(device)  # the forms the package's graphs apply
    trainer = small_trainer(epochs=2, precision="float16", stage_starts="0,1")
    history = trainer.fit()
    assert [r["depth"] for r in history.epochs] == [2, 4] and np.isfinite(history.final["loss"])
    assert seen == [] and trainer.model.precision == "float16"


# -- MindSpore's own mixed precision: Model(amp_level=...) and auto_mixed_precision ----------

def _model_losses(level, epochs=6):
    """Per-epoch mean loss of `mindspore.train.Model(network, amp_level=level)` on a task a
    small ViT learns, and the network's parameter names after it."""
    from mindspore import dataset

    images, labels = learnable_data(48)
    network = VisionTransformer(ViTConfig(**SMALL, depth=2), seed=0)
    names = [p.name for p in network.get_parameters()]
    scale = 1024.0  # mindcv's ViT recipe; on the CPU MindSpore takes only a fixed scale, given to the optimizer too
    optimizer = nn.Adam(network.trainable_params(), 2e-3, loss_scale=scale if level != "O0" else 1.0)
    manager = ms.FixedLossScaleManager(scale, drop_overflow_update=False) if level != "O0" else None
    model = ms.train.Model(network, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"), optimizer,
                           amp_level=level, loss_scale_manager=manager)
    data = dataset.NumpySlicesDataset({"image": images, "label": labels.astype(np.int32)}, shuffle=False).batch(16)
    losses = []

    class Losses(ms.train.Callback):
        def on_train_epoch_begin(self, run_context):
            losses.append([])

        def on_train_step_end(self, run_context):
            losses[-1].append(float(run_context.original_args().net_outputs.asnumpy()))

    model.train(epochs, data, callbacks=[Losses()], dataset_sink_mode=False)
    return [float(np.mean(epoch)) for epoch in losses], names, [p.name for p in network.get_parameters()]


@pytest.mark.parametrize("level", ["O1", "O2", "O3"])
def test_mindspores_model_trains_the_network_at_every_amp_level(level, tmp_path, monkeypatch):
    """`Model(amp_level=...)` compiles and lowers the loss, the checkpoint's names intact. O1
    goes through MindSpore's `rewrite`, which writes `rewritten_network/` into the working
    folder and imports model.py as a top-level module (hence its fallback imports)."""
    monkeypatch.chdir(tmp_path)
    losses, names, after = _model_losses(level)
    assert losses[-1] < losses[0] and np.isfinite(losses).all(), losses
    assert after == names


@pytest.mark.parametrize("level", ["O1", "O2", "O3"])
def test_auto_mixed_precision_keeps_the_logits_to_float16s_tolerance(level, tmp_path, monkeypatch):
    from mindspore.amp import auto_mixed_precision

    monkeypatch.chdir(tmp_path)
    full = VisionTransformer(ViTConfig(**SMALL, depth=2), seed=0)
    reference = _logits(full)
    mixed = auto_mixed_precision(VisionTransformer(ViTConfig(**SMALL, depth=2), seed=0), level)
    mixed.set_train(False)
    logits = mixed(SMALL_IMAGES).asnumpy()
    np.testing.assert_allclose(logits, reference, atol=2e-2 * np.abs(reference).max())
