"""Runs that share a starting point (--init-from) and soups across them (heritage.group)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from heritage.collection import Collection
from heritage.group import GroupError, gather_runs, read_group
from heritage.run import Run, RunError
from heritage.training.initialisation import InitError, read_init
from heritage.training.trainer import Trainer


@pytest.fixture(scope="module")
def runs(
    image_folder: Path, tiny_config: Callable, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A probe-headed run, one started from it with another seed and learning rate, and one
    with a random head of its own."""
    root = tmp_path_factory.mktemp("group")
    collection = Collection.from_folder(image_folder)
    Trainer(tiny_config()).fit(collection, root / "a")
    Trainer(tiny_config(seed=1, lr=3e-4, init_from=str(root / "a"))).fit(collection, root / "b")
    Trainer(tiny_config(seed=2, head_init="random")).fit(collection, root / "c")
    return {name: root / name for name in "abc"}


def _two_classes(image_folder: Path, tmp_path: Path) -> Collection:
    """The tiny collection without its amber images."""
    copy = shutil.copytree(
        image_folder, tmp_path / "two-classes", ignore=shutil.ignore_patterns("amber")
    )
    return Collection.from_folder(copy)


def test_a_run_started_from_another_shares_its_split_and_start(runs: dict[str, Path]) -> None:
    a, b = runs["a"], runs["b"]
    assert (a / "split.csv").read_bytes() == (b / "split.csv").read_bytes()
    assert read_init(a)["digest"] == read_init(b)["digest"]
    assert read_init(b)["source"] == str(a)
    assert read_init(a)["source"] == "probe"
    assert read_init(runs["c"])["digest"] != read_init(a)["digest"]
    history = json.loads((b / "history.json").read_text())
    assert history[0]["epoch"] == 0 and "val_macro_f1" in history[0]


def test_runs_from_one_start_make_a_group_that_works_like_a_run(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    group = gather_runs([runs["a"], runs["b"]], tmp_path / "group")
    assert [e.name for e in group.pool.entries] == ["a", "b"]  # named after the runs' folders
    assert read_group(group.folder)["member"] == "best_checkpoint"
    soups = group.cook_soups()
    assert set(soups["uniform"].ingredients_) == {"a", "b"}
    assert soups["greedy"].ingredients_[0] in {"a", "b"}
    results = group.evaluate("test")
    assert set(results) == {"best_checkpoint", "uniform_soup", "greedy_soup", "soft_voting"}
    rows = json.loads((group.folder / "eval" / "test" / "comparison.json").read_text())
    models = {r["method"]: r["models"] for r in rows}
    assert models["soft_voting"] == 2 and models["greedy_soup"] == 1
    # gathering again (another member choice) replaces the group's pool and soups
    with pytest.raises(GroupError, match="has no uniform_soup"):
        gather_runs([runs["a"], runs["b"]], tmp_path / "group", member="uniform_soup")
    for name in "ab":
        Run.open(runs[name]).cook_soups(recipes=("uniform",))
    again = gather_runs([runs["a"], runs["b"]], tmp_path / "group", member="uniform_soup")
    assert read_group(again.folder)["member"] == "uniform_soup"
    assert not (again.folder / "soups" / "greedy_soup.safetensors").exists()


def test_runs_with_other_starts_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(GroupError, match="started from another head"):
        gather_runs([runs["a"], runs["c"]], tmp_path / "g")
    with pytest.raises(GroupError, match="at least two"):
        gather_runs([runs["a"]], tmp_path / "g")
    with pytest.raises(GroupError, match="twice"):
        gather_runs([runs["a"], runs["a"]], tmp_path / "g")
    assert not (tmp_path / "g" / "pool").exists()


def test_init_from_refuses_another_model_or_collection(
    runs: dict[str, Path], image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    collection = Collection.from_folder(image_folder)
    with pytest.raises(InitError, match="image_size"):
        Trainer(tiny_config(image_size=48, init_from=str(runs["a"]))).fit(
            collection, tmp_path / "x"
        )
    with pytest.raises(InitError, match="recorded its start"):
        Trainer(tiny_config(init_from=str(tmp_path))).fit(collection, tmp_path / "y")
    fewer = _two_classes(image_folder, tmp_path)
    with pytest.raises(InitError, match="collection differs"):
        Trainer(tiny_config(init_from=str(runs["a"]))).fit(fewer, tmp_path / "z")
    assert not (tmp_path / "x" / "split.csv").exists()


def test_a_group_of_other_classes_is_refused(
    runs: dict[str, Path], image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    Trainer(tiny_config()).fit(_two_classes(image_folder, tmp_path), tmp_path / "two")
    with pytest.raises(GroupError, match="other classes"):
        gather_runs([runs["a"], tmp_path / "two"], tmp_path / "g")
    assert isinstance(Run.open(runs["a"]), Run)


def test_cli_cooks_soups_across_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from heritage.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["soup", str(runs["a"]), str(runs["b"])])
    assert result.exit_code == 2 and "give --out" in result.output
    result = runner.invoke(
        app, ["soup", str(runs["a"]), str(runs["c"]), "--out", str(tmp_path / "g")]
    )
    assert result.exit_code == 2 and "started from another head" in result.output
    result = runner.invoke(
        app, ["soup", str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "g"), "--member", "x"]
    )
    assert result.exit_code == 2 and "--member must be one of" in result.output
    result = runner.invoke(app, ["soup", str(runs["a"]), str(runs["b"]), "-o", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g" / "soups" / "greedy_soup.safetensors").is_file()
    result = runner.invoke(app, ["evaluate", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output


def test_members_are_numbered_only_when_their_folder_names_clash(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    copies = [Path(shutil.copytree(runs[n], tmp_path / where / "run")) for n, where in ("ax", "by")]
    group = gather_runs(copies, tmp_path / "group")
    assert [e.name for e in group.pool.entries] == ["01_run", "02_run"]


def test_a_group_given_where_a_run_is_expected_names_its_runs(
    runs: dict[str, Path], image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    group = gather_runs([runs["a"], runs["b"]], tmp_path / "g").folder
    with pytest.raises(GroupError, match="a group of runs") as refused:
        gather_runs([group, runs["c"]], tmp_path / "g2")
    suggested = f"heritage soup {runs['a']} {runs['b']} {runs['c']} --out"
    assert suggested in str(refused.value) and "starting point" not in str(refused.value)
    collection = Collection.from_folder(image_folder)
    with pytest.raises(InitError, match="a group of runs") as refused:
        Trainer(tiny_config(init_from=str(group))).fit(collection, tmp_path / "x")
    assert f"--init-from {runs['a']}" in str(refused.value)
    assert "recorded its start" not in str(refused.value)
    with pytest.raises(RunError, match=f"a group of runs .*heritage refit {runs['a']}"):
        Run.open(group).refit(tmp_path / "refit")


def test_analysing_a_group_explains_why_it_has_no_curves(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    from heritage.analysis.report import analyse

    group = gather_runs([runs["a"], runs["b"]], tmp_path / "g")
    result = analyse(group.folder, "test")
    curves = next(s for s in result.skipped if s.what == "training curves")
    assert "group of 2 runs" in curves.reason and "heritage train" not in (curves.command or "")
    assert curves.command == f"heritage analyse {runs['a']}; heritage analyse {runs['b']}"
