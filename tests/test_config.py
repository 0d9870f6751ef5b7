"""The configuration's helpers for flat option lists (the command line's)."""

from __future__ import annotations

import pytest

from heritage.config import TrainConfig, field_overrides, load_config, split_fractions


def test_field_overrides_nest_section_fields_and_leave_out_what_was_not_given() -> None:
    flat = {"epochs": 3, "mix.method": "synermix", "mix.alpha": 0.2, "loss.name": None, "lr": None}
    assert field_overrides(flat) == {"epochs": 3, "mix": {"method": "synermix", "alpha": 0.2}}
    assert field_overrides({"augment.preset": "glyphs"}) == {"augment": {"preset": "glyphs"}}
    with pytest.raises(ValueError, match="unknown training option 'epoch'"):
        field_overrides({"epoch": 3})


def test_field_overrides_win_over_the_yaml_file_section_by_field(tmp_path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("mix: {method: mixup, alpha: 0.4}\naugment: glyphs\nepochs: 5\n")
    overrides = field_overrides({"mix.alpha": 0.2, "augment.preset": None, "epochs": 7})
    cfg = load_config(config, overrides)
    assert (cfg.mix.method, cfg.mix.alpha, cfg.epochs) == ("mixup", 0.2, 7)
    assert cfg.augment.hflip == 0.0  # the file's glyphs preset stays


def test_split_fractions_are_those_the_trainer_draws() -> None:
    assert split_fractions(TrainConfig(val_fraction=0.1, test_fraction=0.3)) == pytest.approx(
        (0.6, 0.1, 0.3)
    )


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heritage.config import read_config_file

    folder = tmp_path / "configs"
    folder.mkdir()
    config = folder / "c.yaml"
    config.write_text(
        "data: {source: ../images}\ntrain: {init_from: runs/a, weights: /abs/w.pth, epochs: 2}\n"
    )
    monkeypatch.chdir(tmp_path)  # elsewhere than the file: the file's folder decides
    read = read_config_file(config)
    assert read["data"]["source"] == str(folder / "../images")
    assert read["train"]["init_from"] == str(folder / "runs/a")
    assert read["train"]["weights"] == "/abs/w.pth" and read["train"]["epochs"] == 2
    assert load_config(config).init_from == str(folder / "runs/a")
    # command-line values are the user's, relative to where the command runs
    assert load_config(config, {"init_from": "runs/b"}).init_from == "runs/b"
