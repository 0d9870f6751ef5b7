"""Data-parallel training: two gloo processes on the CPU train the run a single process would,
write one run folder, and resume after a kill."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_OPTIONS

from heritage.model import load_state

# no augmentation and (in the script) no dropout, so that the only difference between one and
# two processes is the order in which each batch's gradient is summed
OPTIONS = {**TINY_OPTIONS, "epochs": 3, "augment": "none", "batch_size": 4}

_SCRIPT = """
import sys, time
import torch.nn.functional
torch.nn.functional.dropout = lambda x, *args, **kwargs: x  # each process draws its own masks
from heritage.collection import Collection
from heritage.config import TrainConfig
from heritage.training.engine import Engine
from heritage.training.trainer import Trainer

if sys.argv[3] == "hang":  # hang in epoch 2 so that the test can kill the run mid-epoch
    real_epoch = Engine.train_epoch

    def slow_epoch(self, epoch):
        if epoch >= 2:
            time.sleep(120)
        return real_epoch(self, epoch)

    Engine.train_epoch = slow_epoch
cfg = TrainConfig.from_dict({options!r})
Trainer(cfg).fit(Collection.from_folder(sys.argv[1]), sys.argv[2])
"""


def _launch(script: Path, folder: Path, run: Path, mode: str, nproc: int) -> subprocess.Popen:
    env = {**os.environ, "HERITAGE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={nproc}", str(script), str(folder), str(run), mode]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (torchrun's workers run in their own groups)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _history(run: Path) -> list[dict[str, float]]:
    return json.loads((run / "history.json").read_text())


def _pool(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.stem: load_state(p) for p in sorted((run / "pool").glob("*.safetensors"))}


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "train.py"
    path.write_text(textwrap.dedent(_SCRIPT.format(options=OPTIONS)))
    return path


def test_two_processes_train_the_one_process_run(
    script: Path, image_folder: Path, tmp_path: Path
) -> None:
    for nproc in (1, 2):
        proc = _launch(script, image_folder, tmp_path / f"n{nproc}", "run", nproc)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
    assert _pool(tmp_path / "n1").keys() == _pool(tmp_path / "n2").keys()
    # the same trajectory, up to the order in which each batch's gradient is summed (Adam
    # turns that rounding into visible steps of weights whose gradient is about zero, so the
    # comparison is on what the weights do: training and validation losses, every epoch)
    one, two = _history(tmp_path / "n1"), _history(tmp_path / "n2")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "val_loss", "val_macro_f1"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["epoch"], key)
    config = yaml.safe_load((tmp_path / "n2" / "config.yaml").read_text())
    assert config["epochs"] == 3
    for nproc in (1, 2):  # the hardware names the processes that trained together
        summary = json.loads((tmp_path / f"n{nproc}" / "train_summary.json").read_text())
        assert summary["processes"] == nproc
        assert summary["hardware"].startswith("2x cpu-" if nproc == 2 else "cpu-")
    assert sorted(p.name for p in (tmp_path / "n2").iterdir()) == sorted(
        p.name for p in (tmp_path / "n1").iterdir()
    )


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_pool(
    script: Path, image_folder: Path, tmp_path: Path
) -> None:
    straight = _launch(script, image_folder, tmp_path / "straight", "run", 2)
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err.decode()[-3000:]
    killed = _launch(script, image_folder, tmp_path / "killed", "hang", 2)
    deadline = time.monotonic() + 300
    while not (tmp_path / "killed" / "state.pt").is_file():
        assert killed.poll() is None, killed.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the first epoch never finished"
        time.sleep(0.5)
    time.sleep(1)
    _kill_tree(killed.pid)
    killed.wait()
    resumed = _launch(script, image_folder, tmp_path / "killed", "run", 2)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-3000:]
    a, b = _pool(tmp_path / "straight"), _pool(tmp_path / "killed")
    assert a.keys() == b.keys()
    for name in a:
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name


def test_hardware_label_counts_processes() -> None:
    from heritage.runtime import hardware_label

    one = hardware_label(torch.device("cpu"))
    assert one.startswith("cpu-") and hardware_label(torch.device("cpu"), 3) == f"3x {one}"


def test_only_rank_zero_prints_for_the_run(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every rank of a torchrun reads the inputs; the class table and what follows are rank
    0's to print (the others' console stays quiet)."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from heritage.cli import app
    from heritage.progress import console
    from heritage.training.trainer import Trainer

    done = SimpleNamespace(pool=SimpleNamespace(entries=[]), train_images_per_second=1.0)
    monkeypatch.setattr(Trainer, "fit", lambda self, *args, **kwargs: done)
    monkeypatch.setattr(console, "quiet", False)  # restored after the test
    command = ["train", str(image_folder), "--out", str(tmp_path / "run"), "--device", "cpu"]
    monkeypatch.delenv("RANK", raising=False)
    alone = CliRunner().invoke(app, command)
    assert alone.exit_code == 0 and "amber" in alone.output, alone.output
    monkeypatch.setenv("RANK", "1")
    second = CliRunner().invoke(app, command)
    assert second.exit_code == 0 and second.output == "", second.output
