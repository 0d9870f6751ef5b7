"""Run folders a new user can trust (issue 21, items 1-3): a train/test-only manifest gets a
carved validation split, a failed start never poisons the corrected command, a rerun resumes
only the same run, and one process at a time writes a folder or a store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import COLOURS, TINY_OPTIONS
from typer.testing import CliRunner

from heritage.cli import app
from heritage.collection import Collection
from heritage.locking import FolderLocked, folder_lock
from heritage.training.runfolder import RunMismatch
from heritage.training.trainer import Trainer

ENV = {"COLUMNS": "200", "HERITAGE_NO_PROGRESS": "1"}


def _invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def _manifest(image_folder: Path, path: Path, splits: dict[int, str], **labels: str) -> Path:
    """A manifest of the tiny collection: image i of each class gets ``splits[i]`` (rows
    whose index is not in ``splits`` are left out); ``labels`` relabels single images."""
    rows = []
    for label in COLOURS:
        for i in range(8):
            if i in splits:
                image = f"{label}/{label}_{i}.png"
                rows.append((str(image_folder / image), labels.get(image, label), splits[i]))
    pd.DataFrame(rows, columns=["image", "label", "split"]).to_csv(path, index=False)
    return path


TRAIN_TEST = {**dict.fromkeys(range(6), "train"), 6: "test", 7: "test"}


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_OPTIONS, "epochs": 1}))
    return path


def _split(run: Path) -> pd.DataFrame:
    """The run's split.csv, sorted, paths as class/file (the manifests give absolute ones)."""
    split = pd.read_csv(run / "split.csv")
    split["path"] = ["/".join(Path(p).parts[-2:]) for p in split["path"]]
    return split.sort_values("path").reset_index(drop=True)


# ------------------------------------------------------------------ 1. train/test without val


def test_train_test_manifest_carves_a_stratified_val_share(
    image_folder: Path, tmp_path: Path, tiny_yaml: Path
) -> None:
    manifest = _manifest(image_folder, tmp_path / "m.csv", TRAIN_TEST)
    run = tmp_path / "run"
    result = _invoke("train", manifest, "--out", run, "--config", tiny_yaml, "--val-fraction", 0.35)
    assert result.exit_code == 0, result.output
    assert "set aside for validation" in result.output and "split.csv" in result.output
    split = _split(run)
    given = pd.read_csv(manifest)
    given["path"] = [Path(p).relative_to(image_folder).as_posix() for p in given["image"]]
    given = given.sort_values("path").reset_index(drop=True)
    assert list(split["path"]) == list(given["path"])
    test = given["split"] == "test"
    assert (split.loc[test, "split"] == "test").all()  # test rows untouched
    val = split[split["split"] == "val"]
    # 35 % of each class's 6 train images: 2 per class, stratified
    assert val["label"].value_counts().to_dict() == dict.fromkeys(COLOURS, 2)
    assert (given.loc[split["split"] == "val", "split"] == "train").all()
    # seeded: the same seed carves the same images
    again = Collection.from_manifest(manifest).with_val_from_train(0.35, seed=0)
    assert set(again.split("val").paths()) == {str(image_folder / p) for p in val["path"]}


def test_classes_too_small_to_spare_a_val_image_keep_their_train_images(
    image_folder: Path, tmp_path: Path, tiny_yaml: Path
) -> None:
    """A class with 2 train images keeps both (and is named); one with none to spare at all
    is an error that says what to do, and leaves nothing behind."""
    splits = {**dict.fromkeys(range(5), "train"), 5: "test", 6: "test"}
    rows = pd.read_csv(_manifest(image_folder, tmp_path / "m.csv", splits))
    small = rows[~((rows["label"] == "green") & rows["image"].str.contains(r"_[234]\.png"))]
    small.to_csv(tmp_path / "small.csv", index=False)
    result = _invoke(
        "train", tmp_path / "small.csv", "--out", tmp_path / "run", "--config", tiny_yaml
    )
    assert result.exit_code == 0, result.output
    assert "no validation score: green" in result.output
    split = _split(tmp_path / "run")
    assert set(split.loc[split["split"] == "val", "label"]) == {"amber", "blue"}
    assert (split[split["label"] == "green"]["split"] == "train").sum() == 2

    two_each = {0: "train", 1: "train", 6: "test", 7: "test"}
    bad = _manifest(image_folder, tmp_path / "two.csv", two_each)
    result = _invoke("train", bad, "--out", tmp_path / "bad", "--config", tiny_yaml)
    assert result.exit_code == 2, result.output
    assert "add val rows" in result.output
    assert not (tmp_path / "bad").exists()  # a failed start leaves nothing behind


