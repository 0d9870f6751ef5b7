"""AutoGluon-Tabular as the AutoML peer of the multimodal benchmark, on silknow-records.

Runs in its own environment because AutoGluon 1.6 pins pandas < 2.4, older than heritage's:

    make peer-venv                                   # .venv-peer with autogluon.tabular
    .venv-peer/bin/python benchmarks/peer_autogluon.py --seeds 0 1 2 --out peer.json

`benchmarks/multimodal.py` calls it this way and records method `peer_autogluon`. One
TabularPredictor per property, on the features heritage's fusion sees (museum, n_images, the
other properties, both texts as AutoGluon text features): trained on the records' `train`
split where the property is known, `dev` as AutoGluon's tuning data, scored once on `test`.
Only pandas, numpy, scikit-learn and AutoGluon are imported here.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("HERITAGE_DATA", ROOT.parent / "shared" / "datasets"))
PROPERTIES = ("place", "timespan", "technique", "material")
FEATURES = ("museum", "n_images", "text_en", "text_es", *PROPERTIES)


def run(records: Path, seeds: list[int], time_limit: float) -> list[dict]:
    """Per seed and property: test macro-F1 (over the classes in truth or prediction, as
    heritage's evaluation counts it) and the fit + predict seconds."""
    from autogluon.tabular import TabularPredictor

    frame = pd.read_csv(records, dtype=str, keep_default_na=False).replace("", np.nan)
    frame["n_images"] = pd.to_numeric(frame["n_images"])
    split = {s: frame[frame["split"] == s] for s in ("train", "dev", "test")}
    out = []
    for seed in seeds:
        for prop in PROPERTIES:
            cols = [c for c in FEATURES if c != prop] + [prop]
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                model = TabularPredictor(
                    label=prop, eval_metric="f1_macro", path=tmp, verbosity=0
                ).fit(
                    split["train"][cols].dropna(subset=[prop]),
                    tuning_data=split["dev"][cols].dropna(subset=[prop]),
                    time_limit=time_limit,
                    ag_args_fit={"random_seed": seed},
                )
                known = split["test"].dropna(subset=[prop])
                pred = model.predict(known[cols[:-1]])
            f1 = f1_score(known[prop].to_numpy(), pred.to_numpy(), average="macro")
            seconds = time.perf_counter() - start
            out.append({"seed": seed, "property": prop, "macro_f1": float(f1), "seconds": seconds})
            print(f"seed {seed} {prop}: macro-F1 {f1:.4f} ({seconds:.0f} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, default=DATA / "silknow-records" / "records.csv")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--time-limit", type=float, default=120, help="seconds per property")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of per-seed scores")
    args = parser.parse_args()
    args.out.write_text(json.dumps(run(args.records, args.seeds, args.time_limit), indent=1))


if __name__ == "__main__":
    main()
