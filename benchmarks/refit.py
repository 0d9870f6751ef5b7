"""Refit benchmark: the greedy soup of a run on train, against the same soup refitted on
train + val (`heritage refit`), on the test split of each manifest, 3 seeds.

    python benchmarks/refit.py                                  # both datasets, seeds 0 1 2
    python benchmarks/refit.py --datasets hieroglyphs-unas --image-size 128

Each seed trains a run with the soups benchmark's settings (``--image-size`` overrides the input
size, e.g. to fit the CPU budget), cooks its soups on val, then refits: a second run on train +
val with the same options, whose soup averages the epochs the first greedy soup kept. Both are
scored once on test. Why: benchmarks/sweep.py's learning curve (``_train<p>`` rows) shows the
validation score still rising with more training images, and a small collection keeps a fifth
of its labels for validation. Runs are kept in benchmarks/runs/refit/ (git-ignored) and resume.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from heritage.config import TrainConfig
from heritage.progress import console
from heritage.run import Run
from heritage.runtime import configure_threads, hardware_label, resolve_device
from heritage.training.trainer import Trainer

try:  # run as a script (python benchmarks/refit.py) or as a module
    from records import RecordBook
    from soups import SETUPS
except ImportError:
    from benchmarks.records import RecordBook
    from benchmarks.soups import SETUPS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--image-size", type=int, default=None, help="input size instead of the soups setting's"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs" / "refit")
    args = parser.parse_args()

    configure_threads()
    book = RecordBook("refit", hardware_label(resolve_device(args.device)))
    for name in args.datasets:
        setup = SETUPS[name]
        collection = setup.collection(check_images=False)
        options = dict(setup.config)
        if args.image_size is not None:
            options["image_size"] = args.image_size
        for seed in args.seeds:
            console.rule(f"{name} · seed {seed}")
            cfg = TrainConfig.from_dict({**options, "seed": seed, "device": args.device})
            folder = args.runs / name / f"seed{seed}"
            first = Trainer(cfg).fit(collection, folder / "run")
            run = Run.open(first.run_dir)
            soups = run.cook_soups(recipes=("greedy",))
            run.refit(folder / "refit")
            refit = Run.open(folder / "refit")
            scores = {
                "greedy_soup": run.evaluate("test", ("greedy_soup",))["greedy_soup"],
                "greedy_soup_refit": refit.evaluate("test", ("greedy_soup",))["greedy_soup"],
            }
            for method, ev in scores.items():
                book.add(name, method, "top1", ev.top1)
                book.add(name, method, "macro_f1", ev.macro_f1)
            book.add(name, "greedy_soup", "n_ingredients", len(soups["greedy"].ingredients_))
            summary = json.loads((refit.folder / "train_summary.json").read_text())
            book.add(name, "greedy_soup_refit", "train_seconds", summary["train_seconds"])
            book.add(name, "greedy_soup", "train_seconds", first.train_seconds)
            console.print({m: round(ev.macro_f1, 4) for m, ev in scores.items()})
            path = book.write()  # after every seed: an interrupted benchmark keeps its records
    console.print(f"records written to {path}")


if __name__ == "__main__":
    if os.environ.get("HERITAGE_DATA"):
        print("data from", os.environ["HERITAGE_DATA"])
    main()
