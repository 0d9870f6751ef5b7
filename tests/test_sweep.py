"""Sweeps: a grid of runs from one shared start, run step by step (as a job array would) or
all at once, then cooked into soups across runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import TINY_OPTIONS

from heritage.group import read_group
from heritage.sweep import Sweep, SweepError
from heritage.training.initialisation import read_init


def _sweep_file(tmp_path: Path, image_folder: Path, grid: dict, **train) -> Path:
    path = tmp_path / "sweep.yaml"
    options = {**TINY_OPTIONS, "epochs": 1, **train}
    path.write_text(
        yaml.safe_dump(
            {"data": {"source": str(image_folder)}, "train": options, "grid": grid}, sort_keys=False
        )
    )
    return path


def test_steps_run_independently_and_share_one_start(image_folder: Path, tmp_path: Path) -> None:
    path = _sweep_file(tmp_path, image_folder, {"seed": [0, 1], "lr": [1e-4, 3e-4]})
    sweep = Sweep.from_yaml(path, tmp_path / "out")
    runs = sweep.runs()
    assert [r.name for r in runs] == [
        "00_seed0_lr0.0001",
        "01_seed0_lr0.0003",
        "02_seed1_lr0.0001",
        "03_seed1_lr0.0003",
    ]
    with pytest.raises(SweepError, match="--prepare"):
        sweep.train(0)
    start = sweep.prepare()
    assert read_init(start) is not None and not (start / "pool").exists()
    plan = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [p["index"] for p in plan] == [0, 1, 2, 3]
    for index in (0, 3):  # two jobs of the array, each its own call
        Sweep.from_yaml(path, tmp_path / "out").train(index)
    digests = {read_init(sweep.run_dir(runs[i]))["digest"] for i in (0, 3)}
    assert digests == {read_init(start)["digest"]}
    group = sweep.cook()
    assert len(group.pool.entries) == 2  # the two finished runs
    assert read_group(group.folder)["member"] == "best_checkpoint"
    assert (group.folder / "soups" / "greedy_soup.safetensors").is_file()
    with pytest.raises(SweepError, match="outside"):
        sweep.train(4)


def test_a_grid_over_the_starting_model_is_refused(image_folder: Path, tmp_path: Path) -> None:
    path = _sweep_file(tmp_path, image_folder, {"image_size": [32, 48]})
    with pytest.raises(SweepError, match="image_size cannot vary"):
        Sweep.from_yaml(path, tmp_path / "out")
    path = _sweep_file(tmp_path, image_folder, {"lr": [-1.0]})
    with pytest.raises(SweepError, match="lr must be positive"):
        Sweep.from_yaml(path, tmp_path / "out")
    path.write_text("grid: {seed: [0]}\nepochs: 3\n")
    with pytest.raises(SweepError, match="sections data:, train: and grid:"):
        Sweep.from_yaml(path, tmp_path / "out")
    path.write_text("grid: {seed: [0, 1}\n")
    with pytest.raises(SweepError, match=r"not valid YAML \(line 1"):
        Sweep.from_yaml(path, tmp_path / "out")
    path.write_text("train: {learning_rate: 0.1}\ngrid: {seed: [0]}\n")
    with pytest.raises(SweepError, match="train: unknown training options"):
        Sweep.from_yaml(path, tmp_path / "out")
    # data: PATH and a learning rate written 1e-4 (YAML reads it as a string) are understood
    path.write_text(f"data: {image_folder}\ntrain: {{lr: 1e-4}}\ngrid: {{seed: [0, 1]}}\n")
    sweep = Sweep.from_yaml(path, tmp_path / "out")
    assert sweep.data.source == str(image_folder) and sweep.runs()[1].config.lr == 1e-4


def test_cli_runs_every_step_of_a_sweep(image_folder: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from heritage.cli import app

    path = _sweep_file(tmp_path, image_folder, {"seed": [0, 1]})
    runner = CliRunner()
    result = runner.invoke(
        app, ["sweep", str(path), "--out", str(tmp_path / "s"), "--prepare", "--cook"]
    )
    assert result.exit_code == 2 and "give one of" in result.output
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "s"), "--index", "0"])
    assert result.exit_code == 2 and "--prepare" in result.output
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "soup" / "soups" / "uniform_soup.safetensors").is_file()
    assert len(list((tmp_path / "s" / "runs").iterdir())) == 2
