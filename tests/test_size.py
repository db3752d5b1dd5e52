"""The third axis: image size. Resizing the data, resampling the position embeddings of the
model and its EMA, and a Trainer whose schedule grows the image size (with depth), resumed
across it."""

import numpy as np
import pytest
from conftest import parameters_of, small_trainer, stop_at_step

import network_expansion as ne
from network_expansion import ArrayData, ConfigError, Trainer, create_network
from network_expansion.datasets import resize_images
from network_expansion.weights import resample_positions


@pytest.mark.parametrize("size_in,size_out", [(16, 12), (16, 8), (12, 16), (7, 16)])
def test_resizing_arrays_matches_pils_bilinear(size_in, size_out):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 3, size_in, size_in)).astype(np.float32)
    ours = resize_images(images, size_out)
    theirs = np.stack([[np.asarray(Image.fromarray(channel, mode="F").resize((size_out, size_out), Image.BILINEAR))
                        for channel in image] for image in images])
    assert ours.shape == (2, 3, size_out, size_out)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_array_data_at_another_size_is_a_resized_copy():
    images = np.random.default_rng(1).standard_normal((6, 3, 16, 16)).astype(np.float32)
    data = ArrayData(images, np.arange(6) % 2, 2)
    small = data.at_size(8)
    assert (data.image_size, small.image_size) == (16, 8) and data.at_size(16) is data
    batch, labels = next(small.batches(0, 0))
    full, same = next(data.batches(0, 0))
    assert batch.shape == (2, 3, 8, 8) and np.array_equal(labels, same)  # the same samples in the same order
    np.testing.assert_allclose(batch, resize_images(full, 8), atol=1e-6)


