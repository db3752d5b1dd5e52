"""Exact depth growth: new blocks behind gates at 0, ramped or learned, folded away."""

import json

import mindspore as ms
import numpy as np
import pytest
from conftest import SMALL, learnable_data, off_defaults, parameters_of, small_trainer, stop_at_step, tiny_config

import network_expansion as ne
from network_expansion import ConfigError, TrainConfig, Trainer, VisionTransformer, ViTConfig
from network_expansion.ema import EMA
from network_expansion.expansion import Ramp
from network_expansion.graphs import compiled_forward
from network_expansion.training_checkpoint import read_training_state



def _grown(exact, mode="insert", gate="ramp"):
    network = off_defaults(VisionTransformer(tiny_config(depth=3)))
    ema = EMA(network, 0.9)
    off_defaults(ema.network, seed=1)  # the EMA's own weights, told apart from the network's
    network.set_train(False)
    images = ms.Tensor(np.random.default_rng(2).standard_normal((3, 3, 32, 32)).astype(np.float32))
    before = network(images).asnumpy()
    ema_before = ema.network(images).asnumpy()
    growth = ne.grow(network, 5, ema=ema, exact=exact, mode=mode, gate=gate)
    network.set_train(False)
    growth.ema_before = ema_before
    return network, ema, growth, images, before


def _relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_the_shared_forward_is_built_when_first_used_and_only_for_the_shape_it_was_made_for():
    from network_expansion.graphs import SharedForward

    network = VisionTransformer(tiny_config(depth=2), seed=0)
    unused = SharedForward(network)
    assert unused._network is None  # a run without evaluation keeps no third set of weights
    shared = SharedForward(network)
    images = ms.Tensor(np.zeros((2, 3, 32, 32), np.float32))
    network.set_train(False)
    assert _relative(shared.of(network)(images).asnumpy(), network(images).asnumpy()) <= 1e-6
    ne.grow(network, 3, exact=False)  # in place: `unused` was made for depth 2 and stays so
    assert unused.network.depth == 2
    with pytest.raises(ConfigError, match="another shape"):
        unused.of(network)


@pytest.mark.parametrize("mode", ["insert", "stack"])
def test_exact_growth_keeps_the_logits_in_pynative_and_graph_mode(mode):
    network, ema, growth, images, before = _grown(exact=True, mode=mode)
    assert network.depth == 5 and len(growth.gates) == 4  # two new blocks, two residuals each
    assert _relative(network(images).asnumpy(), before) <= 1e-5
    assert _relative(compiled_forward(network)(images).asnumpy(), before) <= 1e-5
    # the EMA grows the same way and goes on averaging: its function is unchanged too
    assert _relative(growth.ema.network(images).asnumpy(), growth.ema_before) <= 1e-5
    assert _relative(compiled_forward(growth.ema.network)(images).asnumpy(), growth.ema_before) <= 1e-5
    # the new blocks are the EMA's copies, not zeros
    for position, label in enumerate(growth.order):
        if label[0] == "e":
            copied = network.blocks[position][1].cell[1].ff1.dense.weight.asnumpy()
            source = ema.network.blocks[int(label[1:])][1].cell[1].ff1.dense.weight.asnumpy()
            np.testing.assert_array_equal(copied, source)
            assert np.abs(copied).mean() > 0.1


def test_reference_growth_changes_the_logits_which_is_what_exact_growth_removes():
    network, _, growth, images, before = _grown(exact=False)
    assert growth.gates == [] and not network.gates
    assert _relative(network(images).asnumpy(), before) > 1e-2


