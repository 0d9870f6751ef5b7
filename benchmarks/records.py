"""Benchmark records: ``benchmarks/results/<topic>.json`` as a list of
``{"dataset", "method", "metric", "mean", "std", "n_seeds", "hardware", "command"}``.
A rerun replaces the records it produces and keeps the others."""

from __future__ import annotations

import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def command_line() -> str:
    """The command that reproduces this run, from the repository root."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


class RecordBook:
    """Collects per-seed values and writes mean/std records."""

    def __init__(self, topic: str, hardware: str) -> None:
        self.path = RESULTS / f"{topic}.json"
        self.hardware = hardware
        self.values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        self.seed_counts: dict[tuple[str, str, str], int] = {}

    def add(
        self, dataset: str, method: str, metric: str, value: float, n_seeds: int | None = None
    ) -> None:
        """One value per seed; or, with ``n_seeds``, one value computed across that many
        seeds (e.g. a variance across seeds), recorded with std 0."""
        self.values[(dataset, method, metric)].append(float(value))
        if n_seeds is not None:
            self.seed_counts[(dataset, method, metric)] = n_seeds

    def records(self) -> list[dict]:
        out = []
        for (dataset, method, metric), vals in self.values.items():
            out.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "metric": metric,
                    "mean": float(np.mean(vals)),
                    "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                    "n_seeds": self.seed_counts.get((dataset, method, metric), len(vals)),
                    "hardware": self.hardware,
                    "command": command_line(),
                }
            )
        return out

    def write(self) -> Path:
        new = self.records()
        keys = {(r["dataset"], r["method"], r["metric"]) for r in new}
        old = json.loads(self.path.read_text()) if self.path.is_file() else []
        kept = [r for r in old if (r["dataset"], r["method"], r["metric"]) not in keys]
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(kept + new, indent=2) + "\n")
        return self.path
