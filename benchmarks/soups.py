"""Soups benchmark (issue: foundation): linear probe, best checkpoint, uniform soup, greedy soup
and soft voting on ich-mekong and hieroglyphs-unas, test split of each manifest, 3 seeds.

    python benchmarks/soups.py                      # both datasets, seeds 0 1 2
    python benchmarks/soups.py --datasets ich-mekong --seeds 0

Runs are kept in benchmarks/runs/ (git-ignored) and resume if interrupted. Model selection
(checkpoints, greedy order, probe regularisation) uses train and val only; test is read once
per method, for the report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from heritage.backbones import create_backbone, resolve_preprocessing
from heritage.collection import Collection
from heritage.config import TrainConfig
from heritage.data import ImageCache, ImageDataset, eval_transform, make_loader
from heritage.evaluation import evaluate
from heritage.probe import LinearProbe, extract_features
from heritage.progress import console
from heritage.run import Run
from heritage.runtime import configure_threads, hardware_label, resolve_device
from heritage.training.trainer import Trainer

try:  # run as a script (python benchmarks/soups.py) or as a module
    from records import RecordBook
except ImportError:
    from benchmarks.records import RecordBook

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("HERITAGE_DATA", ROOT.parent / "shared" / "datasets"))


@dataclass
class Setup:
    manifest: str
    label_column: str
    config: dict
    ignore_splits: tuple[str, ...] = ()

    def collection(self, check_images: bool = True) -> Collection:
        return Collection.load(
            DATA / self.manifest,
            label_column=self.label_column,
            ignore_splits=self.ignore_splits,
            check_images=check_images,
        )


#: Per-dataset settings: heritage's defaults, plus what benchmarks/sweep.py chose on the
#: validation split (results/sweep.json: best greedy-soup validation macro-F1).
SETUPS = {
    "ich-mekong": Setup("ich-mekong/manifest.csv", "label", {"epochs": 12}),
    "hieroglyphs-unas": Setup(
        "hieroglyphs-unas/manifest.csv",
        "sign",
        {
            "epochs": 12,
            "lr": 3e-4,
            "image_size": 192,
            "resize_mode": "pad",
            "augment": "glyphs",
            "batch_size": 32,
            "restart_epochs": 12,  # one cosine decay: chosen on validation (sweep.md)
        },
        ignore_splits=("unused",),
    ),
}
METHODS = ("best_checkpoint", "uniform_soup", "greedy_soup", "soft_voting")


def linear_probe(
    collection: Collection,
    cfg: TrainConfig,
    device: torch.device,
    eval_split: str = "test",
    mirrored_train: bool = False,
) -> dict:
    """Frozen pretrained backbone + logistic regression (deterministic: features are fixed),
    fitted on train, scored on ``eval_split``. ``mirrored_train`` adds a horizontally flipped
    copy of every training image: whether mirroring keeps the label, asked cheaply."""
    t0 = time.perf_counter()
    model = create_backbone(cfg.backbone, len(collection.classes)).to(device)
    model.to(memory_format=torch.channels_last)
    prep = resolve_preprocessing(model, cfg.image_size, cfg.resize_mode)
    cache = ImageCache(prep)
    feats = {}
    for split in ("train", eval_split):
        part = collection.split(split)
        cache.load(part.paths())
        ds = ImageDataset(part.paths(), part.targets(), cache, eval_transform(prep))
        feats[split] = extract_features(
            model, make_loader(ds, 64, shuffle=False, workers=0), device
        )
        if split == "train" and mirrored_train:
            flipped = v2.Compose([v2.RandomHorizontalFlip(p=1.0), eval_transform(prep)])
            ds = ImageDataset(part.paths(), part.targets(), cache, flipped)
            loader = make_loader(ds, 64, shuffle=False, workers=0)
            mirrored = extract_features(model, loader, device)
            feats[split] = tuple(
                np.concatenate(pair) for pair in zip(feats[split], mirrored, strict=True)
            )
    probe = LinearProbe().fit(*feats["train"], n_classes=len(collection.classes))
    fit_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    proba = probe.predict_proba(feats[eval_split][0])
    ev = evaluate(feats[eval_split][1], proba, collection.classes)
    return {
        "top1": ev.top1,
        "macro_f1": ev.macro_f1,
        "train_seconds": fit_seconds,
        "n_train": len(feats["train"][1]),
        "probe_seconds": time.perf_counter() - t1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs" / "soups")
    parser.add_argument("--topic", default="soups", help="results file name")
    parser.add_argument(
        "--reuse-finished",
        action="store_true",
        help="keep a run folder whose training finished with the same options (e.g. the "
        "sweep's run of the chosen setting, copied in) instead of retraining it; its wall "
        "time is then not recorded, its training time is the one the run measured",
    )
    args = parser.parse_args()

    configure_threads()
    device = resolve_device(args.device)
    book = RecordBook(args.topic, hardware_label(device))
    for name in args.datasets:
        setup = SETUPS[name]
        collection = setup.collection()
        for seed in args.seeds:
            console.rule(f"{name} · seed {seed}")
            cfg = TrainConfig.from_dict({**setup.config, "seed": seed, "device": args.device})
            run_dir = args.runs / name / f"seed{seed}"
            reused = args.reuse_finished and (run_dir / "train_summary.json").exists()
            if run_dir.exists() and not reused:  # wall time must cover a whole, uninterrupted run
                shutil.rmtree(run_dir)
            t_start = time.perf_counter()
            result = Trainer(cfg).fit(collection, run_dir)
            run = Run.open(run_dir)
            t0 = time.perf_counter()
            run.cook_soups()
            soup_seconds = time.perf_counter() - t0
            wall_seconds = time.perf_counter() - t_start
            results = run.evaluate("test", METHODS)
            speed = {
                r["method"]: r
                for r in json.loads((run_dir / "eval" / "test" / "comparison.json").read_text())
            }
            for method, ev in results.items():
                book.add(name, method, "top1", ev.top1)
                book.add(name, method, "macro_f1", ev.macro_f1)
                book.add(
                    name, method, "infer_images_per_second", speed[method]["images_per_second"]
                )
                book.add(name, method, "models_at_inference", speed[method]["models"])
                extra = soup_seconds if method.endswith("_soup") else 0.0
                book.add(name, method, "train_seconds", result.train_seconds + extra)
                # everything from images on disk to the soups: decoding, probe head, training,
                # validation, cooking (the 15-minute target)
                if not reused:
                    book.add(name, method, "wall_seconds", wall_seconds)
                book.add(name, method, "train_images_per_second", result.train_images_per_second)
            probe = linear_probe(collection, cfg, device)
            book.add(name, "linear_probe", "top1", probe["top1"])
            book.add(name, "linear_probe", "macro_f1", probe["macro_f1"])
            book.add(name, "linear_probe", "train_seconds", probe["train_seconds"])
            book.add(
                name,
                "linear_probe",
                "train_images_per_second",
                probe["n_train"] / probe["train_seconds"],
            )
            console.print(
                {m: round(ev.macro_f1, 4) for m, ev in results.items()}
                | {"linear_probe": round(probe["macro_f1"], 4)}
            )
            path = book.write()  # after every seed: an interrupted benchmark keeps its records
    console.print(f"records written to {path}")


if __name__ == "__main__":
    main()