@pytest.mark.parametrize("value", [1.0, 0.37])
def test_folding_the_gates_keeps_the_function_and_leaves_the_released_names(value, tmp_path):
    network, _, growth, images, _ = _grown(exact=True)
    gated_names = set(network.parameter_shapes())
    assert {n for n in gated_names if n.endswith(".gate")} == {
        f"body.layers.{i}.{j}.gate" for i in network.gated_blocks() for j in (0, 1)}
    for gate in growth.gates:
        gate.set_data(ms.Tensor(np.float32(value)))
    gated = network(images).asnumpy()
    copy = network.folded_copy()
    assert network.gates  # the copy is folded, the network keeps its gates
    network.fold_gates()
    assert not network.gates and network.gated_blocks() == []
    plain = VisionTransformer(tiny_config(depth=5))
    assert list(network.parameter_shapes()) == list(plain.parameter_shapes())
    assert list(copy.parameter_shapes()) == list(plain.parameter_shapes())
    assert _relative(network(images).asnumpy(), gated) <= 1e-5
    assert _relative(compiled_forward(copy)(images).asnumpy(), gated) <= 1e-5
    network.add_gates([1], value=1.0)  # a gated network is saved folded: the released names
    path = ne.save_weights(network, tmp_path / "folded.ckpt")  # loads strictly, as the hub would
    assert network.gates
    loaded = ne.create_network("NetworkExpansion", pretrained=str(path), num_heads=4)
    loaded.set_train(False)
    assert _relative(loaded(images).asnumpy(), gated) <= 1e-5


def test_a_gate_scales_its_branch_and_the_ema_network_gets_the_same_gates():
    network, _, growth, images, before = _grown(exact=True)
    ema = growth.ema
    assert ema.network.gated_blocks() == network.gated_blocks()
    assert all(name.startswith("ema.") for name in ema.network.parameter_shapes())
    for gate in growth.gates:
        gate.set_data(ms.Tensor(np.float32(1.0)))
    assert _relative(network(images).asnumpy(), before) > 1e-2  # the new blocks now act


def test_the_ema_copies_ramped_gates_and_averages_learned_ones():
    for gate, expected in (("ramp", 1.0), ("learned", 0.5)):
        network, _, growth, _, _ = _grown(exact=True, gate=gate)
        ema = EMA(network, decay=0.5)
        for g in network.gates:
            g.set_data(ms.Tensor(np.float32(1.0)))
        ema.update()
        assert [float(g.asnumpy()) for g in ema.network.gates] == [expected] * 4, gate
        assert all(g.requires_grad == (gate == "learned") for g in network.gates)


def test_one_shared_forward_runs_a_gated_network_its_ema_and_their_folded_forms():
    from network_expansion.graphs import SharedForward

    network, _, growth, images, _ = _grown(exact=True)
    for gate in growth.gates:
        gate.set_data(ms.Tensor(np.float32(0.6)))
    ema = EMA(network, 0.5)
    off_defaults(ema.network, seed=3)  # weights of its own
    shared = SharedForward(network)
    expected = {"model": network(images).asnumpy(), "ema": ema.network(images).asnumpy()}
    assert _relative(expected["model"], expected["ema"]) > 1e-2
    for _ in range(2):  # each run holds its own network's weights, nothing left from the other
        assert _relative(shared.of(network)(images).asnumpy(), expected["model"]) <= 1e-6
        assert _relative(shared.of(ema.network)(images).asnumpy(), expected["ema"]) <= 1e-6
    for gate in network.gates:  # folded at 1, as the trainer folds: the shared network's gates go to 1
        gate.set_data(ms.Tensor(np.float32(1.0)))
    at_one = network(images).asnumpy()
    network.fold_gates()
    assert not network.gates
    assert _relative(shared.of(network)(images).asnumpy(), at_one) <= 1e-5
    with pytest.raises(ConfigError, match="another shape"):
        shared.of(VisionTransformer(tiny_config(depth=2)))


