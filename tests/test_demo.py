"""The demo: both runs, the table and the plot (on a tiny setting)."""

import json

import pytest

from network_expansion.cli import main


@pytest.mark.slow
def test_demo_trains_both_runs_and_writes_table_plot_and_summary(tmp_path, capsys, monkeypatch):
    import dataclasses

    from network_expansion import demo

    settings = demo.DemoSettings()
    tiny = dataclasses.replace(settings, batch_size=128,
                               recipe=dataclasses.replace(settings.recipe, epochs=2, schedule="1,2"),
                               model=dataclasses.replace(settings.model, depth=2, width=16, num_heads=2, mlp_width=32))
    monkeypatch.setattr(demo, "DemoSettings", lambda: tiny)
    assert main(["demo", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| full depth 2 |" in out and "| expansion 1,2 |" in out
    assert "speed-up" in out and "bound of the schedule 1.33x" in out
    assert "without graph compilation" in out and "of the bound" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["bound"] == 4 / 3 and len(summary["expansion"]["growth"]) == 1
    assert 0 < summary["expansion"]["compile_seconds"] < summary["expansion"]["wall_seconds"]
    assert (tmp_path / "accuracy_vs_time.png").stat().st_size > 10_000
    assert (tmp_path / "expansion" / "model.ckpt").is_file()


def test_the_steps_own_seconds_leave_out_each_stages_first_epoch():
    from network_expansion.demo import steps_seconds

    # stage 0: a first epoch that compiled (10 s), then 2 s epochs; stage 1: 12 s, then 4 s
    epochs = [{"stage": 0, "train_seconds": s} for s in (10.0, 2.0, 2.0)] + \
             [{"stage": 1, "train_seconds": s} for s in (12.0, 4.0, 4.0, 4.0)]
    assert steps_seconds(epochs) == 3 * 2.0 + 4 * 4.0
    assert steps_seconds([{"stage": 0, "train_seconds": 5.0}]) == 5.0  # one epoch: all there is


def test_compilation_seconds_count_what_was_compiled_ahead_each_stages_first_epoch_and_the_pauses():
    from network_expansion.demo import compile_seconds

    records = [{"event": "compile_ahead", "seconds": 7.5}]
    records += [{"event": "epoch", "stage": 0, "train_seconds": s} for s in (10.0, 2.0, 2.0)]
    records += [{"event": "grow", "pause_seconds": 0.5, "seconds": 3.0}]  # `seconds` holds its evaluation too
    records += [{"event": "epoch", "stage": 1, "train_seconds": s} for s in (5.0, 4.0, 4.0, 4.0)]
    assert compile_seconds(records) == 7.5 + (10.0 - 2.0) + (5.0 - 4.0) + 0.5
    # a stage of one epoch has nothing to compare with; a first epoch faster than the rest adds nothing
    assert compile_seconds([{"event": "epoch", "stage": 0, "train_seconds": s} for s in (5.0,)]) == 0.0
    assert compile_seconds([{"event": "epoch", "stage": 0, "train_seconds": s} for s in (1.0, 2.0)]) == 0.0
