"""The method: schedules, the exact block order of insert and stack, EMA."""

import mindspore as ms
import numpy as np
import pytest
from conftest import parameters_of, tiny_config

from network_expansion import ConfigError, VisionTransformer, create_network, save_weights
from network_expansion.ema import EMA
from network_expansion.expansion import expand
from network_expansion.schedule import ExpansionSchedule


def test_even_schedule_splits_the_epochs_like_the_reference_code():
    assert ExpansionSchedule.even((6, 12), 300).starts == (0, 150)
    assert ExpansionSchedule.even((4, 8, 12), 300).starts == (0, 100, 200)
    schedule = ExpansionSchedule.of("6,9,12", 10)
    assert [schedule.depth_at(e) for e in range(10)] == [6, 6, 6, 9, 9, 9, 12, 12, 12, 12]
    assert [(s.depth, s.start) for s in schedule.stages] == [(6, 0), (9, 3), (12, 6)]
    assert schedule.stage(7).depth == 12
    assert ExpansionSchedule.of("6,12", 10, starts="0,3").starts == (0, 3)


@pytest.mark.parametrize("depths,bound", [("6,12", 4 / 3), ("4,8,12", 1.5), ("8,12", 1.2)])
def test_speedup_bound_is_the_inverse_of_the_blocks_share_of_work(depths, bound):
    assert ExpansionSchedule.of(depths, 300).speedup_bound(300) == pytest.approx(bound)


def test_the_bound_of_a_schedule_that_grows_the_width_counts_the_blocks_flops():
    from network_expansion import ViTConfig

    # multiply-adds per block: tokens * (4 w^2 + 2 w mlp) + 2 tokens^2 w, by hand
    vit_b = ViTConfig(image_size=224, num_classes=1000)
    wide, narrow = 197 * (4 * 768 ** 2 + 2 * 768 * 3072) + 2 * 197 ** 2 * 768, \
        197 * (4 * 384 ** 2 + 2 * 384 * 1536) + 2 * 197 ** 2 * 384
    schedule = ExpansionSchedule.of("6x384,12x768", 300)
    assert [(s.depth, s.width, s.start) for s in schedule.stages] == [(6, 384, 0), (12, 768, 150)]
    assert schedule.speedup_bound(300, vit_b) == pytest.approx(24 * wide / (6 * narrow + 12 * wide))
    assert schedule.speedup_bound(300, vit_b) == pytest.approx(1.77, abs=0.005)
    # depth alone: the depths' share, with or without the model
    assert ExpansionSchedule.of("6,12", 300).speedup_bound(300, vit_b) == pytest.approx(4 / 3)
    with pytest.raises(ConfigError, match="give its config"):
        schedule.speedup_bound(300)


def test_a_schedule_over_depth_width_and_image_size_parses_and_counts_its_tokens():
    from network_expansion import Shape, ViTConfig

    assert Shape.parse("6x384@160") == Shape(6, 384, 160) and str(Shape(6, 384, 160)) == "6x384@160"
    assert Shape.parse("6@160") == Shape(6, None, 160) and str(Shape.parse("6@160")) == "6@160"
    schedule = ExpansionSchedule.of("6x384@160,12x768@224", 300)
    assert [(s.depth, s.width, s.size, s.start) for s in schedule.stages] == [(6, 384, 160, 0), (12, 768, 224, 150)]
    assert str(schedule) == "6x384@160 (from 0) -> 12x768@224 (from 150)"
    # the size is carried forward like the width; image size alone is a growth too
    assert [s.size for s in ExpansionSchedule.of("4@12,8,12@16", 30).stages] == [12, 12, 16]
    assert [s.depth for s in ExpansionSchedule.of("12@12,12@16", 30).stages] == [12, 12]
    vit_b = ViTConfig(image_size=224, num_classes=1000)
    def block(width, tokens):  # multiply-adds per block, by hand
        return tokens * (4 * width ** 2 + 2 * width * 4 * width) + 2 * tokens ** 2 * width
    small, full = block(768, (160 // 16) ** 2 + 1), block(768, 197)
    assert ExpansionSchedule.of("6@160,12@224", 300).speedup_bound(300, vit_b) == \
        pytest.approx(24 * full / (6 * small + 12 * full))
    small = block(384, 101)
    assert schedule.speedup_bound(300, vit_b) == pytest.approx(24 * full / (6 * small + 12 * full))
    with pytest.raises(ConfigError, match="give its config"):
        ExpansionSchedule.of("6@160,12@224", 300).speedup_bound(300)


@pytest.mark.parametrize("text,message", [("12,6", "must grow"), ("3,12", "at most double"), ("6,x", "expected stages"),
                                          ("6@224,12@160", "sizes cannot shrink"), ("6,12@224", "first stage's size"),
                                          ("6@16,6@16", "must grow"), ("6@x", "expected stages")])
def test_invalid_schedules_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        ExpansionSchedule.of(text, 10)


def _distinct_ema(model):
    """An EMA whose weights differ from the model's, so copies can be told apart."""
    ema = EMA(model, decay=0.9)
    rng = np.random.default_rng(4)
    for p in ema.network.get_parameters():
        p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32)))
    return ema


