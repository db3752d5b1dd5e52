"""The `network-expansion` command."""

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, noise_folder, run_command

from network_expansion.cli import main


def test_info_prints_the_card_the_architecture_and_the_parameter_count(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012" in out
    assert "81.5 top-1 (vit-base)" in out
    assert "depth             12" in out
    assert "parameters      86,568,425" in out


def test_info_json_is_machine_readable(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 86_568_425
    assert info["architecture"]["width"] == 768
    assert info["card"]["model_name"] == "NetworkExpansion"


def test_check_card_exits_1_and_lists_problems_of_the_published_card(capsys):
    assert main(["check-card", str(REPO / "assets/published/NetworkExpansion.md")]) == 1
    out = capsys.readouterr().out
    assert "7 problem(s)" in out and "missing required field 'repo-link'" in out


def test_the_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "network_expansion.cli", "check-card",
                          str(REPO / "assets/noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012.md")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "valid" in out.stdout


def test_version_and_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "network_expansion", "--version"], capture_output=True, text=True,
                         timeout=120)
    from network_expansion import __version__

    assert out.returncode == 0 and out.stdout.strip() == f"network-expansion {__version__}"


@pytest.mark.parametrize("command,defaults", [
    ("train", ["default 300", "default 6,12", "default 0.0005", "default 64", "default insert"]),
    ("finetune", ["default 10", "default 0.0001", "default: the released one"]),
    ("export", ["default 1", "default mindir"]),
    ("demo", ["about 3 minutes", "default 32", "default 6,12"]),
])
def test_help_shows_the_defaults(capsys, command, defaults):
    code, out, _ = run_command([command, "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and all(d in text for d in defaults), text


def test_every_exception_class_is_in_errors_and_exported():
    import inspect

    import network_expansion
    from network_expansion import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, errors.NetworkExpansionError)
        assert getattr(network_expansion, cls.__name__) is cls and cls.__name__ in network_expansion.__all__
    raised = set()
    for path in (REPO / "src" / "network_expansion").glob("*.py"):
        if path.name != "__init__.py":  # its module __getattr__ raises AttributeError, as the protocol asks
            raised |= set(re.findall(r"raise ([A-Z]\w*)\(", path.read_text()))
    assert raised <= {c.__name__ for c in classes}, raised - {c.__name__ for c in classes}


def test_a_small_training_folder_trains_with_a_smaller_batch_and_says_so(tmp_path, capsys):
    noise_folder(tmp_path / "data", per_class=3)
    code, out, err = run_command(["train", "--data", str(tmp_path / "data"), "--schedule", "none", "--depth", "1",
                           "--epochs", "1", "--image-size", "16", "--patch-size", "8", "--width", "16",
                           "--num-heads", "2", "--mlp-width", "32", "--output", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert "fewer than a batch of 64: training with batches of 6" in out
    assert "epoch 1/1  depth 1  loss " in out and "compiled again" not in err
    import network_expansion as ne

    assert ne.create_network("NetworkExpansion", pretrained=str(tmp_path / "run" / "model.ckpt"),
                             num_heads=2).class_names == ("ant", "bee")


@pytest.mark.slow
def test_mindspore_warnings_stay_out_of_a_training_run_unless_verbose(tmp_path):
    """A growth compiles the graphs again; MindSpore's own warnings (its C++ and Python logs
    read GLOG_v) are off for the command unless --verbose, and a level the user set is kept."""
    noise_folder(tmp_path / "data")
    command = [sys.executable, "-m", "network_expansion", "train", "--data", str(tmp_path / "data"),
               "--val", str(tmp_path / "data"), "--schedule", "1,2", "--epochs", "2", "--image-size", "16",
               "--patch-size", "8", "--width", "16", "--num-heads", "2", "--mlp-width", "32", "--batch-size", "4",
               "--output", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "grew 1 -> 2 blocks at epoch 2" in result.stdout
    assert "WARNING" not in result.stderr and "compiled again" not in result.stderr
    levels = {}
    for flags, preset in (([], None), (["--verbose"], None), ([], "1")):
        probe = ("import os, sys; from network_expansion.cli import main; main(sys.argv[1:]); "
                 "print(os.environ.get('GLOG_v'), 'mindspore' in sys.modules)")
        env = {k: v for k, v in __import__("os").environ.items() if k != "GLOG_v"}
        if preset:
            env["GLOG_v"] = preset
        out = subprocess.run([sys.executable, "-c", probe, *flags, "check-card", str(REPO / "assets/published/"
                                                                                   "NetworkExpansion.md")],
                             capture_output=True, text=True, timeout=120, env=env).stdout
        levels[(tuple(flags), preset)] = out.splitlines()[-1]
    assert levels == {((), None): "3 False", (("--verbose",), None): "None False", ((), "1"): "1 False"}


def test_the_growth_flags_reach_the_training_recipe():
    from network_expansion.cli import _parser, _train_config

    args = _parser().parse_args(["train", "--data", "d", "--growth", "exact", "--growth-gate", "learned",
                                 "--growth-ramp", "30"])
    config = _train_config(args)
    assert (config.growth, config.growth_gate, config.growth_ramp) == ("exact", "learned", 30)
    assert _train_config(_parser().parse_args(["train", "--data", "d"])).growth == "reference"


@pytest.mark.slow
def test_predict_json_prints_only_json_on_stdout(tmp_path):
    """Machine-readable output is clean: MindSpore's kernel compiler (AKG, which fuses this
    network's kernels: its tokens are ViT-B-sized) prints to file descriptor 1 from processes
    of its own, and the package's story goes to stderr under --json."""
    from PIL import Image
    from skimage import data

    import network_expansion as ne

    network = ne.create_network("NetworkExpansion", depth=1, width=384, num_heads=6, mlp_width=768, num_classes=3)
    from network_expansion.cpu_forms import fusion_pays

    assert fusion_pays(network.config)
    weights = ne.save_weights(network, tmp_path / "wide.ckpt")
    Image.fromarray(data.chelsea()).save(tmp_path / "cat.jpg")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    env = dict(__import__("os").environ, NETWORK_EXPANSION_CACHE=str(tmp_path / "cache"))  # AKG compiles afresh
    result = subprocess.run([sys.executable, "-m", "network_expansion", "predict", "cat.jpg", "coffee.png", "--json",
                             "--weights", str(weights), "--topk", "2"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert [json.loads(line)["source"] for line in lines] == ["cat.jpg", "coffee.png"], result.stdout[-2000:]
    assert list((tmp_path / "cache").rglob("Fused_*.so")), "nothing was fused: the test would prove nothing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cat.jpg", "coffee.png", "wide.ckpt"]  # no AKG log


# -- what a new user hit: small wrong results (issue 34) -------------------------------------

SMALL_TRAIN = ["--image-size", "16", "--patch-size", "8", "--width", "16", "--num-heads", "2", "--mlp-width", "32",
               "--batch-size", "4"]


def _one_line(code, err, *needles):
    assert code == 2, err
    assert len([line for line in err.splitlines() if line.startswith("network-expansion: error: ")]) == 1, err
    assert "Traceback" not in err and all(needle in err for needle in needles), err


def test_a_one_class_tree_is_refused_before_training(tmp_path, capsys):
    noise_folder(tmp_path / "data", classes=("ant",))
    code, _, err = run_command(["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run"),
                                *SMALL_TRAIN], capsys)
    _one_line(code, err, "has one class folder ('ant')", "needs two or more")
    assert not (tmp_path / "run" / "checkpoint.ckpt").exists()


def test_predict_refuses_an_empty_folder_and_a_missing_image_before_reading_weights(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    missing_weights = str(tmp_path / "no-such-weights.ckpt")  # never read: the inputs are checked first
    code, _, err = run_command(["predict", str(tmp_path / "empty"), "--weights", missing_weights], capsys)
    _one_line(code, err, "no image files in this folder")
    code, _, err = run_command(["predict", str(tmp_path / "missing.jpg"), "--weights", missing_weights], capsys)
    _one_line(code, err, "missing.jpg: no such file or folder")


def test_evaluate_leaves_out_top_5_for_a_network_of_five_classes_or_fewer(tmp_path, capsys):
    from PIL import Image

    from conftest import color_image, color_rigged_network
    import network_expansion as ne

    for c, name in enumerate(("0-red", "1-green", "2-blue")):  # sorted as the rig's outputs
        (tmp_path / "tree" / name).mkdir(parents=True)
        Image.fromarray(color_image(c)).save(tmp_path / "tree" / name / "0.png")
    weights = ne.save_weights(color_rigged_network(), tmp_path / "rig.ckpt")
    code, out, err = run_command(["evaluate", str(tmp_path / "tree"), "--weights", str(weights)], capsys)
    assert code == 0, err
    assert "top-1 100.00%  on 3 images, 3 classes" in out and "top-5" not in out


def test_convert_counts_the_tensors_it_wrote(tmp_path, capsys):
    from conftest import tiny_config
    import network_expansion as ne

    source = ne.save_weights(ne.VisionTransformer(tiny_config(depth=2)), tmp_path / "tiny.ckpt")  # 40 tensors
    code, out, err = run_command(["convert", str(source), str(tmp_path / "tiny.safetensors")], capsys)
    assert code == 0, err
    assert "32 tensors with timm names, from 40 tensors with mindspore names" in out  # q, k, v fused: 8 fewer


def test_a_resumed_run_names_the_flags_it_refuses(tmp_path, capsys):
    noise_folder(tmp_path / "data")
    common = ["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "run"), *SMALL_TRAIN]
    assert run_command([*common, "--schedule", "1,2", "--epochs", "2"], capsys)[0] == 0
    checkpoint = str(tmp_path / "run" / "checkpoint.ckpt")
    code, _, err = run_command(["train", "--data", str(tmp_path / "data"), "--resume", checkpoint, "--lr", "0.1",
                                "--schedule", "2,4", "--epochs", "3"], capsys)
    _one_line(code, err, "--lr 0.1 (saved 0.0005)", "--schedule 2,4 (saved 1,2)",
              "Only --epochs, --log-every and --output can change")
    assert "compile_ahead" not in err


def test_a_done_line_says_a_loss_of_zero_as_zero():
    from network_expansion.history import describe_record

    record = {"event": "epoch", "epoch": 1, "depth": 2, "loss": 0.0, "images_per_s": 10.0, "lr": 1e-3}
    assert "loss 0.0000" in describe_record(record, 1)


def test_weights_without_their_head_count_say_how_to_give_it(tmp_path):
    """A checkpoint written by MindSpore's own save_checkpoint (or ModelCheckpoint) holds no
    head count; where the released model's 12 cannot divide the width, the error says what
    to pass."""
    from conftest import random_state, tiny_shapes, write_ckpt
    import network_expansion as ne
    from network_expansion.errors import ConfigError

    path = write_ckpt(tmp_path / "plain.ckpt", random_state(tiny_shapes()))  # width 32: 12 heads cannot divide it
    with pytest.raises(ConfigError, match=r"do not record their number of attention heads.*num_heads=2.*--num-heads"):
        ne.create_network("NetworkExpansion", pretrained=str(path))
    assert ne.create_network("NetworkExpansion", pretrained=str(path), num_heads=4).config.num_heads == 4