def test_growing_the_image_size_resamples_the_positions_of_model_and_ema_and_keeps_the_rest():
    from conftest import off_defaults, tiny_config

    network = off_defaults(ne.VisionTransformer(tiny_config(image_size=16, patch_size=8)))  # 2x2 patches
    ema = ne.EMA(network, 0.9)
    off_defaults(ema.network, seed=1)
    before, averages = parameters_of(network), parameters_of(ema.network)
    growth = ne.grow(network, image_size=32, ema=ema)
    assert network.config.image_size == 32 and growth.ema.network.config.image_size == 32
    after, grown_averages = parameters_of(network), parameters_of(growth.ema.network)
    assert after["pos_embedding"].shape == (1, 17, 32)
    np.testing.assert_allclose(after["pos_embedding"], resample_positions(before["pos_embedding"], (1, 17, 32)))
    np.testing.assert_allclose(grown_averages["ema.pos_embedding"],
                               resample_positions(averages["ema.pos_embedding"], (1, 17, 32)))
    for name in before:  # everything else as it was, the EMA's averages too
        if name != "pos_embedding":
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
            np.testing.assert_array_equal(grown_averages["ema." + name], averages["ema." + name], err_msg=name)
    import mindspore as ms
    logits = network(ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    assert logits.shape == (1, 10)
    with pytest.raises(ConfigError, match="cannot shrink the image size from 32 to 16"):
        ne.grow(network, image_size=16)
    layers = network.body  # only the position embedding is new: the layers are the same objects
    ne.grow(network, image_size=48)
    assert network.body is layers and network.pos_embedding.name == "pos_embedding"
    import dataclasses
    with pytest.raises(ConfigError, match="image size only"):
        network.resize(dataclasses.replace(network.config, image_size=64, width=64), np.zeros((1, 65, 64)))
    with pytest.raises(ConfigError, match=r"expected \(1, 65, 32\)"):
        network.resize(dataclasses.replace(network.config, image_size=64), np.zeros((1, 17, 32)))


@pytest.fixture(scope="module")
def sized_run(tmp_path_factory):
    """Four epochs of the SMALL ViT on 16x16 data: 2 blocks on 8x8 images, then 4 blocks on
    16x16 from epoch 2 (depth exact)."""
    out = tmp_path_factory.mktemp("sized")
    trainer = small_trainer(out, image_size=8, schedule="2@8,4@16", growth="exact")
    return trainer, trainer.fit(), out


def test_the_trainer_grows_depth_and_image_size_and_switches_the_data(sized_run):
    trainer, history, _ = sized_run
    grow = next(r for r in history.records if r["event"] == "grow")
    assert (grow["epoch"], grow["size_from"], grow["size_to"], grow["to"]) == (2, 8, 16, 4)
    started = grow["wall_seconds"] - grow["seconds"]  # the clock at the growth's start
    assert 0 < grow["pause_seconds"] < history.epochs[-1]["wall_seconds"] - started
    assert trainer.model.config.image_size == 16 and trainer.ema.network.config.image_size == 16
    assert trainer.train_data.image_size == 16 and trainer.val_data.image_size == 16
    losses = [r["loss"] for r in history.epochs]
    assert losses[-1] < losses[1]
    grown = ne.create_network(pretrained=str(sized_run[2] / "model.ckpt"))
    assert (grown.depth, grown.config.image_size) == (4, 16)


def test_every_growth_record_says_how_long_training_stood_still(sized_run):
    from network_expansion.history import describe_record

    _, history, out = sized_run
    import json
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    grows = [r for r in logged if r["event"] == "grow"]
    assert len(grows) == 1 and "pause_seconds" in grows[0]
    # the graphs of stage 2 compiled before the first epoch; the growth logged before its epoch
    assert [r["event"] for r in logged][:4] == ["compile_ahead", "epoch", "epoch", "grow"]
    assert logged[0]["stages"] == [1] and grows[0]["compiled_ahead"] is True
    assert "images 8 -> 16 px" in describe_record(grows[0], 4) and "training paused" in describe_record(grows[0], 4)
    assert describe_record(logged[0], 4).startswith("compiled the graphs of stage 2 ahead in ")


@pytest.mark.parametrize("schedule,growth", [("1x16@8,2x16@12,4x32@16", "exact"), ("2,4", "reference")])
def test_graphs_compiled_ahead_train_exactly_what_compiling_at_the_growth_trains(schedule, growth, tmp_path):
    image_size = 8 if "@" in schedule else 16
    depth = int(schedule.split(",")[0].split("x")[0].split("@")[0])
    runs = {}
    for ahead in (True, False):
        trainer = small_trainer(tmp_path / str(ahead), depth=depth, image_size=image_size, schedule=schedule,
                                growth=growth, compile_ahead=ahead, epochs=3, stage_starts=None)
        history = trainer.fit()
        assert [r["compiled_ahead"] for r in history.records if r["event"] == "grow"] == \
            [ahead] * (len(schedule.split(",")) - 1)
        runs[ahead] = parameters_of(trainer.model), parameters_of(trainer.ema.network), history
    (model, ema, history), (model_off, ema_off, history_off) = runs[True], runs[False]
    assert list(model) == list(model_off) and list(ema) == list(ema_off)
    for name in model:
        np.testing.assert_allclose(model[name], model_off[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name in ema:
        np.testing.assert_allclose(ema[name], ema_off[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert [r["loss"] for r in history.epochs] == pytest.approx([r["loss"] for r in history_off.epochs], rel=1e-5)


def test_resume_across_an_image_size_growth_reproduces_the_uninterrupted_run(sized_run, tmp_path):
    uninterrupted = sized_run[0]
    trainer = small_trainer(tmp_path, image_size=8, schedule="2@8,4@16", growth="exact")
    stop_at_step(trainer, 8)  # inside the first grown epoch
    assert trainer.fit().interrupted and trainer.model.config.image_size == 16
    resumed = Trainer.resume(tmp_path / "checkpoint.ckpt", trainer._sources[0], trainer._sources[1], progress=False)
    assert resumed.model.config.image_size == 16 and resumed.train_data.image_size == 16
    resumed.fit()
    expected, got = parameters_of(uninterrupted.model), parameters_of(resumed.model)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_growth_counted_in_steps_switches_the_image_size_mid_epoch():
    trainer = small_trainer(None, image_size=8, epochs=2, schedule="2@8,2@16", stage_starts="0,4", stage_unit="step")
    history = trainer.fit()
    grow = next(r for r in history.records if r["event"] == "grow")
    assert (grow["step"], grow["size_to"]) == (4, 16) and trainer.model.config.image_size == 16
    assert sum(1 for r in history.records if r["event"] == "epoch") == 2


def test_a_size_schedule_needs_a_model_of_its_first_size():
    with pytest.raises(ConfigError, match="starts at image size 8, the model has 16: build it with image_size=8"):
        small_trainer(schedule="2@8,4@16")


def test_image_size_growth_from_the_command_line(tmp_path, capsys):
    from conftest import noise_folder, run_command

    noise_folder(tmp_path / "data", classes=("a", "b"), size=16)
    base = ["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--epochs", "2",
            "--patch-size", "4", "--width", "16", "--num-heads", "2", "--mlp-width", "32", "--batch-size", "4"]
    code, out, _ = run_command(base + ["--schedule", "1@8,2@16"], capsys)
    assert code == 0, out
    assert "images 8 -> 16 px" in out and "training paused" in out
    grown = create_network(pretrained=str(tmp_path / "run" / "model.ckpt"))
    assert (grown.depth, grown.config.image_size) == (2, 16)
    code, out, err = run_command(base + ["--schedule", "1@8,2@16", "--image-size", "32"], capsys)
    assert code == 2 and "end at different image sizes" in out + err
    code, out, err = run_command(base + ["--schedule", "1@16,2@8"], capsys)
    assert code == 2 and "sizes cannot shrink" in out + err
