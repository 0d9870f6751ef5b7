"""The front door (``import heritage as ht``), the estimator behind it, and a command line
whose help never loads the deep-learning stack."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

HEAVY = ("torch", "timm", "torchvision", "sklearn", "lightgbm", "pandas", "rdflib")


def _modules_after(code: str) -> set[str]:
    """Top-level modules loaded by ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.splitlines()[-1].split())


def test_import_heritage_loads_no_heavy_library() -> None:
    loaded = _modules_after("import heritage as ht\nassert ht.__version__")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["train"],
        ["evaluate"],
        ["metadata", "fit"],
        ["kg", "export"],
        ["similarity", "fit"],
        ["index", "build"],
        ["explore"],
        ["demo"],
    ],
)
def test_command_help_loads_no_heavy_library(argv: list[str]) -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['heritage', *{argv!r}, '--help']\n"
        "from heritage.cli import app\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
    )
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def _command_paths() -> list[list[str]]:
    from heritage.cli import app
    from heritage.cli.base import command_paths

    return command_paths(app)


def test_no_command_help_loads_a_heavy_library() -> None:
    """Every help in one interpreter: whatever one of them imports stays in sys.modules."""
    code = (
        "import contextlib, io\n"
        "from heritage.cli import app\n"
        f"for argv in {_command_paths()!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n            app([*argv, '--help'])\n"
        "        except SystemExit as exc:\n            assert exc.code in (0, None), argv\n"
    )
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "pydantic" not in loaded  # a tenth of a second; see heritage.cli.base.flag_defaults


def test_a_known_backbone_is_checked_without_torch() -> None:
    loaded = _modules_after(
        "from heritage.config import TrainConfig\n"
        "TrainConfig(backbone='efficientnet_lite1', device='auto')"
    )
    assert not {"torch", "timm"} & loaded, {"torch", "timm"} & loaded


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "{missing}", "--out", "{tmp}/run"],
        ["evaluate", "{missing}", "--data", "{tmp}"],
        ["evaluate", "{model}"],  # a model file without --data
        ["predict", "{missing}", "{tmp}"],
        ["soup", "{missing}"],
        ["similarity", "fit", "{missing}", "--items", "{missing}", "--out", "{tmp}/s"],
    ],
)
def test_a_bad_path_is_reported_before_the_deep_learning_stack_loads(
    tmp_path: Path, argv: list[str]
) -> None:
    """A newcomer's first mistake (a wrong path, a missing option) answers in a second, not
    ten: the command checks it before torch loads."""
    (tmp_path / "m.json").write_text("{}")
    (tmp_path / "m.safetensors").write_bytes(b"")
    paths = {
        "missing": str(tmp_path / "nowhere"),
        "tmp": str(tmp_path),
        "model": str(tmp_path / "m"),
    }
    args = [a.format(**paths) for a in argv]
    code = (
        "import sys\n"
        f"sys.argv = ['heritage', *{args!r}]\n"
        "from heritage.cli import app\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    assert exc.code == 2, exc.code\n"
        "else:\n    raise AssertionError('accepted')\n"
    )
    loaded = _modules_after(code)
    assert not {"torch", "timm", "torchvision"} & loaded


def test_unknown_backbone_and_device_names_are_still_refused() -> None:
    from heritage.config import TrainConfig

    with pytest.raises(ValueError, match="unknown backbone 'efficientnet_lite9'"):
        TrainConfig(backbone="efficientnet_lite9")
    with pytest.raises(ValueError, match="not a device name"):
        TrainConfig(device="gpu0")
    assert TrainConfig(backbone="resnet18").backbone == "resnet18"  # any timm name


def test_help_shows_docstrings_and_options_as_written() -> None:
    """Help is rendered as rich markup: brackets in a docstring are escaped (they would be read
    as styles and vanish), and an option's help holds none; paragraphs rewrap to the width."""
    import typer
    from rich.text import Text
    from typer.testing import CliRunner

    from heritage.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["metadata", "predict", "--help"], env={"COLUMNS": "80"}).output
    assert "(JSON [value, p] pairs)" in " ".join(out.split())
    out = runner.invoke(app, ["kg", "export", "--help"], env={"COLUMNS": "400"}).output
    assert "text_<lang> columns get the language" in " ".join(out.split())
    out = runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    refit = next(line for line in out.splitlines() if "│ refit " in line)
    assert "the epochs RUN's soup kept" in refit  # the docstring breaks the line after RUN's
    root = typer.main.get_command(app)
    for path in _command_paths():
        command = root
        for name in path:
            command = command.commands[name]
        for param in command.params:
            help = getattr(param, "help", None) or ""
            assert Text.from_markup(help).plain == help, (path, param.name)