def _block_weights(network, i):
    return network.blocks[i][0].cell[1].to_q.weight.asnumpy().copy()


@pytest.mark.parametrize("start,end,mode,order", [
    (2, 4, "insert", ["b0", "e0", "b1", "e1"]),
    (3, 5, "insert", ["b0", "b1", "e1", "b2", "e2"]),
    (6, 9, "insert", ["b0", "b1", "b2", "b3", "e3", "b4", "e4", "b5", "e5"]),
    (2, 4, "stack", ["b0", "b1", "e0", "e1"]),
    (3, 5, "stack", ["b0", "b1", "b2", "e1", "e2"]),
    (6, 9, "stack", ["b0", "b1", "b2", "b3", "b4", "b5", "e3", "e4", "e5"]),
])
def test_growth_gives_exactly_the_documented_block_order_checked_by_weights(start, end, mode, order):
    ms.set_seed(0)
    model = VisionTransformer(tiny_config(depth=start, width=16, mlp_width=32))
    ema = _distinct_ema(model)
    trained = [_block_weights(model, i) for i in range(start)]
    averaged = [ema.network.blocks[i][0].cell[1].to_q.weight.asnumpy().copy() for i in range(start)]
    assert expand(model, ema, end, mode) == order
    for position, label in enumerate(order):
        source = (trained if label[0] == "b" else averaged)[int(label[1:])]
        np.testing.assert_array_equal(_block_weights(model, position), source, err_msg=f"{position} {label}")
    layers = sorted({int(n.split(".")[2]) for n in model.parameter_shapes() if n.startswith("body.layers.")})
    assert layers == list(range(end)) and model.config.depth == end


def test_a_grown_models_checkpoint_loads_into_a_fresh_model_of_the_new_depth(tmp_path):
    model = VisionTransformer(tiny_config(depth=2))
    expand(model, EMA(model, 0.9), 4)
    path = save_weights(model, tmp_path / "grown.ckpt")
    fresh = create_network("NetworkExpansion", pretrained=str(path), num_heads=4)
    assert fresh.depth == 4
    for name, value in parameters_of(model).items():
        np.testing.assert_array_equal(parameters_of(fresh)[name], value)


def test_growth_by_more_than_the_depth_is_refused():
    model = VisionTransformer(tiny_config(depth=2))
    with pytest.raises(ConfigError, match="growth must be 1 to 2 blocks"):
        expand(model, EMA(model, 0.9), 5)


def test_the_ema_moves_towards_the_live_weights_by_one_minus_decay():
    model = VisionTransformer(tiny_config())
    ema = EMA(model, decay=0.75)
    before = ema.network.cls.asnumpy().copy()
    model.cls.set_data(model.cls.value() + 4.0)
    ema.update()
    np.testing.assert_allclose(ema.network.cls.asnumpy(), before + 1.0, rtol=1e-6)
    assert ema.network.get_parameters().__next__().name == "ema.cls"


def test_every_average_moves_by_one_minus_decay_in_both_of_the_updates_forms():
    # in the CPU's forms, tensors of `large_from` elements or more are updated in place
    # (assign_add), smaller ones by lerp
    from network_expansion.cpu_forms import CPUForms

    model = VisionTransformer(tiny_config(depth=1, width=128, num_heads=2, mlp_width=256), seed=1)
    ema = EMA(model, decay=0.75, forms=CPUForms(large_from=128 * 256))
    sizes = [p.size for p in model.trainable_params()]
    assert max(sizes) >= 128 * 256 > min(sizes) and len(ema._step.large) and len(ema._step.small)
    before = [p.asnumpy().copy() for p in ema.network.get_parameters()]
    rng = np.random.default_rng(0)
    for parameter in model.trainable_params():
        parameter.set_data(ms.Tensor(rng.standard_normal(parameter.shape).astype(np.float32)))
    ema.update()
    for old, average, live in zip(before, ema.network.get_parameters(), model.get_parameters()):
        np.testing.assert_allclose(average.asnumpy(), old + 0.25 * (live.asnumpy() - old), rtol=1e-5, atol=1e-6,
                                   err_msg=average.name)


def test_grow_grows_model_and_ema_together_and_keeps_the_existing_parameters():
    import network_expansion as ne

    model = ne.VisionTransformer(tiny_config(depth=2))
    ema = ne.EMA(model, decay=0.9)
    existing = [id(p) for p in model.blocks[0].get_parameters()]
    growth = ne.grow(model, 4, ema=ema)
    assert growth.order == ["b0", "e0", "b1", "e1"] and model.depth == 4
    assert growth.ema.network.depth == 4 and growth.ema.decay == 0.9
    assert [id(p) for p in model.blocks[0].get_parameters()] == existing  # the same parameters, renamed in place
    for mine, average in zip(model.get_parameters(), growth.ema.network.get_parameters()):
        np.testing.assert_array_equal(mine.asnumpy(), average.asnumpy())  # the fresh EMA starts at the model
