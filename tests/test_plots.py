"""`network-expansion plot`: runs' curves from their log.jsonl."""

import json

from conftest import run_command


def _run(folder, growth=True, val=True):
    folder.mkdir(parents=True)
    records = []
    for epoch in range(1, 5):
        record = {"event": "epoch", "epoch": epoch, "loss": 2.0 / epoch, "train_top1": 0.2 * epoch,
                  "wall_seconds": 3.0 * epoch}
        if val:
            record["val_top1"] = 0.18 * epoch
        records.append(record)
        if growth and epoch == 2:
            records.append({"event": "grow", "from": 2, "to": 4, "epoch": 3})
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_plot_draws_one_run_beside_its_log_and_several_runs_together(tmp_path, capsys, monkeypatch):
    grown = _run(tmp_path / "grown")
    flat = _run(tmp_path / "flat", growth=False, val=False)
    code, out, err = run_command(["plot", str(grown)], capsys)
    assert code == 0, err
    assert (grown / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "plot.png" in out
    monkeypatch.chdir(tmp_path)
    assert run_command(["plot", str(grown), str(flat)], capsys)[0] == 0
    assert (tmp_path / "runs-plot.png").stat().st_size > 10_000


def test_plot_of_a_folder_without_a_run_or_with_a_damaged_log_is_one_line(tmp_path, capsys):
    code, _, err = run_command(["plot", str(tmp_path)], capsys)
    assert code == 2 and "no log.jsonl" in err and len(err.splitlines()) == 1
    (tmp_path / "log.jsonl").write_text('{"event": "epoch"\n')
    code, _, err = run_command(["plot", str(tmp_path)], capsys)
    assert code == 2 and "line 1: not JSON" in err
    (tmp_path / "log.jsonl").write_text('{"event": "compile_ahead"}\n')
    code, _, err = run_command(["plot", str(tmp_path)], capsys)
    assert code == 2 and "no epoch finished yet" in err


def test_training_says_what_it_compiles_how_long_it_took_and_draws_a_validation_bar(caplog, capsys):
    """The story of a run a user sees: the compile line before and after the first step, a bar
    while validating, and each epoch's time left (`eta_seconds`, 0 after the last)."""
    import logging

    from conftest import small_trainer

    trainer = small_trainer(epochs=2, schedule=None)
    trainer.progress = True
    with caplog.at_level(logging.INFO, logger="network_expansion"):
        history = trainer.fit()
    said = caplog.text
    assert "compiling the training step" in said and "compiled the training step in" in said
    assert "validating the model" in capsys.readouterr().err
    etas = [r["eta_seconds"] for r in history.epochs]
    assert etas[0] > 0 and etas[-1] == 0
