"""`train --config run.yaml`: every flag a key, typed flags win, the resolved config saved."""

import json

import pytest
import yaml
from conftest import noise_folder, run_command

from network_expansion.cli import _parser, _with_config


def _args(argv):
    parser = _parser()
    return parser.parse_args(_with_config(parser, argv))


def test_a_config_file_gives_the_flags_and_a_typed_flag_wins(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: pics\nepochs: 30\nbatch_size: 64\nmlp-width: 128\nschedule: 2,4\ndistributed: false\n"
                      "stage-starts: 0,10\n")
    args = _args(["train", "--config", str(config), "--epochs", "3"])
    assert (args.data, args.epochs, args.batch_size, args.mlp_width, args.schedule) == ("pics", 3, 64, 128, "2,4")
    assert args.stage_starts == "0,10" and args.config == str(config) and args.distributed is False


@pytest.mark.parametrize("text,message", [
    ("epoch: 3\n", "unknown key 'epoch'; the keys are the flags: batch-size,"),
    ("- 1\n- 2\n", "expected a mapping of flags to values"),
    ("distributed: yes please\n", "distributed is true or false"),
    ("epochs: [1, 2]\n", "epochs takes one value"),
    ("epochs: -1\n", "argument --epochs"),
    ("data: [unclosed\n", "is not YAML"),
])
def test_a_mistake_in_a_config_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code, out, err = run_command(["train", "--data", str(tmp_path), "--config", str(config)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_config_is_one_line(tmp_path, capsys):
    code, _, err = run_command(["train", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "nope.yaml: No such file" in err


@pytest.mark.slow
def test_the_resolved_config_beside_the_checkpoints_trains_the_same_run_again(tmp_path, capsys):
    data = noise_folder(tmp_path / "data", classes=("ant", "bee", "cat"), per_class=8, size=16)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": str(data), "schedule": "1,2", "epochs": 2, "image-size": 16,
                                      "patch-size": 8, "width": 16, "num-heads": 2, "mlp-width": 32,
                                      "batch-size": 8, "output": str(tmp_path / "first")}))
    assert run_command(["train", "--config", str(config)], capsys)[0] == 0
    resolved = yaml.safe_load((tmp_path / "first" / "config.yaml").read_text())
    assert resolved["epochs"] == 2 and resolved["num-classes"] == 3 and resolved["lr"] == 5e-4  # a default, resolved
    assert "config" not in resolved and "growth-gate" not in resolved  # the gate is an exact growth's
    code, _, err = run_command(["train", "--config", str(tmp_path / "first" / "config.yaml"),
                                "--output", str(tmp_path / "again")], capsys)
    assert code == 0, err
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / run / "log.jsonl").read_text().splitlines())
               if r["event"] == "epoch"] for run in ("first", "again")]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    records = [json.loads(line) for line in (tmp_path / "first" / "log.jsonl").read_text().splitlines()]
    etas = [r["eta_seconds"] for r in records if r["event"] == "epoch"]
    assert etas[0] > 0 and etas[-1] == 0  # the time the run had left, after each epoch
    assert (tmp_path / "first" / "plot.png").is_file()  # the run's curves, drawn at its end
