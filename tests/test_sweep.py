"""Sweeps: a grid of runs from one shared start, run step by step (as a job array would) or
all at once, then cooked into soups across runs."""

from __future__ import annotations

import json
import os
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


def test_steps_run_independently_and_share_one_start(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
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
    capsys.readouterr()
    group = sweep.cook()
    assert [e.name for e in group.pool.entries] == [runs[0].name, runs[3].name]  # one number
    unfinished = capsys.readouterr().err
    assert "2 of the sweep's 4 runs have not finished" in unfinished
    assert "01_seed0_lr0.0003 (--index 1), 02_seed1_lr0.0001 (--index 2)" in unfinished
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


def test_relative_paths_in_a_sweep_file_are_relative_to_its_folder(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "sweeps"
    folder.mkdir()
    path = folder / "sweep.yaml"
    relative = os.path.relpath(image_folder, folder)
    path.write_text(f"data: {{source: {relative}}}\ngrid: {{seed: [0, 1]}}\n")
    monkeypatch.chdir(tmp_path)  # not the file's folder
    sweep = Sweep.from_yaml(path, "out")
    assert sweep.data.source == str(folder / relative)
    assert sweep.collection().classes == ["amber", "blue", "green"]


def test_a_changed_sweep_file_is_followed_or_refused_naming_what_changed(
    image_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"

    def step(grid: dict, **train) -> Sweep:
        return Sweep.from_yaml(_sweep_file(tmp_path, image_folder, grid, **train), out)

    def planned() -> list[str]:
        return [p["name"] for p in json.loads((out / "sweep.json").read_text())]

    step({"seed": [0, 1]}).prepare()
    step({"seed": [0, 1]}).train(0)
    with pytest.raises(SweepError, match=r"1 of the sweep's 2 runs .* 01_seed1 \(--index 1\)"):
        step({"seed": [0, 1]}).cook()
    # a value added at the end: sweep.json follows the grid, at any step
    with pytest.raises(SweepError, match="1 of the sweep's 3 runs"):
        step({"seed": [0, 1, 2]}).cook()
    assert planned() == ["00_seed0", "01_seed1", "02_seed2"]
    # a grid that numbers the finished run otherwise is refused, sweep.json kept
    with pytest.raises(SweepError, match="00_seed0 would be 01_seed0"):
        step({"seed": [2, 0]}).train(1)
    assert planned() == ["00_seed0", "01_seed1", "02_seed2"]
    # a started run trained with other options: a remedy heritage sweep has
    with pytest.raises(SweepError, match="cannot resume") as refused:
        step({"seed": [0, 1, 2]}, lr=3e-4).train(0)
    assert "lr: 0.0001 → 0.0003" in str(refused.value)
    assert "--overwrite" not in str(refused.value) and "another --out" in str(refused.value)
    # a start made for another model
    with pytest.raises(SweepError, match="shared start") as refused:
        step({"seed": [0, 1, 2]}, image_size=48).prepare()
    assert "image_size: 32 there, 48 here" in str(refused.value)
