"""The main job's last step: a run published as the knowledge graph the explorer serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from heritage.explore import Explorer, ExplorerConfig, SearchState
from heritage.showcase import publish_run


def tiny_records(path: Path) -> Path:
    rows = []
    for i in range(30):
        technique = ("damask", "velvet", "lampas")[i % 3]
        rows.append(
            {
                "object": f"T.{i}",
                "museum": ("vam", "imatex")[i % 2],
                "split": ("train", "train", "train", "val", "test")[i % 5],
                "technique": technique if i % 4 else "",
                "place": ("ES", "GB")[i % 2],
                "text_en": f"a silk {technique} fragment {i}",
            }
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_run_becomes_an_explorable_graph(run_copy: Path, tmp_path: Path) -> None:
    from heritage.run import Run, RunError

    with pytest.raises(RunError, match="cook"):
        publish_run(run_copy, index=False)
    Run.open(run_copy).cook_soups()
    records = tiny_records(tmp_path / "records.csv")
    published = publish_run(run_copy, records=records)
    assert published.store.is_dir() and published.index is not None
    classifier = pd.read_csv(published.predictions["classifier"])
    with Explorer.open(
        ExplorerConfig(
            store=published.store, index=published.index, images=(published.images,), read_only=True
        )
    ) as ex:
        table = ex.table
        assert {"label", "split", "technique", "museum"} <= set(table.properties)
        # every test image is a record with its prediction; the test labels are gaps
        test_ids = set(classifier["image"])
        assert test_ids and all(table.record_index(i) is not None for i in test_ids)
        view = ex.record(sorted(test_ids)[0])
        label = next(f for f in view.fields if f.property == "label")
        assert label.catalogued == [] and len(label.predictions) == 1
        assert view.images and view.in_index
        assert ex.similar(sorted(test_ids)[0], k=3)
        texts = ex.search(SearchState(text="velvet"))
        assert texts.total == 10
    again = publish_run(run_copy, records=records, index=False)  # a rerun adds nothing new
    with Explorer.open(ExplorerConfig(store=again.store, read_only=True)) as ex2:
        assert ex2.table.n_records == table.n_records


def test_a_missing_records_table_is_a_note(run_copy: Path, tmp_path: Path) -> None:
    from heritage.run import Run

    Run.open(run_copy).cook_soups()
    published = publish_run(run_copy, records=tmp_path / "none.csv", index=False)
    assert "metadata" not in published.predictions and "no records table" in published.notes[0]
    shutil.rmtree(published.store)
