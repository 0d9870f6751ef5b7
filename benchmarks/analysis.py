"""Analysis benchmark (issue: why soups work): bias–variance decomposition of the test error
across the 3 seeds of the soups benchmark, for single checkpoints, uniform soup, greedy soup
and soft voting, on ich-mekong and hieroglyphs-unas.

    python benchmarks/soups.py          # first: the runs this reads
    python benchmarks/analysis.py

Reads benchmarks/runs/soups/<dataset>/seed<N> (no training here), writes
benchmarks/results/analysis.json, each run's HTML report (RUN/analysis/report.html), the
across-seed report (benchmarks/runs/analysis/<dataset>/report.html) and the checkpoint map of
seed 0 to docs/figures/analysis_<dataset>_geometry.png.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from heritage.analysis import analyse_runs
from heritage.progress import console
from heritage.runtime import configure_threads, hardware_label, resolve_device

try:  # run as a script (python benchmarks/analysis.py) or as a module
    from records import RecordBook
except ImportError:
    from benchmarks.records import RecordBook

ROOT = Path(__file__).resolve().parent.parent
#: best_checkpoint is the like-for-like baseline of the soups (one model per seed, as they
#: are); single_checkpoints pools every checkpoint of every seed (many more models)
METHODS = ("single_checkpoints", "best_checkpoint", "uniform_soup", "greedy_soup", "soft_voting")
METRICS = (
    "error_01",
    "bias_01",
    "variance_01",
    "net_variance_01",
    "error_ce",
    "bias_ce",
    "variance_ce",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ich-mekong", "hieroglyphs-unas"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs" / "soups")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    configure_threads()
    book = RecordBook("analysis", hardware_label(resolve_device(args.device)))
    figures = ROOT / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        runs = [args.runs / name / f"seed{seed}" for seed in args.seeds]
        missing = [
            str(r / "soups" / f"{recipe}.json")
            for r in runs
            for recipe in ("uniform_soup", "greedy_soup")
            if not (r / "soups" / f"{recipe}.json").is_file()
        ]
        if missing:
            raise SystemExit(f"run `python benchmarks/soups.py` first; missing: {missing}")
        out = ROOT / "benchmarks" / "runs" / "analysis" / name
        result = analyse_runs(runs, "test", out, device=args.device)
        table = result.decomposition
        for method in METHODS:
            for metric in METRICS:
                book.add(name, method, metric, table.loc[method, metric], len(runs))
        geometry = runs[0] / "analysis" / "geometry.png"
        if geometry.is_file():
            shutil.copy(geometry, figures / f"analysis_{name}_geometry.png")
        console.print(f"[bold]{name}[/]")
        for sentence in result.summary:
            console.print("  " + sentence)
        book.write()
    console.print(f"records written to {book.path}")


if __name__ == "__main__":
    main()
