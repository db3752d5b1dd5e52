"""The third axis: image size. Resizing the data, resampling the position embeddings of the
model and its EMA, and a Trainer whose schedule grows the image size (with depth), resumed
across it."""

import numpy as np
import pytest
from conftest import parameters_of, small_trainer, stop_at_step

import network_expansion as ne
from network_expansion import ArrayData, ConfigError, Trainer, create_network
from network_expansion.datasets import random_crops, resize_images, resize_matrix
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


def test_a_crop_window_is_resized_as_pils_bilinear_resizes_that_box():
    from PIL import Image

    image = np.random.default_rng(2).standard_normal((16, 16)).astype(np.float32)
    top, left, height, width = random_crops(np.random.default_rng(3), 6, 16, 0.3)
    rows, columns = resize_matrix(16, 12, top, height), resize_matrix(16, 12, left, width)
    assert rows.shape == (6, 12, 16)
    for i in range(6):
        assert 0 <= top[i] and top[i] + height[i] <= 16 and 0 <= left[i] and left[i] + width[i] <= 16
        box = (left[i], top[i], left[i] + width[i], top[i] + height[i])
        theirs = np.asarray(Image.fromarray(image, mode="F").resize((12, 12), Image.BILINEAR, box=box))
        np.testing.assert_allclose(rows[i] @ image @ columns[i].T, theirs, atol=1e-4)
    shares = height * width / 16 ** 2
    assert shares.min() >= 0.3 * 0.75 and shares.max() <= 1  # a window clipped to the image keeps 3/4 of its area


def test_array_data_crops_are_drawn_per_epoch_and_evaluation_sees_whole_images():
    images = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)
    data = ArrayData(images, np.arange(8) % 2, 2, shuffle=False)  # the same order every epoch
    cropped = data.at_size(12, crops=0.5)
    epoch = [b for b, _ in cropped.batches(0, 0)]
    assert len(epoch) == 4 and epoch[0].shape == (2, 3, 12, 12)
    assert all(np.array_equal(a, b) for a, b in zip(epoch, [b for b, _ in cropped.batches(0, 0)]))
    assert all(np.array_equal(a, b) for a, b in zip(epoch[2:], [b for b, _ in cropped.batches(0, 0, start=2)]))
    whole = [b for b, _ in data.at_size(12).batches(0, 0)]
    for other in ([b for b, _ in cropped.batches(1, 0)], [b for b, _ in cropped.batches(0, 1)], whole):
        assert not any(np.allclose(a, b, atol=1e-3) for a, b in zip(epoch, other))  # other crops, same images
    assert [list(y) for _, y in cropped.batches(0, 0)] == [list(y) for _, y in data.batches(0, 0)]
    for (a, _), (b, _) in zip(cropped.evaluation_batches(), data.at_size(12).evaluation_batches()):
        np.testing.assert_array_equal(a, b)
    back = cropped.at_size(16)  # the final size: the images as given, no crops
    assert back.crops is None and back.images is data.images
    with pytest.raises(ConfigError, match=r"crops must be None or a number > 0 and <= 1 .*got 0"):
        data.at_size(12, crops=0)


@pytest.mark.parametrize("share", [0, 1.5, -0.2])
def test_size_crops_must_be_a_share_of_the_area(share):
    with pytest.raises(ConfigError, match=r"size_crops must be .*got " + str(share)):
        ne.TrainConfig(size_crops=share)


@pytest.fixture(scope="module")
def sized_run(tmp_path_factory):
    """Four epochs of the SMALL ViT on 16x16 data: 2 blocks on random resized crops at 8x8,
    then 4 blocks on whole 16x16 images from epoch 2 (depth exact)."""
    out = tmp_path_factory.mktemp("sized")
    trainer = small_trainer(out, image_size=8, schedule="2@8,4@16", growth="exact", size_crops=0.5)
    assert (trainer.train_data.crops, trainer.val_data.crops) == (0.5, None)
    return trainer, trainer.fit(), out


def test_the_trainer_grows_depth_and_image_size_and_switches_the_data(sized_run):
    trainer, history, _ = sized_run
    grow = next(r for r in history.records if r["event"] == "grow")
    assert (grow["epoch"], grow["size_from"], grow["size_to"], grow["to"]) == (3, 8, 16, 4)
    started = grow["wall_seconds"] - grow["seconds"]  # the clock at the growth's start
    assert 0 < grow["pause_seconds"] < history.epochs[-1]["wall_seconds"] - started
    assert trainer.model.config.image_size == 16 and trainer.ema.network.config.image_size == 16
    assert trainer.train_data.image_size == 16 and trainer.val_data.image_size == 16
    assert trainer.train_data.crops is None  # crops only below the final size
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("stop", [8, 4])  # inside the first grown epoch; inside the cropped stage's second epoch
def test_resume_across_an_image_size_growth_reproduces_the_uninterrupted_run(sized_run, tmp_path, stop):
    uninterrupted = sized_run[0]
    trainer = small_trainer(tmp_path, image_size=8, schedule="2@8,4@16", growth="exact", size_crops=0.5)
    stop_at_step(trainer, stop)
    size = 16 if stop == 8 else 8
    assert trainer.fit().interrupted and trainer.model.config.image_size == size
    resumed = Trainer.resume(tmp_path / "checkpoint.ckpt", trainer._sources[0], trainer._sources[1], progress=False)
    assert resumed.model.config.image_size == size and resumed.train_data.image_size == size
    assert resumed.train_data.crops == (0.5 if size == 8 else None)
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
