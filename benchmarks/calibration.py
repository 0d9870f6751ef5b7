"""Calibration benchmark (issue 21): expected calibration error of every classifier method on
the test split, before (`ece_raw`) and after (`ece`) the temperature fitted on validation.

    python benchmarks/calibration.py                           # both datasets, seeds 0 1 2
    python benchmarks/calibration.py --datasets ich-mekong --seeds 0

The runs are those of benchmarks/soups.py (same datasets, splits, recipes and seeds; the
same folders, benchmarks/runs/soups/<dataset>/seed<k>, so either benchmark reuses the other's
finished runs; an unfinished one resumes). Temperatures are fitted on the validation split
only: each checkpoint's when it is saved, each soup's when it is cooked, soft voting's on the
mean of its members; test is read once per method, for the report. ECE: 15 equal-width
confidence bins (heritage.evaluation.expected_calibration_error). Also recorded:
`temperature` and the methods' `macro_f1` (unchanged by a temperature, which never moves
the argmax: a check that calibration costs no accuracy).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from heritage.config import TrainConfig
from heritage.model import load_card
from heritage.progress import console
from heritage.run import Run
from heritage.runtime import configure_threads, hardware_label, resolve_device
from heritage.training.trainer import Trainer

try:  # run as a script (python benchmarks/calibration.py) or as a module
    from records import RecordBook
    from soups import METHODS, ROOT, SETUPS
except ImportError:
    from benchmarks.records import RecordBook
    from benchmarks.soups import METHODS, ROOT, SETUPS


def calibrated_run(run_dir: Path, cfg: TrainConfig, collection) -> Run:
    """The finished run in ``run_dir`` (trained or resumed here), with soups cooked by this
    heritage: checkpoints saved before temperatures existed are refused, not silently
    reported as uncalibrated."""
    Trainer(cfg).fit(collection, run_dir)
    run = Run.open(run_dir)
    for entry in run.pool.entries:
        if "val_temperature" not in load_card(run.pool.folder / entry.name).metrics:
            raise SystemExit(
                f"{run_dir}: {entry.name} was saved without a temperature (an older heritage); "
                "delete the folder to retrain it"
            )
    run.cook_soups()  # each soup's temperature and soft voting's, on validation
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs" / "soups")
    parser.add_argument("--dry-run", action="store_true", help="print records, write nothing")
    args = parser.parse_args()

    configure_threads()
    book = RecordBook("calibration", hardware_label(resolve_device(args.device)))
    for name in args.datasets:
        setup = SETUPS[name]
        collection = setup.collection()
        for seed in args.seeds:
            console.rule(f"{name} · seed {seed}")
            cfg = TrainConfig.from_dict({**setup.config, "seed": seed, "device": args.device})
            run = calibrated_run(args.runs / name / f"seed{seed}", cfg, collection)
            results = run.evaluate("test", METHODS)
            rows = {
                r["method"]: r
                for r in json.loads((run.folder / "eval" / "test" / "comparison.json").read_text())
            }
            for method, ev in results.items():
                book.add(name, method, "ece", ev.ece)
                book.add(name, method, "ece_raw", rows[method]["ece_raw"])
                book.add(name, method, "temperature", rows[method]["temperature"])
                book.add(name, method, "macro_f1", ev.macro_f1)
            console.print(
                {m: f"ECE {rows[m]['ece_raw']:.3f} → {ev.ece:.3f}" for m, ev in results.items()}
            )
            if not args.dry_run:
                path = book.write()  # after every seed: an interrupted benchmark keeps them
                console.print(f"records written to {path}")
    if args.dry_run:
        console.print(book.records())


if __name__ == "__main__":
    main()