# ------------------------------------------------------------------ 2. failed starts, reruns


def test_failed_start_then_corrected_manifest_into_the_same_folder(
    image_folder: Path, tmp_path: Path, tiny_yaml: Path
) -> None:
    """The issue's case: a manifest that cannot train (no class can spare a val image), then
    the corrected manifest with val rows, into the same --out: the fix wins."""
    run = tmp_path / "run"
    first = _manifest(image_folder, tmp_path / "m.csv", {0: "train", 1: "train", 7: "test"})
    failed = _invoke("train", first, "--out", run, "--config", tiny_yaml)
    assert failed.exit_code == 2, failed.output
    fixed = {**dict.fromkeys(range(5), "train"), 5: "val", 6: "val", 7: "test"}
    _manifest(image_folder, first, fixed)
    result = _invoke("train", first, "--out", run, "--config", tiny_yaml)
    assert result.exit_code == 0, result.output
    assert "no val split" not in result.output  # the manifest's own val split
    split = _split(run)
    assert split["split"].value_counts().to_dict() == {"train": 15, "val": 6, "test": 3}
    assert json.loads((run / "run.json").read_text())["fingerprint"]["split"]["source"] == (
        "collection"
    )


def test_start_failing_after_the_split_leaves_nothing_stale(
    image_folder: Path, tmp_path: Path, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start that fails later (the backbone cannot be built), then the corrected command
    with another split: the new split is used, not the one the failed start drew. A folder
    left with a stale split.csv and config.yaml but no finished epoch (as older versions left
    it) is started again too."""
    import heritage.training.trainer as trainer_module
    from heritage.backbones import BackboneError

    def no_backbone(*args, **kwargs):
        raise BackboneError("no_such_backbone: the weights could not be loaded")

    run = tmp_path / "run"
    old = Collection.from_manifest(_manifest(image_folder, tmp_path / "a.csv", TRAIN_TEST))
    with monkeypatch.context() as patched, pytest.raises(Exception, match="no_such_backbone"):
        patched.setattr(trainer_module, "create_backbone", no_backbone)
        Trainer(tiny_config()).fit(old, run)
    assert not (run / "split.csv").exists() and not (run / "config.yaml").exists()
    old.with_val_from_train(0.5, seed=3).save_split(run / "split.csv")  # a stale leftover
    (run / "config.yaml").write_text(yaml.safe_dump({"source": str(image_folder)}))
    other = {0: "test", 1: "val", **dict.fromkeys(range(2, 8), "train")}
    new = Collection.from_manifest(_manifest(image_folder, tmp_path / "b.csv", other))
    Trainer(tiny_config(epochs=1)).fit(new, run)
    split = _split(run)
    assert split["split"].value_counts().to_dict() == {"train": 18, "val": 3, "test": 3}
    assert set(split.loc[split["split"] == "test", "path"]) == {f"{c}/{c}_0.png" for c in COLOURS}


def test_rerun_with_another_collection_or_options_refuses_and_overwrite_starts_afresh(
    image_folder: Path, tmp_path: Path, tiny_config, tiny_yaml: Path
) -> None:
    run = tmp_path / "run"
    splits = {**dict.fromkeys(range(5), "train"), 5: "val", 6: "val", 7: "test"}
    manifest = _manifest(image_folder, tmp_path / "m.csv", splits)
    Trainer(tiny_config(epochs=1)).fit(Collection.from_manifest(manifest), run)
    split_before = (run / "split.csv").read_text()

    relabelled = _manifest(image_folder, tmp_path / "r.csv", splits, **{"blue/blue_0.png": "green"})
    with pytest.raises(RunMismatch, match=r"1 relabelled \(\S*blue/blue_0.png: blue → green\)"):
        Trainer(tiny_config(epochs=2)).fit(Collection.from_manifest(relabelled), run)
    fewer = _manifest(image_folder, tmp_path / "f.csv", {k: v for k, v in splits.items() if k})
    with pytest.raises(RunMismatch, match=r"3 gone") as refused:
        Trainer(tiny_config(epochs=2)).fit(Collection.from_manifest(fewer), run)
    assert "--overwrite" in str(refused.value) and "--out" in str(refused.value)
    moved = _manifest(image_folder, tmp_path / "s.csv", {**splits, 4: "val", 5: "train"})
    with pytest.raises(RunMismatch, match="split column assigns images differently"):
        Trainer(tiny_config(epochs=2)).fit(Collection.from_manifest(moved), run)
    with pytest.raises(RunMismatch, match=r"label_smoothing: 0\.1 → 0\.2"):
        Trainer(tiny_config(epochs=2, label_smoothing=0.2)).fit(
            Collection.from_manifest(manifest), run
        )
    assert (run / "split.csv").read_text() == split_before  # nothing changed by refusals

    result = _invoke("train", fewer, "--out", run, "--config", tiny_yaml)
    assert result.exit_code == 2 and "--overwrite" in result.output, result.output
    (run / "soups").mkdir()  # a result of the old run: goes
    (run / "notes.txt").write_text("mine")  # not heritage's: stays
    result = _invoke("train", fewer, "--out", run, "--config", tiny_yaml, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (run / "soups").exists() and (run / "notes.txt").read_text() == "mine"
    assert len(pd.read_csv(run / "split.csv")) == 21
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [0, 1]


def test_interrupted_run_on_a_carved_split_resumes(
    image_folder: Path, tmp_path: Path, tiny_config
) -> None:
    """A genuinely interrupted run (here: stopped after epoch 1 of 2) resumes on the same
    carved validation split, also when only the resumable options (epochs, device) change."""
    collection = Collection.from_manifest(_manifest(image_folder, tmp_path / "m.csv", TRAIN_TEST))
    run = tmp_path / "run"
    Trainer(tiny_config(epochs=1)).fit(collection, run)
    split_before, fingerprint = (run / "split.csv").read_text(), (run / "run.json").read_text()
    os.remove(run / "train_summary.json")  # as a killed run leaves it
    result = Trainer(tiny_config(epochs=2)).fit(collection, run)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert (run / "split.csv").read_text() == split_before
    assert (run / "run.json").read_text() == fingerprint
    assert [e.epoch for e in result.pool.entries] == [1, 2]


# ------------------------------------------------------------------ 3. one writer at a time

_HOLD = """
import sys
from heritage.locking import folder_lock
lock = folder_lock(sys.argv[1], sys.argv[2])
print("held", flush=True)
sys.stdin.read()
"""

_HOLD_STORE = """
import sys
from heritage.kg import KnowledgeGraph
graph = KnowledgeGraph(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""

_HOLD_OXIGRAPH = """
import sys
import pyoxigraph
store = pyoxigraph.Store(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def _held_elsewhere(script: str, *args: str | Path) -> Iterator[subprocess.Popen]:
    """Another process holding a folder until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "held", proc.stderr.read()
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def test_second_writer_stops_at_once_naming_the_holder(
    image_folder: Path, tmp_path: Path, tiny_config, tiny_yaml: Path, run_copy: Path
) -> None:
    from heritage.analysis import analyse
    from heritage.run import Run

    run = tmp_path / "new-run"
    collection = Collection.from_folder(image_folder)
    with _held_elsewhere(_HOLD, run, "heritage train") as holder:
        start = time.perf_counter()
        with pytest.raises(FolderLocked) as locked:
            Trainer(tiny_config(epochs=1)).fit(collection, run)
        assert time.perf_counter() - start < 5  # at once, not after waiting
        message = str(locked.value)
        assert f"pid {holder.pid}" in message and "heritage train" in message
        assert "python -c" in message and f"kill {holder.pid}" in message
        result = _invoke("train", image_folder, "--out", run, "--config", tiny_yaml)
        assert result.exit_code == 2 and f"pid {holder.pid}" in result.output, result.output
        assert not (run / "split.csv").exists()

    opened = Run.open(run_copy)  # reading needs no lock
    with _held_elsewhere(_HOLD, run_copy, "heritage soup"):
        for step in (opened.cook_soups, opened.evaluate, lambda: analyse(run_copy)):
            with pytest.raises(FolderLocked, match="heritage soup"):
                step()
        result = _invoke("evaluate", run_copy)
        assert result.exit_code == 2 and "(heritage soup)" in result.output

    # a killed holder leaves no stale lock: the operating system releases it
    with _held_elsewhere(_HOLD, run, "heritage train") as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        Trainer(tiny_config(epochs=1)).fit(collection, run)
    assert (run / "state.pt").is_file()
    with folder_lock(run, "test"), folder_lock(run, "test again"):  # re-entrant in a process
        assert json.loads((run / ".heritage.lock.json").read_text())["pid"] == os.getpid()
    assert not (run / ".heritage.lock.json").exists()


def test_other_writers_lock_their_folders(tmp_path: Path, image_folder: Path) -> None:
    from heritage.similarity import build_index

    index = tmp_path / "index"
    with _held_elsewhere(_HOLD, index, "heritage index build") as holder:
        with pytest.raises(FolderLocked, match=f"pid {holder.pid}"):
            build_index(image_folder, index)
        result = _invoke("index", "build", image_folder, "--out", index)
        assert result.exit_code == 2 and f"pid {holder.pid}" in result.output
    model = tmp_path / "metadata-model"
    records = tmp_path / "records.csv"
    texts = [f"record {i} about {'silk' if i % 2 else 'wool'}" for i in range(12)]
    pd.DataFrame({"id": range(12), "text_en": texts, "p": [i % 2 for i in range(12)]}).to_csv(
        records, index=False
    )
    with _held_elsewhere(_HOLD, model, "heritage metadata fit") as holder:
        result = _invoke("metadata", "fit", records, "--out", model, "--properties", "p")
        assert result.exit_code == 2 and f"pid {holder.pid}" in result.output, result.output


def _triples(path: Path) -> Path:
    path.write_text('<https://example.org/a> <https://example.org/p> "one" .\n')
    return path


def test_kg_load_on_a_store_held_by_another_writer(tmp_path: Path) -> None:
    store = tmp_path / "kg-store"
    data = _triples(tmp_path / "data.nt")
    assert _invoke("kg", "load", data, "--store", store).exit_code == 0
    with _held_elsewhere(_HOLD_STORE, store) as holder:
        start = time.perf_counter()
        result = _invoke("kg", "load", data, "--store", store)
        assert time.perf_counter() - start < 10
        assert result.exit_code == 2, result.output
        assert f"pid {holder.pid}" in result.output
        assert "writing the knowledge graph" in result.output
        assert "IO error" not in result.output
        query = _invoke("kg", "query", "ASK { ?s ?p ?o }", "--store", store)  # reading: no lock
        assert query.exit_code == 0 and "yes" in query.output, query.output
    # a writer that does not record itself (Oxigraph's own lock only): still heritage's words
    with _held_elsewhere(_HOLD_OXIGRAPH, store):
        result = _invoke("kg", "load", data, "--store", store)
        assert result.exit_code == 2, result.output
        assert "in use by another process" in result.output and "IO error" not in result.output
    result = _invoke("kg", "load", data, "--store", store)
    assert result.exit_code == 0, result.output