def test_a_ramp_goes_linearly_from_the_growth_to_one():
    ramp = Ramp(start=10, length=4)
    assert [ramp.value(s) for s in range(10, 15)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [ramp.done(s) for s in (12, 13)] == [False, True]
    with pytest.raises(ConfigError, match="whole number of steps"):
        Ramp(start=0, length=0)
    with pytest.raises(ConfigError, match="growth must be one of reference, exact"):
        TrainConfig(growth="smooth")


# -- in the trainer ------------------------------------------------------------------

def _trainer(output_dir=None, **config):
    # 3 steps an epoch, the growth at step 6: the ramp ends inside the second epoch after it
    return small_trainer(output_dir, **{"growth": "exact", "growth_ramp": 5, **config})


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("exact")
    trainer = _trainer(out)
    return trainer, trainer.fit(), out


def test_in_the_trainer_exact_growth_scores_the_same_right_after_the_growth(exact_run):
    trainer, history, out = exact_run
    events = [r["event"] for r in history.records]
    assert events == ["compile_ahead", "epoch", "epoch", "grow", "epoch", "fold", "epoch"]
    before, grow, fold = history.records[2], history.records[3], history.records[5]
    assert grow["growth"] == "exact"
    assert (grow["val_top1"], grow["ema_val_top1"]) == (before["val_top1"], before["ema_val_top1"])
    assert fold["step"] == 6 + 5  # the growth at step 6, five steps of ramp
    losses = [r["loss"] for r in history.epochs]
    assert losses[-1] < losses[0]
    assert not trainer.model.gates and not trainer.ema.network.gates  # folded at the ramp's end
    plain = VisionTransformer(ViTConfig(**SMALL, depth=4))
    for name in ("model.ckpt", "model_ema.ckpt"):
        loaded = ne.create_network("NetworkExpansion", pretrained=str(out / name), num_heads=2)
        assert list(loaded.parameter_shapes()) == list(plain.parameter_shapes())
    log = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == events


def test_the_train_step_ramps_the_gates_inside_the_graph():
    trainer = _trainer(epochs=3, stage_starts="0,1", growth_ramp=4)
    trainer.epoch, trainer.step = 1, 3
    trainer._grow_if_due()
    gates = trainer.model.gates
    assert [float(g.asnumpy()) for g in gates] == [0.0] * 4
    images, labels = next(trainer.train_data.batches(1, 0))
    targets = ms.Tensor(np.eye(4, dtype=np.float32)[labels])
    trainer.model.set_train(True)
    for step, expected in ((3, 0.25), (4, 0.5)):
        trainer._train_step(ms.Tensor(images), targets, ms.Tensor(trainer._ramp.value(step), ms.float32))
        assert [float(g.asnumpy()) for g in gates] == [expected] * 4


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("learned")
    trainer = _trainer(out, growth_gate="learned")
    return trainer, trainer.fit(), out


def test_learned_gates_train_from_zero_and_are_folded_into_the_saved_weights(learned_run):
    trainer, history, tmp_path = learned_run
    assert "fold" not in [r["event"] for r in history.records]  # no ramp: learned gates stay while training
    values = [float(g.asnumpy()) for g in trainer.model.gates]
    assert len(values) == 4 and all(v != 0.0 for v in values)
    assert trainer._ramp is None
    plain = VisionTransformer(ViTConfig(**SMALL, depth=4))
    loaded = ne.create_network("NetworkExpansion", pretrained=str(tmp_path / "model.ckpt"), num_heads=2)
    assert list(loaded.parameter_shapes()) == list(plain.parameter_shapes())
    images = ms.Tensor(learnable_data()[0][:5])
    trainer.model.set_train(False)
    loaded.set_train(False)
    assert _relative(loaded(images).asnumpy(), trainer.model(images).asnumpy()) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("gate,at", [("ramp", 8), ("ramp", 10), ("learned", 8)])  # the ramp: steps 6 to 10
def test_resume_with_gates_reproduces_the_uninterrupted_run(exact_run, learned_run, tmp_path, gate, at):
    uninterrupted = exact_run if gate == "ramp" else learned_run
    trainer = _trainer(tmp_path, growth_gate=gate)
    stop_at_step(trainer, at)
    assert trainer.fit().interrupted
    assert trainer.model.gates  # saved with its gates
    state = read_training_state(tmp_path / "checkpoint.ckpt")
    assert state["ramp"] == ({"start": 6, "length": 5} if gate == "ramp" else None)
    assert state["gated_blocks"] == [1, 3]
    resumed = Trainer.resume(tmp_path / "checkpoint.ckpt", trainer.train_data, trainer.val_data, progress=False)
    assert resumed.model.gated_blocks() == [1, 3]
    history = resumed.fit()
    expected = parameters_of(uninterrupted[0].model)
    got = parameters_of(resumed.model)
    assert list(got) == list(expected)
    for name in expected:  # the tolerance of the trainer's other resume tests (tests/test_train.py)
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert [r["event"] for r in history.records] == [r["event"] for r in uninterrupted[1].records]
