"""A run's starting point, kept so that other runs can start from the same one.

Weight averaging works across runs only when they fine-tune from one initialisation: the same
pretrained backbone *and* the same head (DiWA, Ramé et al. 2022; model ratatouille, Ramé et
al. 2023: runs that share a linear-probe head but differ in seed and hyper-parameters average
into a better model; runs with other heads do not, they sit in other basins). So every run
writes, before its first epoch:

    init.json           the digest of the starting state, what it came from (the LP-FT probe,
                        a random head or another run) and the options that shape it
    init.safetensors    the starting state itself: backbone and head

``TrainConfig(init_from=RUN)`` (``heritage train --init-from RUN``) starts a run from RUN's
starting state and split instead of fitting a new probe, so its digest equals RUN's and the
two can be averaged by ``heritage soup RUN_A RUN_B ...`` (:mod:`heritage.group`). The whole
state is kept, not only the head: a backbone without pretrained weights starts from its seed,
and hub weights may change between downloads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from heritage.collection import Collection
from heritage.config import TrainConfig
from heritage.training.runfolder import collection_difference, group_members

INIT_FILE = "init.json"
INIT_STATE = "init.safetensors"
#: options that shape the starting state; a run started from another must share them
SHAPING = ("backbone", "image_size", "resize_mode")


class InitError(ValueError):
    """A run cannot start from (or be averaged with) another; the message says why."""


def state_digest(model: nn.Module) -> str:
    """SHA-256 over the model's parameters and buffers, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_init(run_dir: Path, model: nn.Module, config: TrainConfig, source: str) -> None:
    """Record the model's starting state in ``run_dir`` (see the module's docstring)."""
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        str(run_dir / INIT_STATE),
    )
    info = {
        "digest": state_digest(model),
        "source": source,  # "probe", "random" or the run it was copied from
        "options": {k: getattr(config, k) for k in SHAPING},
    }
    (run_dir / INIT_FILE).write_text(json.dumps(info, indent=1) + "\n")


def read_init(run_dir: Path) -> dict[str, Any] | None:
    """``init.json`` of a run; None for a run from before heritage kept one."""
    path = Path(run_dir) / INIT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def shaping_changes(info: dict[str, Any], config: TrainConfig) -> list[str]:
    """The options that shape the starting state (:data:`SHAPING`) on which ``config``
    differs from a start's ``init.json`` (``info``), one ``option: there, here`` each. A run
    given another backbone or input size cannot load that start (``--init-from``, a sweep)."""

    def shown(value: Any) -> str:
        return "the backbone's default" if value is None else repr(value)

    saved = info.get("options", {})
    return [
        f"{k}: {shown(saved.get(k))} there, {shown(getattr(config, k))} here"
        for k in SHAPING
        if saved.get(k) != getattr(config, k)
    ]


def _group_given(source: Path, members: list[str]) -> InitError:
    """A group of runs has no start of its own (it gathers finished runs); its runs share
    one, so the message offers them."""
    shown = ", ".join(members) or "none recorded"
    example = f", e.g. --init-from {members[0]}" if members else ""
    return InitError(
        f"--init-from {source}: a group of runs (heritage soup RUN... --out {source}; its "
        f"runs: {shown}), not a run: it has no start of its own. Its runs share one start "
        f"and split: start from one of them{example}"
    )


def init_source(run_dir: str | Path, collection: Collection, config: TrainConfig) -> Path:
    """Check that a run may start from ``run_dir``: it recorded its start, and it was trained
    on the same collection with the options that shape the starting state. Returns its
    folder."""
    source = Path(run_dir)
    if not source.is_dir():
        raise InitError(f"--init-from {source}: no such run folder")
    members = group_members(source)
    if members is not None:
        raise _group_given(source, members)
    info = read_init(source)
    if info is None or not (source / INIT_STATE).is_file() or not (source / "split.csv").is_file():
        raise InitError(
            f"--init-from {source}: not a run folder that recorded its start ({INIT_FILE}, "
            f"{INIT_STATE} and split.csv); train it with this heritage first, for example with "
            "--epochs 1"
        )
    differs = collection_difference(collection, source / "split.csv")
    if differs is not None:
        raise InitError(f"--init-from {source}: {differs}")
    changed = shaping_changes(info, config)
    if changed:
        raise InitError(
            f"--init-from {source}: that run starts from another model ({'; '.join(changed)}); "
            "give this run the same --backbone, --image-size and --resize-mode"
        )
    return source


def load_init_state(model: nn.Module, source: Path) -> None:
    """Load the state ``source`` started from into ``model``."""
    try:
        model.load_state_dict(load_file(str(source / INIT_STATE)))
    except RuntimeError as exc:
        raise InitError(f"--init-from {source}: its start does not fit this model ({exc})") from exc
