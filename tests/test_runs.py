"""Runs that survive their users: a run folder belongs to one run, outputs are checked before
the work, no classifier of random weights, no empty paths, SIGHUP saves as SIGTERM does."""

import signal

import numpy as np
import pytest
from PIL import Image
from conftest import SMALL, color_image, learnable_data, small_trainer

from network_expansion import (ArrayData, Classifier, ConfigError, OutputError, Trainer, TrainConfig,
                               VisionTransformer, ViTConfig, predict)
from network_expansion.cli import main
from network_expansion.stopping import StopOnSignal
from network_expansion.training_checkpoint import RunFolder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A short run's folder (one epoch, no growth)."""
    out = tmp_path_factory.mktemp("run")
    small_trainer(out, epochs=1, schedule=None).fit()
    return out


def test_a_new_run_into_another_runs_folder_is_refused_and_nothing_changes(finished_run):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()}
    with pytest.raises(OutputError, match=r"holds another run \(checkpoint.ckpt, log.jsonl, model.ckpt, "
                                          r"model_ema.ckpt\): continue it with --resume"):
        small_trainer(finished_run, epochs=1, schedule=None)
    assert {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()} == before


def test_overwrite_replaces_the_run_and_its_log_starts_afresh(finished_run, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(finished_run, out)
    images, labels = learnable_data()
    trainer = Trainer(VisionTransformer(ViTConfig(**SMALL, depth=2)), ArrayData(images, labels, 16),
                      config=TrainConfig(epochs=1, warmup_epochs=0), output_dir=out, progress=False,
                      overwrite=True)
    assert not (out / "model.ckpt").exists() and not (out / "log.jsonl").exists()  # removed: asked for
    trainer.fit()
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # this run's epoch only, no mix of two runs


def test_a_folder_held_by_a_running_trainer_is_refused(tmp_path):
    holder = RunFolder(tmp_path / "busy")
    (tmp_path / "busy").mkdir()
    holder.lock()
    try:
        with pytest.raises(OutputError, match=r"busy is in use by a training run \(pid \d+\)"):
            small_trainer(tmp_path / "busy", epochs=1, schedule=None)
    finally:
        holder.release()
    small_trainer(tmp_path / "busy", epochs=1, schedule=None)  # free again


def test_the_command_line_refuses_a_second_run_and_resumes_the_first(finished_run, tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nothing"), "--output", str(finished_run)])
    assert code == 2  # the missing tree or the occupied folder: one line either way
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("weights", [None, False, "", "  "])
def test_a_classifier_of_random_weights_is_refused(weights):
    with pytest.raises(ConfigError, match="would classify with random weights"):
        Classifier(weights=weights)
    with pytest.raises(ConfigError, match="would classify with random weights"):
        predict(color_image(0), weights=weights)


@pytest.mark.parametrize("argv,flag", [
    (["predict", "x.jpg", "--weights", ""], "--weights"),
    (["predict", ""], "IMG"),
    (["evaluate", ""], "DIR"),
    (["train", "--data", ""], "--data"),
    (["train", "--data", "d", "--output", ""], "--output"),
    (["convert", "", "out.ckpt"], "SRC"),
])
def test_an_empty_path_is_one_line_and_exit_2(argv, flag, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and f"argument {flag}: an empty path" in err and "Traceback" not in err


def test_evaluate_checks_its_csv_before_the_work(tmp_path, capsys):
    tree = tmp_path / "tree"
    for name in ("a", "b"):
        (tree / name).mkdir(parents=True)
        Image.fromarray(color_image(0)).save(tree / name / "x.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("a 0\nb 1\n")
    before = labels.read_bytes()
    assert main(["evaluate", str(tree), "--label-map", str(labels), "--csv", str(labels)]) == 2
    assert "is an input of this command" in capsys.readouterr().err and labels.read_bytes() == before
    assert main(["evaluate", str(tree), "--csv", str(tree / "a" / "report.csv")]) == 2
    assert "lies inside the tree being evaluated" in capsys.readouterr().err
    assert sorted(p.name for p in (tree / "a").iterdir()) == ["x.png"]


def test_sighup_stops_a_run_as_sigterm_does():
    if not hasattr(signal, "SIGHUP"):
        pytest.skip("no SIGHUP here")
    assert StopOnSignal.NAMES[signal.SIGHUP] == "hung up" and StopOnSignal.EXIT_CODES["hung up"] == 129
    trainer = small_trainer(epochs=2, schedule=None)
    original = trainer.train_data.batches

    def hang_up_in_epoch_two(epoch, seed, start=0, mix=None):
        for index, batch in enumerate(original(epoch, seed, start, mix=mix), start):
            if (epoch, index) == (1, 1):
                signal.raise_signal(signal.SIGHUP)
            yield batch

    trainer.train_data.batches = hang_up_in_epoch_two
    history = trainer.fit()
    assert history.interrupted and history.stopped_by == "hung up"
    assert (trainer.epoch, trainer.batch_in_epoch) == (1, 2) and np.isfinite(history.epochs[-1]["loss"])


def test_ne_predict_and_evaluate_stay_functions_once_their_modules_are_imported():
    """Python sets a package's attribute to every submodule imported: `ne.predict(...)` once
    called the module `predict.py` after anything had imported it."""
    import network_expansion as ne
    from network_expansion.evaluate import Evaluation  # noqa: F401  (imports the module)
    from network_expansion.predict import Classifier as _  # noqa: F401

    assert callable(ne.predict) and ne.predict.__name__ == "predict"
    assert callable(ne.evaluate) and ne.evaluate.__name__ == "evaluate"


# -- labels that do not match the model ----------------------------------------------------

def test_labels_that_do_not_fit_the_head_are_refused_before_training():
    from network_expansion import DataError

    images, labels = learnable_data()
    model = VisionTransformer(ViTConfig(**SMALL, depth=1))  # 4 outputs
    with pytest.raises(DataError, match="labels run from -1 to 3: a network of 4 outputs takes labels 0 to 3"):
        Trainer(model, ArrayData(images, np.where(labels == 0, -1, labels), 16), progress=False)
    with pytest.raises(DataError, match="labels run from 1 to 4"):
        Trainer(model, ArrayData(images, labels + 1, 16), progress=False)
    with pytest.raises(DataError, match="labels of float64 with fractions"):
        ArrayData(images, labels + 0.5, 16)
    assert ArrayData(images, labels.astype(float), 16).labels.dtype == np.int32  # whole floats are fine
    named = ArrayData(images, labels, 16, class_names="abcde")
    with pytest.raises(DataError, match="5 classes, the network 4 outputs"):
        Trainer(model, named, progress=False)
    train = ArrayData(images, labels, 16, class_names="abcd")
    with pytest.raises(DataError, match=r"the validation classes \(a, b, c, x\) are not the training classes"):
        Trainer(model, train, ArrayData(images, labels, 16, class_names="abcx"), progress=False)


def test_a_run_resumes_only_on_its_own_classes(tmp_path):
    from network_expansion import DataError

    images, labels = learnable_data()
    trainer = Trainer(VisionTransformer(ViTConfig(**SMALL, depth=1)), ArrayData(images, labels, 16, class_names="abcd"),
                      config=TrainConfig(epochs=2, warmup_epochs=0), output_dir=tmp_path, progress=False)
    trainer.fit(until=1)
    with pytest.raises(DataError, match="trained on the classes"):
        Trainer.resume(tmp_path / "checkpoint.ckpt", ArrayData(images, labels, 16, class_names="wxyz"), progress=False)
    resumed = Trainer.resume(tmp_path / "checkpoint.ckpt", ArrayData(images, labels, 16, class_names="abcd"),
                             progress=False)
    assert resumed.epoch == 1


def test_weights_naming_a_class_twice_are_refused(tmp_path):
    from network_expansion import CheckpointError, create_network, save_weights

    network = VisionTransformer(ViTConfig(**SMALL, depth=1), seed=0)
    network.class_names = ("cat", "dog", "cat", "owl")
    save_weights(network, tmp_path / "w.ckpt")
    with pytest.raises(CheckpointError, match="its metadata names a class twice: 'cat'"):
        create_network(pretrained=str(tmp_path / "w.ckpt"))


# -- values that make nonsense ---------------------------------------------------------------

def test_config_values_are_checked_and_mindspores_spellings_accepted():
    assert ViTConfig(**SMALL, gelu_approximate="none").gelu_approximate is False  # MindSpore's exact GELU
    assert ViTConfig(**SMALL, gelu_approximate="tanh").gelu_approximate is True
    for value in (-1e-6, float("nan"), "1e-6", 0.0):
        with pytest.raises(ConfigError, match="layer_norm_eps must be a number > 0 and <= 1"):
            ViTConfig(**SMALL, layer_norm_eps=value)
    with pytest.raises(ConfigError, match="gelu_approximate must be True"):
        ViTConfig(**SMALL, gelu_approximate="maybe")


def test_weights_with_nonsense_metadata_or_values_beyond_float32_are_refused(tmp_path):
    import json

    from network_expansion import CheckpointError, create_network
    from network_expansion.formats import METADATA_KEY, write_safetensors
    from network_expansion.weights import network_state

    network = VisionTransformer(ViTConfig(**SMALL, depth=1), seed=0)
    state = network_state(network)
    metadata = {"names": "mindspore", "architecture": {"layer_norm_eps": -1.0, "gelu_approximate": True}}
    write_safetensors(state, tmp_path / "eps.safetensors", {METADATA_KEY: json.dumps(metadata)})
    with pytest.raises(CheckpointError, match="layer_norm_eps must be a number > 0"):
        create_network(pretrained=str(tmp_path / "eps.safetensors"))
    huge = {name: value.astype(np.float64) for name, value in state.items()}
    huge["cls"] = huge["cls"] * 1e300
    np.savez(tmp_path / "huge.npz", **huge)
    with pytest.raises(CheckpointError, match="out of float32's range: cls"):
        create_network(pretrained=str(tmp_path / "huge.npz"), **SMALL, depth=1)


@pytest.mark.parametrize("argv,message", [
    (["--depth", "4", "--schedule", "3,6"], "--depth 4 and --schedule 3,6 end at different depths"),
    (["--depth", "4", "--stage-starts", "0,1"], "--stage-starts without stages"),
    (["--schedule", "1,2", "--stage-starts", "0,5", "--epochs", "4"], "a stage starts after the last of --epochs 4"),
    (["--growth-ramp", "5"], "--growth-ramp shapes an exact growth's gates"),
    (["--growth-gate", "learned"], "--growth-gate shapes an exact growth's gates"),
])
def test_flags_the_run_would_ignore_are_refused(argv, message, tmp_path, capsys):
    tree = tmp_path / "tree"
    for name in ("a", "b"):
        (tree / name).mkdir(parents=True)
        Image.fromarray(color_image(0)).save(tree / name / "x.png")
    assert main(["train", "--data", str(tree), "--output", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_export_refuses_an_input_size_without_preprocessing(tmp_path, capsys):
    assert main(["export", str(tmp_path / "m.mindir"), "--input-size", "300", "300"]) == 2
    assert "--input-size is the size of the pictures the exported preprocessing takes" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# -- faults during a run ---------------------------------------------------------------------

def test_a_growth_that_fails_leaves_the_network_and_its_ema_as_they_were(monkeypatch):
    from network_expansion import EMA, expansion, grow

    network = VisionTransformer(ViTConfig(**SMALL, depth=2), seed=0)
    ema = EMA(network, 0.9)
    before = {p.name: p.asnumpy().copy() for p in network.get_parameters()}
    ema_before = {p.name: p.asnumpy().copy() for p in ema.network.get_parameters()}

    def fails(*args, **kwargs):
        raise MemoryError("out of memory while the blocks were copied")

    monkeypatch.setattr(expansion, "expand", fails)  # after the width grew: the growth is half done
    with pytest.raises(MemoryError):
        grow(network, 4, width=32, ema=ema)
    assert network.config == ViTConfig(**SMALL, depth=2) and ema.network.config == network.config
    assert {p.name: p.asnumpy() for p in network.get_parameters()}.keys() == before.keys()
    assert all(np.array_equal(p.asnumpy(), before[p.name]) for p in network.get_parameters())
    assert all(np.array_equal(p.asnumpy(), ema_before[p.name]) for p in ema.network.get_parameters())


def test_a_log_that_cannot_be_written_is_one_clean_error_and_the_checkpoint_stays(tmp_path):
    trainer = small_trainer(tmp_path, epochs=2, schedule=None)
    trainer.fit(until=1)
    kept = (tmp_path / "checkpoint.ckpt").read_bytes()
    (tmp_path / "log.jsonl").unlink()
    (tmp_path / "log.jsonl").mkdir()  # as a full disk would, writing fails
    with pytest.raises(OutputError, match="cannot write .*log.jsonl .*the last checkpoint, .*checkpoint.ckpt, is "
                                          "intact"):
        trainer.fit()
    assert (tmp_path / "checkpoint.ckpt").read_bytes() == kept


@pytest.mark.parametrize("damage,problem", [
    (lambda state: state.pop("epoch"), "epoch is missing"),
    (lambda state: state.update(position=-3), "position is -3"),
    (lambda state: state.update(model_config={**state["model_config"], "width": "wide"}), "model_config: "),
    (lambda state: state.update(train_config={**state["train_config"], "nonsense": 1}), "train_config: "),
    (lambda state: state.update(class_names=[1, 2]), "class_names is [1, 2]"),
])
def test_a_damaged_trainer_state_is_one_checkpoint_error(tmp_path, damage, problem):
    import json

    from network_expansion import CheckpointError
    from network_expansion.formats import read_ckpt
    from network_expansion.training_checkpoint import STATE_KEY, read_training_checkpoint

    trainer = small_trainer(tmp_path / "run", epochs=2, schedule=None)
    trainer.fit(until=1)
    arrays, texts = read_ckpt(tmp_path / "run" / "checkpoint.ckpt")
    state = json.loads(texts[STATE_KEY])
    damage(state)
    import mindspore as ms
    ms.save_checkpoint([{"name": name, "data": ms.Tensor(value)} for name, value in arrays.items()],
                       str(tmp_path / "damaged.ckpt"), append_dict={STATE_KEY: json.dumps(state)})
    with pytest.raises(CheckpointError, match="its trainer state: " + problem.replace("[", r"\[").replace("]", r"\]")):
        read_training_checkpoint(tmp_path / "damaged.ckpt")


# -- bad pictures in a training tree ---------------------------------------------------------

def _tree_with_bad_files(root, good: int, bad: int):
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(good):
            Image.fromarray(color_image(c, seed=i)).save(root / f"c{c}" / f"{i}.png")
    for i in range(bad):
        (root / "c0" / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut short")
    return root


def test_a_few_bad_pictures_are_skipped_and_counted_each_epoch(tmp_path, caplog):
    from network_expansion import folder_trainer

    tree = _tree_with_bad_files(tmp_path / "tree", good=20, bad=1)  # 1 of 41
    model = VisionTransformer(ViTConfig(**{**SMALL, "image_size": 16, "num_classes": 2}, depth=1))
    trainer = folder_trainer(model, tree, config=TrainConfig(epochs=2, warmup_epochs=0), batch_size=8,
                             output_dir=tmp_path / "out", progress=False)
    with caplog.at_level("INFO", logger="network_expansion"):
        history = trainer.fit()
    assert [r["bad_images"] for r in history.epochs] == [1, 1]
    assert "(1 unreadable image(s) skipped so far)" in caplog.text
    assert caplog.text.count("bad0.png") == 1  # named once


def test_a_tree_of_too_many_bad_pictures_is_refused_after_its_first_epoch(tmp_path):
    from network_expansion import DataError, folder_trainer

    tree = _tree_with_bad_files(tmp_path / "tree", good=8, bad=3)  # 3 of 19: 16%
    model = VisionTransformer(ViTConfig(**{**SMALL, "image_size": 16, "num_classes": 2}, depth=1))
    trainer = folder_trainer(model, tree, config=TrainConfig(epochs=2, warmup_epochs=0), batch_size=8,
                             output_dir=tmp_path / "out", progress=False)
    with pytest.raises(DataError, match=r"3 of the 19 images of .* cannot be read \(16%, more than the 5%"):
        trainer.fit()


# -- what fits ----------------------------------------------------------------------------------

def test_what_cannot_fit_is_refused_before_anything_is_allocated(monkeypatch):
    from network_expansion import memory
    from network_expansion.memory import inference_bytes, training_bytes

    base = ViTConfig(image_size=224, num_classes=1000)
    assert 3.0e9 < training_bytes(base, 8) < 4.5e9  # ViT-B's step: a 3.3 GB peak measured
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 << 30)  # a machine of 2 GiB available
    images, labels = learnable_data()
    huge = VisionTransformer(ViTConfig(**{**SMALL, "image_size": 16}, depth=1))
    with pytest.raises(ConfigError, match=r"needs about .* GiB at batches of 16; this machine has 2.0 GiB available "
                                          r"\(batches of \d+ would fit\)"):
        Trainer(huge, ArrayData(images, labels, 16), config=TrainConfig(schedule="1@16,2@192", epochs=2),
                progress=False)
    with pytest.raises(ConfigError, match=r"a forward pass of a ViT of depth 12, .*\(not even one picture"):
        Classifier(VisionTransformer(ViTConfig(image_size=2048, num_classes=10), initialize=False), batch_size=4)
    assert inference_bytes(base, 1) < training_bytes(base, 1)


def test_a_seed_beyond_32_bits_is_a_config_error():
    with pytest.raises(ConfigError, match="seed must be a whole number from 0 to 4294967295"):
        TrainConfig(seed=2 ** 40)
