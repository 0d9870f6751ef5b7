"""Where a model lives on disk: ``NAME.safetensors`` (weights) beside ``NAME.json`` (its card).

Only paths, no torch: commands check what they were given here, in milliseconds, before they
load the deep-learning stack to read it (:mod:`heritage.model`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["model_card_path", "model_paths", "model_stem"]


def model_stem(path: str | Path) -> Path:
    """``x``, ``x.json`` or ``x.safetensors`` -> ``x`` (other dots belong to the name: ``m.v1``)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".json", ".safetensors") else path


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, card) paths of a model file given as ``x``, ``x.json`` or ``x.safetensors``."""
    stem = model_stem(path)
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def model_card_path(path: str | Path) -> Path:
    """The card of the model file ``path``, or ``FileNotFoundError`` saying what was given
    instead: a folder (and the models in it, or how to name one), or nothing at all."""
    folder = Path(path)
    if folder.is_dir():  # a run folder or a soups folder, not a model: say which models it has
        found = sorted({model_stem(p) for p in folder.glob("*.safetensors")})
        found += sorted({model_stem(p) for p in (folder / "soups").glob("*.safetensors")})
        hint = (
            f"; models in it: {', '.join(str(m) for m in found)}"
            if found
            else " (for a run folder, name one of its models, e.g. RUN/soups/greedy_soup)"
        )
        raise FileNotFoundError(f"{folder} is a folder, not a model file{hint}")
    _, card_path = model_paths(path)
    if not card_path.is_file():
        raise FileNotFoundError(
            f"model card not found: {card_path} (a model is NAME.safetensors + NAME.json)"
        )
    return card_path
