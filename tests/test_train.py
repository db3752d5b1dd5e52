"""The trainer: growth during training, exact resume, interruption, divergence, fine-tuning."""

import json
import time

import mindspore as ms
import numpy as np
import pytest
from conftest import SMALL, learnable_data as _data, parameters_of as _weights, small_trainer as _trainer
from conftest import stop_at_step as _stop_at_step

from network_expansion import ConfigError, VisionTransformer, ViTConfig, create_network, save_weights
from network_expansion import ArrayData, Trainer, TrainConfig, TrainingDiverged
from network_expansion.recipe import WarmupCosine, build_optimizer


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Four epochs, 2 -> 4 blocks at epoch 2, nothing in the way."""
    out = tmp_path_factory.mktemp("uninterrupted")
    trainer = _trainer(out)
    history = trainer.fit()
    return trainer, history, out


def test_the_model_grows_at_the_stage_start_and_keeps_training(uninterrupted):
    trainer, history, out = uninterrupted
    events = [(r["event"], r.get("depth", r.get("to"))) for r in history.records]
    assert events == [("compile_ahead", None), ("epoch", 2), ("epoch", 2), ("grow", 4), ("epoch", 4), ("epoch", 4)]
    grow = history.records[3]
    assert grow["order"] == ["b0", "e0", "b1", "e1"] and "val_top1" in grow and grow["compiled_ahead"]
    assert trainer.model.depth == 4
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log] == ["compile_ahead", "epoch", "epoch", "grow", "epoch", "epoch"]
    assert all(k in log[1] for k in ("loss", "train_top1", "images_per_s", "val_top1", "ema_val_top1", "lr"))


def test_the_evaluation_right_after_growth_runs_the_grown_model():
    trainer = _trainer(epochs=3, stage_starts="0,1")
    x = ms.Tensor(_data()[0][:4])
    trainer.model.set_train(False)
    trainer._evaluation.of(trainer.model)(x)  # compiled at depth 2
    trainer.epoch = 1
    trainer._grow_if_due()
    trainer.model.set_train(False)
    evaluation = trainer._evaluation
    np.testing.assert_allclose(evaluation.of(trainer.model)(x).asnumpy(), trainer.model(x).asnumpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(evaluation.of(trainer.ema.network)(x).asnumpy(), trainer.ema.network(x).asnumpy(),
                               rtol=1e-5, atol=1e-6)


def test_evaluation_pads_the_last_batch_and_scores_model_and_ema_on_every_image():
    trainer = _trainer(epochs=2, ema_decay=0.5)
    images, labels = _data(50, seed=5)
    trainer.val_data = ArrayData(images, labels, 32, shuffle=False, drop_remainder=False)  # 32 + 18
    trainer.fit()
    trainer.model.set_train(False)
    expected = {"val_top1": trainer.model(ms.Tensor(images)).asnumpy().argmax(-1),
                "ema_val_top1": trainer.ema.network(ms.Tensor(images)).asnumpy().argmax(-1)}
    got = trainer.validate()
    for key, predictions in expected.items():
        assert got[key] == pytest.approx(float((predictions == labels).mean()))


@pytest.mark.slow
def test_reading_results_back_late_changes_no_weight_and_no_logged_number():
    runs = {}
    for every in (1, 100):
        trainer = _trainer(log_every=every)
        history = trainer.fit()
        runs[every] = (_weights(trainer.model), [(r["event"], r.get("loss"), r.get("train_top1"), r.get("val_top1"))
                                                 for r in history.records])
    _assert_same(runs[100][0], runs[1][0], "log_every")
    assert runs[100][1] == runs[1][1]


def test_the_final_weights_load_with_create_network(uninterrupted):
    _, _, out = uninterrupted
    network = create_network("NetworkExpansion", pretrained=str(out / "model.ckpt"), num_heads=2)
    assert network.depth == 4
    assert (out / "model_ema.ckpt").is_file()


def test_each_step_moves_the_ema_towards_the_weights_the_optimizer_just_wrote():
    ms.set_seed(0)
    trainer = Trainer(VisionTransformer(ViTConfig(**SMALL, depth=2)), ArrayData(*_data(16), 16),  # one step
                      config=TrainConfig(epochs=1, warmup_epochs=0, lr=2e-3, ema_decay=0.75), progress=False)
    before = _weights(trainer.ema.network)
    trainer.fit()
    after, live = _weights(trainer.ema.network), _weights(trainer.model)
    assert trainer.step == 1
    for name, value in live.items():
        expected = 0.75 * before["ema." + name] + 0.25 * value
        np.testing.assert_allclose(after["ema." + name], expected, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(before["ema." + n], after["ema." + n]) for n in live)


def test_the_step_after_growth_trains_the_new_blocks():
    trainer = _trainer(epochs=3, schedule="2,4", stage_starts="0,1")
    trainer.train_data.batch_size = 48  # one step per epoch
    trainer.epoch = 1
    trainer._grow_if_due()
    new_block_before = trainer.model.blocks[1][1].cell[1].ff1.dense.weight.asnumpy().copy()
    images, labels = next(trainer.train_data.batches(1, 0))
    targets = np.eye(4, dtype=np.float32)[labels]
    trainer.model.set_train(True)
    trainer._train_step(ms.Tensor(images), ms.Tensor(targets), ms.Tensor(1.0, ms.float32))
    after = trainer.model.blocks[1][1].cell[1].ff1.dense.weight.asnumpy()
    assert not np.allclose(after, new_block_before)


def _stop_before_growth(trainer):
    grow = trainer._grow_if_due

    def interrupted():
        if trainer.model.depth < trainer.schedule.depth_at(trainer.epoch):
            raise KeyboardInterrupt
        grow()
    trainer._grow_if_due = interrupted


def _resume_and_finish(path, trainer):
    resumed = Trainer.resume(path, trainer.train_data, trainer.val_data, progress=False)
    state = (resumed.epoch, resumed.batch_in_epoch, resumed.model.depth)
    resumed.fit()
    return state, _weights(resumed.model)


def _assert_same(got, expected, where):
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=f"{where}: {name}")


@pytest.mark.slow
def test_resume_mid_stage_mid_epoch_reproduces_the_uninterrupted_run(uninterrupted, tmp_path):
    trainer = _trainer(tmp_path)
    _stop_at_step(trainer, 4)  # epoch 1 (0-based), batch 1 of 3
    assert trainer.fit().interrupted
    state, got = _resume_and_finish(tmp_path / "checkpoint.ckpt", trainer)
    assert state == (1, 1, 2)
    _assert_same(got, _weights(uninterrupted[0].model), "mid-stage")


@pytest.mark.slow
def test_resume_from_just_before_a_growth_grows_and_reproduces_the_run(uninterrupted, tmp_path):
    trainer = _trainer(tmp_path)
    _stop_before_growth(trainer)
    assert trainer.fit().interrupted
    state, got = _resume_and_finish(tmp_path / "checkpoint.ckpt", trainer)
    assert state == (2, 0, 2)  # the growth is still to come, from the saved EMA
    _assert_same(got, _weights(uninterrupted[0].model), "across the growth")


@pytest.mark.slow
def test_resume_after_a_growth_restores_the_grown_model(uninterrupted, tmp_path):
    trainer = _trainer(tmp_path)
    _stop_at_step(trainer, 8)  # inside epoch 2, after the growth
    assert trainer.fit().interrupted
    state, got = _resume_and_finish(tmp_path / "checkpoint.ckpt", trainer)
    assert state == (2, 2, 4)
    _assert_same(got, _weights(uninterrupted[0].model), "after the growth")


def test_a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, epochs=3)
    original = trainer.train_data.batches

    def poisoned(epoch, seed, start=0):  # from the second batch of the second epoch on
        for batch, (images, labels) in enumerate(original(epoch, seed, start), start):
            yield (images * np.nan if (epoch, batch) >= (1, 1) else images), labels

    trainer.train_data.batches = poisoned
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, batch 2.*checkpoint\.ckpt"):
        trainer.fit()
    saved = Trainer.resume(tmp_path / "checkpoint.ckpt", trainer.train_data, progress=False)
    assert saved.epoch == 1 and all(np.isfinite(v).all() for v in _weights(saved.model).values())


def test_carrying_adamw_moments_keeps_those_of_the_existing_blocks():
    for carry in (False, True):
        trainer = _trainer(epochs=3, stage_starts="0,1", carry_moments=carry)
        trainer.train_data.batch_size = 48
        trainer.epoch = 0
        images, labels = next(trainer.train_data.batches(0, 0))
        trainer.model.set_train(True)
        trainer._train_step(ms.Tensor(images), ms.Tensor(np.eye(4, dtype=np.float32)[labels]), ms.Tensor(1.0, ms.float32))
        trainer.epoch = 1
        trainer._grow_if_due()
        moments = {m.name: m.asnumpy() for m in trainer.optimizer.moments1}
        old_block = moments["adam_m.body.layers.0.0.cell.1.to_q.weight"]   # b0 stays at 0
        new_block = moments["adam_m.body.layers.1.0.cell.1.to_q.weight"]   # e0, the EMA copy
        assert np.abs(old_block).sum() > 0 if carry else np.abs(old_block).sum() == 0
        assert np.abs(new_block).sum() == 0


def test_warmup_cosine_in_the_graph_equals_its_python_twin():
    schedule = WarmupCosine(1e-3, 1e-5, warmup_steps=5, total_steps=20)
    for step in (0, 4, 5, 12, 19, 25):
        value = float(schedule(ms.Tensor(np.array([step], np.int32))).asnumpy().reshape(-1)[0])
        assert value == pytest.approx(schedule.value(step), rel=1e-5)
    assert schedule.value(4) == pytest.approx(1e-3) and schedule.value(19) > 1e-5


def test_frozen_backbone_and_layer_decay_make_the_right_groups():
    model = VisionTransformer(ViTConfig(**SMALL, depth=2))
    frozen = build_optimizer(model, TrainConfig(epochs=1, freeze_backbone=True), 10, 2)
    assert sorted(p.name for p in frozen.optimizer.parameters) == ["head.0.bias", "head.0.weight"]
    decayed = build_optimizer(model, TrainConfig(epochs=1, layer_decay=0.5), 10, 2)
    scales = decayed.lr_scales
    assert (scales["cls"], scales["body.layers.0.0.cell.1.to_q.weight"],
            scales["body.layers.1.1.cell.0.gamma"], scales["head.0.weight"]) == (0.125, 0.25, 0.5, 1.0)


def test_finetune_command_trains_a_new_head_on_an_imagefolder(tmp_path, capsys):
    from conftest import noise_folder

    from network_expansion.cli import main

    noise_folder(tmp_path / "data", classes=("a", "b"))
    source = VisionTransformer(ViTConfig(**{**SMALL, "num_classes": 7}, depth=2))
    weights = save_weights(source, tmp_path / "source.ckpt")
    assert main(["finetune", "--data", str(tmp_path / "data"), "--weights", str(weights), "--epochs", "1",
                 "--batch-size", "4", "--output", str(tmp_path / "run"), "--num-heads", "2",
                 "--freeze-backbone"]) == 0
    tuned = create_network("NetworkExpansion", pretrained=str(tmp_path / "run" / "model.ckpt"), num_heads=2)
    assert tuned.config.num_classes == 2
    np.testing.assert_array_equal(tuned.cls.asnumpy(), source.cls.asnumpy())  # the backbone stayed frozen
    assert not np.allclose(tuned.head[0].bias.asnumpy(), 0)                     # the new head trained


def test_a_schedule_in_steps_grows_in_the_middle_of_an_epoch():
    trainer = _trainer(epochs=3, stage_starts="0,5", stage_unit="step")
    history = trainer.fit()
    grow = [r for r in history.records if r["event"] == "grow"]
    assert [(g["step"], g["epoch"], g["from"], g["to"]) for g in grow] == [(5, 2, 2, 4)]
    assert [r["depth"] for r in history.epochs] == [2, 4, 4]  # epoch 2 ended grown


def test_an_even_schedule_in_steps_splits_the_total_steps():
    config = TrainConfig(epochs=4, schedule="2,4", stage_unit="step")
    schedule = config.expansion_schedule(4, steps_per_epoch=3)
    assert (schedule.starts, schedule.unit) == ((0, 6), "step")


def test_fit_until_an_epoch_then_again_is_the_uninterrupted_run_and_counts_only_its_own_time(uninterrupted):
    trainer = _trainer()
    trainer.fit(until=2)
    assert trainer.epoch == 2 and trainer.model.depth == 2 and not trainer.history.checkpoint  # not finished
    paused = trainer.wall_seconds
    time.sleep(0.5)
    assert trainer.wall_seconds == paused  # the clock stands between calls
    trainer.fit()
    assert trainer.epoch == 4 and trainer.model.depth == 4
    _assert_same(_weights(trainer.model), _weights(uninterrupted[0].model), "fit(until=2), then fit()")


# -- what a new user's trial broke (issue 10) -------------------------------------------

def test_validation_scores_every_sample_even_from_data_built_with_drop_remainder(uninterrupted):
    """`ArrayData(vx, vy, 256)` keeps drop_remainder=True for training; as validation data it
    still scores all 50 samples, also when there are fewer than one batch."""
    trainer = uninterrupted[0]
    images, labels = _data(50, seed=9)
    trainer.model.set_train(False)
    predictions = trainer.model(ms.Tensor(images)).asnumpy().argmax(-1)
    for batch_size in (32, 256):
        trainer.val_data = ArrayData(images, labels, batch_size)
        assert trainer.validate()["val_top1"] == pytest.approx(float((predictions == labels).mean()))


def test_training_data_smaller_than_one_batch_says_so():
    from network_expansion import DataError

    images, labels = _data(10)
    with pytest.raises(DataError, match="10 sample.*fewer than one batch of 16: use a batch size of at most 10"):
        Trainer(VisionTransformer(ViTConfig(**SMALL, depth=2)), ArrayData(images, labels, 16),
                config=TrainConfig(epochs=1), progress=False)


def test_the_console_tells_each_epoch_and_growth_in_one_line(uninterrupted):
    from network_expansion.history import describe_record

    _, history, _ = uninterrupted
    lines = [describe_record(r, 4) for r in history.records]
    assert lines[0].startswith("compiled the graphs of stage 2 ahead in ") and lines[0].endswith(
        "s: the growths will not stop training to compile")
    assert lines[1].startswith("epoch 1/4  depth 2  loss ")
    for part in ("train ", "val ", "EMA ", " img/s", "lr "):
        assert part in lines[1]
    assert lines[3].startswith("grew 2 -> 4 blocks at epoch 3: EMA copies of blocks 0, 1, inserted (b0 e0 b1 e1); "
                               "val top-1 right after: ")
    assert "took " in lines[3] and "(training paused " in lines[3] and lines[3].endswith(" s)")


def test_the_trainer_logs_its_story_and_says_compiling_before_it_compiles(caplog):
    """Graphs compile for seconds (minutes at ViT-B's size): the story says so before, then
    tells each epoch and growth."""
    import logging

    trainer = _trainer(epochs=2, schedule="2,4")
    trainer.name = "mine"
    with caplog.at_level(logging.INFO, logger="network_expansion"):
        trainer.fit()
    story = [m for m in caplog.messages if m.startswith("mine: ")]
    starts = [next(i for i, m in enumerate(story) if m.startswith(f"mine: {text}")) for text in (
        "compiling the graphs of stage 2 ahead", "compiled the graphs of stage 2 ahead in",
        "compiling the training step for depth 2, width 16, 16 px", "epoch 1/2  depth 2  loss ",
        "grew 2 -> 4 blocks at epoch 2", "epoch 2/2  depth 4  loss ")]
    assert starts == sorted(starts), story


@pytest.mark.slow
def test_a_resumed_run_that_ends_sooner_compiles_no_stage_it_cannot_reach(tmp_path, caplog):
    """Four epochs planned with a growth at epoch 3, resumed after the first to end after two:
    the growth's stage never comes, so nothing is compiled for it."""
    import logging

    first = _trainer(tmp_path / "first", compile_ahead=False)
    first.fit(until=1)
    with caplog.at_level(logging.INFO, logger="network_expansion"):
        resumed = Trainer.resume(tmp_path / "first" / "checkpoint.ckpt", first.train_data, first.val_data,
                                 progress=False, output_dir=tmp_path / "shorter", changes={"epochs": 2})
        history = resumed.fit()
    assert [r["event"] for r in history.records] == ["epoch", "epoch"] and resumed.model.depth == 2
    assert not any("ahead" in m for m in caplog.messages)


def test_class_names_of_the_data_are_saved_with_the_trained_weights(tmp_path):
    images, labels = _data(32)
    ms.set_seed(0)
    model = VisionTransformer(ViTConfig(**SMALL, depth=1))
    names = ("ant", "bee", "cat", "dog")
    Trainer(model, ArrayData(images, labels, 16, class_names=names), config=TrainConfig(epochs=1, warmup_epochs=0),
            output_dir=tmp_path, progress=False).fit()
    for file in ("model.ckpt", "model_ema.ckpt"):
        assert create_network("NetworkExpansion", pretrained=str(tmp_path / file), num_heads=2).class_names == names


def test_resume_honours_more_epochs_and_keeps_the_planned_growth(uninterrupted):
    trainer, _, out = uninterrupted
    resumed = Trainer.resume(out / "checkpoint.ckpt", trainer.train_data, trainer.val_data, progress=False,
                             output_dir=out.parent / "longer", changes={"epochs": 5, "log_every": 3})
    assert (resumed.config.epochs, resumed.config.log_every, resumed.schedule.starts) == (5, 3, (0, 2))
    history = resumed.fit()
    assert [r["depth"] for r in history.epochs] == [2, 2, 4, 4, 4]


def test_resume_refuses_a_changed_recipe(uninterrupted):
    trainer, _, out = uninterrupted
    with pytest.raises(ConfigError, match=r"lr=0.1 \(saved 0.002\).*Only epochs, log_every, compile_ahead can change"):
        Trainer.resume(out / "checkpoint.ckpt", trainer.train_data, progress=False, changes={"lr": 0.1})


@pytest.mark.parametrize("large", ["none", "decayed", "both"])
def test_adamw_is_pytorchs_with_bias_correction_per_cohort_of_moments(large, monkeypatch):
    """Two cohorts: `a`'s moments carried from step 0 (as `carry_moments` keeps them), `b`'s
    started at step 3, the first step this optimizer takes; against PyTorch's AdamW in NumPy.
    `c` decays, `b` does not; `large` says which of them are updated as tensors of
    large tensors are in the CPU's forms (the Adam kernel after the decay), the rest by
    `AdamWeightDecay` (MindSpore's plain form: "none")."""
    from network_expansion.cpu_forms import CPUForms
    from network_expansion.recipe import AdamW

    forms = {"none": None, "decayed": CPUForms(large_from=10), "both": CPUForms(large_from=4)}[large]
    rng = np.random.default_rng(0)
    values = {"a": rng.standard_normal((3, 4)), "c": rng.standard_normal((2, 6)), "b": rng.standard_normal(4)}
    params = {k: ms.Parameter(ms.Tensor(v.astype(np.float32)), name=k) for k, v in values.items()}
    schedule = WarmupCosine(1e-2, 1e-4, 2, 10)
    optimizer = AdamW([{"params": [params["a"], params["c"]], "weight_decay": 0.1, "lr": schedule},
                       {"params": [params["b"]], "weight_decay": 0.0, "lr": schedule}], schedule, born=[0, 0, 3],
                      forms=forms)
    assert optimizer.large == {"none": (False,) * 3, "decayed": (True, True, False), "both": (True,) * 3}[large]
    optimizer.global_step.set_data(ms.Tensor(np.array([3], np.int32)))
    m = {"a": rng.standard_normal((3, 4)) * 0.1, "c": rng.standard_normal((2, 6)) * 0.1, "b": np.zeros(4)}
    v = {"a": rng.random((3, 4)) * 0.01, "c": rng.random((2, 6)) * 0.01, "b": np.zeros(4)}
    for index, k in enumerate("ac"):
        optimizer.moments1[index].set_data(ms.Tensor(m[k].astype(np.float32)))
        optimizer.moments2[index].set_data(ms.Tensor(v[k].astype(np.float32)))

    def step(grads):
        return optimizer(grads)

    compiled = ms.jit(step)
    born, decay = {"a": 0, "c": 0, "b": 3}, {"a": 0.1, "c": 0.1, "b": 0.0}
    fresh = params["b"].asnumpy().copy()
    for s in range(3, 8):
        grads = {k: rng.standard_normal(x.shape) for k, x in values.items()}
        compiled(tuple(ms.Tensor(grads[k].astype(np.float32)) for k in "acb"))
        lr = schedule.value(s)
        for k in values:  # torch.optim.AdamW's update, in float64
            t = s - born[k] + 1
            values[k] = values[k] * (1 - lr * decay[k])
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
            values[k] = values[k] - lr * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8)
        for k in values:
            np.testing.assert_allclose(params[k].asnumpy(), values[k], rtol=1e-5, atol=1e-6)
        if s == 3:  # fresh moments' first step moves each weight by the learning rate (uncorrected: 3.16x)
            np.testing.assert_allclose(np.abs(params["b"].asnumpy() - fresh), schedule.value(3), rtol=1e-3)


def test_adamw_updates_each_combination_of_lr_decay_and_moments_birth_in_one_run():
    # one fused update per run: a per-parameter tuple of rates, built in the graph, compiled
    # in time quadratic in the number of parameters (14.5 s for 200; 1 s by runs)
    model = VisionTransformer(ViTConfig(**SMALL, depth=2))
    names = [p.name for p in model.trainable_params()]
    born = {name: 5 for name in names[::3]}  # carried moments, interleaved with new ones
    optimizer = build_optimizer(model, TrainConfig(epochs=1), 10, 2, offset=9, born=born).optimizer
    assert len(optimizer.runs) == len(set(optimizer.combo_of)) == 4  # decayed or not x two births
    assert sorted(start for start, _, _ in optimizer.runs)[0] == 0 and optimizer.runs[-1][1] == len(names)
    assert optimizer.born_by_name() == {name: born.get(name, 9) for name in names}