def test_front_door_names_resolve_to_their_classes() -> None:
    import heritage as ht
    from heritage.config import TrainConfig
    from heritage.metadata import MetadataPredictor

    assert ht.TrainConfig is TrainConfig
    assert ht.MetadataPredictor is MetadataPredictor
    assert {"Collection", "SoupClassifier", "ModelSoup", "KnowledgeGraph"} <= set(dir(ht))
    assert not {"importlib", "os", "Any", "_EXPORTS"} & set(dir(ht))  # only the public names
    import os

    assert os.environ["OMP_WAIT_POLICY"]  # set (passive unless the user chose) before torch
    for name in ht.__all__:
        assert getattr(ht, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        ht.Nope  # noqa: B018


def test_allowed_values_come_from_the_literal() -> None:
    from heritage.config import SamplerName, TrainConfig, allowed

    assert allowed(SamplerName) == ("auto", "random", "class_pairs", "balanced")
    with pytest.raises(ValueError, match="sampler must be one of"):
        TrainConfig(sampler="often")  # type: ignore[arg-type]


def test_train_config_takes_the_shorthands_its_yaml_takes() -> None:
    from heritage.config import TrainConfig

    cfg = TrainConfig(mix="synermix", loss="focal", augment="glyphs", entropy=0.1)  # type: ignore[arg-type]
    assert (cfg.mix.method, cfg.loss.name, cfg.augment.hflip, cfg.entropy.weight) == (
        "synermix",
        "focal",
        0.0,
        0.1,
    )
    assert cfg == TrainConfig.from_dict(
        {"mix": "synermix", "loss": "focal", "augment": "glyphs", "entropy": 0.1}
    )
    for bad, match in [
        ({"mix": "mixupp"}, "mixupp"),
        ({"loss": "focall"}, "focall"),
        ({"augment": "photos"}, "photos"),
        ({"batch_size": "8"}, "batch_size must be a number"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_soup_classifier_fits_predicts_and_leaves_an_ordinary_run(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    import heritage as ht
    from heritage.run import Run

    with pytest.raises(RuntimeError, match="not fitted"):
        ht.SoupClassifier().predict(["x.png"])
    with pytest.raises(ValueError, match="recipe must be one of"):
        ht.SoupClassifier(recipe="best")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a TrainConfig"):
        ht.SoupClassifier({"epochs": 2})  # type: ignore[arg-type]

    clf = ht.SoupClassifier(tiny_config(), out=tmp_path / "run").fit(image_folder)
    assert clf.classes_ == ["amber", "blue", "green"]
    images = sorted(str(p) for p in image_folder.rglob("*.png"))[:5]
    proba = clf.predict_proba(images)
    assert proba.shape == (5, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert clf.predict(images) == [clf.classes_[i] for i in proba.argmax(axis=1)]
    assert (tmp_path / "run" / "soups" / "greedy_soup.safetensors").is_file()
    run = Run.open(clf.run_dir_)  # the folder is an ordinary run
    assert clf.score() == clf.score(run.collection, "test")  # the split fit made and saved
    assert 0.0 <= clf.score() <= 1.0
    assert clf.predict(images[0]) == clf.predict(images[:1])  # one path is a list of one
    with pytest.raises(ValueError, match="is a folder"):
        clf.predict(image_folder)
    with pytest.raises(FileNotFoundError, match="no image file"):
        clf.predict([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="no split column"):
        clf.score(image_folder)  # a folder has none: score() uses fit's

    # without a folder: a temporary run that lives with the estimator
    temp = ht.SoupClassifier(tiny_config(), recipe="best_checkpoint").fit(image_folder)
    assert temp.run_dir_.is_dir() and temp.predict(images[:2])


def test_train_help_states_the_config_defaults() -> None:
    from typer.testing import CliRunner

    from heritage.cli import app
    from heritage.config import MIX_METHODS, TrainConfig

    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    cfg = TrainConfig()
    for option, value in [("epochs", cfg.epochs), ("batch_size", cfg.batch_size)]:
        line = next(x for x in out.splitlines() if f"--{option.replace('_', '-')} " in x)
        assert f"(default: {value})" in line, line
    assert ", ".join(MIX_METHODS) in " ".join(out.split())
