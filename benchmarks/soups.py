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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from heritage.backbones import create_backbone, resolve_preprocessing
from heritage.calibration import softmax
from heritage.collection import Collection
from heritage.config import TrainConfig
from heritage.data import ImageCache, ImageDataset, eval_transform, make_loader
from heritage.evaluation import evaluate
from heritage.model import predict_logits
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


def plain_finetune(collection: Collection, cfg: TrainConfig, device: torch.device) -> dict:
    """What a user gets from twenty lines of timm, the baseline every heritage method must
    beat: the pretrained backbone with a random head, every layer and BatchNorm statistic
    trained, AdamW and one cosine decay over the same epochs, image size and augmentation,
    cross-entropy; the last epoch's model is scored on test (no validation, no selection)."""
    from heritage.data import train_transform

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model = create_backbone(
        cfg.backbone, len(collection.classes), weights=cfg.weights, pretrained=cfg.pretrained
    ).to(device)
    prep = resolve_preprocessing(model, cfg.image_size, cfg.resize_mode)
    cache, train = ImageCache(prep), collection.split("train")
    cache.load(train.paths())
    ds = ImageDataset(train.paths(), train.targets(), cache, train_transform(prep, cfg.augment))
    loader = make_loader(ds, cfg.batch_size, shuffle=True, workers=0, seed=cfg.seed, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * len(loader))
    for _ in range(cfg.epochs):
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - t0
    test = collection.split("test")
    cache.load(test.paths())
    ds = ImageDataset(test.paths(), test.targets(), cache, eval_transform(prep))
    logits, y = predict_logits(model, make_loader(ds, 64, shuffle=False, workers=0), device)
    ev = evaluate(y, softmax(logits), collection.classes)
    return {"top1": ev.top1, "macro_f1": ev.macro_f1, "train_seconds": seconds, "n": len(train)}


def heritage_rows(
    book: RecordBook,
    name: str,
    collection: Collection,
    cfg: TrainConfig,
    run_dir: Path,
    reuse: bool,
) -> dict[str, float]:
    """Train one run, cook its soups, and record every method on test (and the probe)."""
    reused = reuse and (run_dir / "train_summary.json").exists()
    if run_dir.exists() and not reused:  # wall time must cover a whole, uninterrupted run
        shutil.rmtree(run_dir)
    t_start = time.perf_counter()
    result = Trainer(cfg).fit(collection, run_dir)
    run = Run.open(run_dir)
    t0 = time.perf_counter()
    run.cook_soups()
    soup_seconds = time.perf_counter() - t0
    wall_seconds = time.perf_counter() - t_start
    results = _record_run(book, name, run, "", result.train_seconds, soup_seconds)
    for method in results:
        # everything from images on disk to the soups: decoding, probe head, training,
        # validation, cooking (the 15-minute target)
        if not reused:
            book.add(name, method, "wall_seconds", wall_seconds)
        book.add(name, method, "train_images_per_second", result.train_images_per_second)
    probe = linear_probe(collection, cfg, cfg_device(cfg))
    book.add(name, "linear_probe", "top1", probe["top1"])
    book.add(name, "linear_probe", "macro_f1", probe["macro_f1"])
    book.add(name, "linear_probe", "train_seconds", probe["train_seconds"])
    book.add(
        name, "linear_probe", "train_images_per_second", probe["n_train"] / probe["train_seconds"]
    )
    return {m: ev.macro_f1 for m, ev in results.items()} | {"linear_probe": probe["macro_f1"]}


def cfg_device(cfg: TrainConfig) -> torch.device:
    return resolve_device(cfg.device)


def _record_run(
    book: RecordBook, name: str, run: Run, prefix: str, train_seconds: float, soup_seconds: float
) -> dict:
    """A run's (or group's) methods on test, recorded as ``prefix + method``."""
    results = run.evaluate("test", METHODS)
    speed = {
        r["method"]: r
        for r in json.loads((run.folder / "eval" / "test" / "comparison.json").read_text())
    }
    for method, ev in results.items():
        row = prefix + method
        book.add(name, row, "top1", ev.top1)
        book.add(name, row, "macro_f1", ev.macro_f1)
        book.add(name, row, "infer_images_per_second", speed[method]["images_per_second"])
        book.add(name, row, "models_at_inference", speed[method]["models"])
        extra = soup_seconds if method.endswith("_soup") else 0.0
        book.add(name, row, "train_seconds", train_seconds + extra)
    return results


def cross_run_rows(
    book: RecordBook,
    name: str,
    collection: Collection,
    cfg: TrainConfig,
    folder: Path,
    members: int,
) -> dict[str, float]:
    """A group of ``members`` runs from one shared start (seeds differ), gathered and cooked:
    cross_run_uniform_soup, cross_run_greedy_soup, cross_run_soft_voting (and the members'
    best single checkpoint as cross_run_best_checkpoint)."""
    from heritage.group import gather_runs

    start = folder / "start"
    if not (start / "init.json").is_file():
        Trainer(cfg).fit(collection, start, start_only=True)
    runs, seconds = [], 0.0
    for i in range(members):
        member = replace(cfg, seed=cfg.seed * 100 + i + 1, init_from=str(start))
        run_dir = folder / f"member{i}"
        seconds += Trainer(member).fit(collection, run_dir).train_seconds
        runs.append(run_dir)
    t0 = time.perf_counter()
    group = gather_runs(runs, folder / "group")
    group.cook_soups()
    results = _record_run(book, name, group, "cross_run_", seconds, time.perf_counter() - t0)
    for method in results:
        book.add(name, f"cross_run_{method}", "runs", members)
    return {f"cross_run_{m}": ev.macro_f1 for m, ev in results.items()}


def long_run_rows(
    book: RecordBook,
    name: str,
    collection: Collection,
    cfg: TrainConfig,
    run_dir: Path,
    times: int,
) -> dict[str, float]:
    """The compute-matched single run: ``times`` as many epochs (and restart cycles), its
    greedy soup recorded as long_run."""
    long = replace(cfg, epochs=cfg.epochs * times)
    result = Trainer(long).fit(collection, run_dir)
    run = Run.open(run_dir)
    t0 = time.perf_counter()
    run.cook_soups(recipes=("greedy",))
    ev = run.evaluate("test", ("greedy_soup",))["greedy_soup"]
    book.add(name, "long_run", "top1", ev.top1)
    book.add(name, "long_run", "macro_f1", ev.macro_f1)
    book.add(name, "long_run", "train_seconds", result.train_seconds + time.perf_counter() - t0)
    book.add(name, "long_run", "epochs", long.epochs)
    return {"long_run": ev.macro_f1}


def _greedy_val(run_dir: Path) -> float:
    """The greedy soup's validation macro-F1, as cooking recorded it (soups/soups.json)."""
    return json.loads((run_dir / "soups" / "soups.json").read_text())["greedy_soup"]["val_macro_f1"]


def ema_rows(
    book: RecordBook,
    name: str,
    collection: Collection,
    cfg: TrainConfig,
    run_dir: Path,
    plain_dir: Path,
) -> dict[str, float]:
    """The same run with EMA weights as extra pool ingredients (``average: ema``): its methods
    on test as ``ema_<method>``, and both greedy soups' validation macro-F1, on which EMA is
    adopted as a default or not (``plain_dir``: the run without EMA, from ``heritage``)."""
    ema = replace(cfg, average="ema")
    result = Trainer(ema).fit(collection, run_dir)
    run = Run.open(run_dir)
    t0 = time.perf_counter()
    run.cook_soups()
    results = _record_run(book, name, run, "ema_", result.train_seconds, time.perf_counter() - t0)
    book.add(name, "ema_greedy_soup", "val_macro_f1", _greedy_val(run_dir))
    if (plain_dir / "soups" / "soups.json").is_file():
        book.add(name, "greedy_soup", "val_macro_f1", _greedy_val(plain_dir))
    return {f"ema_{m}": ev.macro_f1 for m, ev in results.items()}


def plain_rows(
    book: RecordBook, name: str, collection: Collection, cfg: TrainConfig
) -> dict[str, float]:
    plain = plain_finetune(collection, cfg, cfg_device(cfg))
    for metric in ("top1", "macro_f1", "train_seconds"):
        book.add(name, "plain_finetune", metric, plain[metric])
    return {"plain_finetune": plain["macro_f1"]}


GROUPS = ("heritage", "plain_finetune", "cross_run", "long_run", "ema")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs" / "soups")
    parser.add_argument("--topic", default="soups", help="results file name")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["heritage", "plain_finetune"],
        choices=GROUPS,
        help="heritage: one run's best checkpoint, soups, soft voting and the linear probe; "
        "plain_finetune: the timm baseline; cross_run: soups across --members runs from one "
        "start (a seed group per seed); long_run: one run --members times longer; ema: the "
        "heritage run with EMA weights as extra ingredients (its own run folder)",
    )
    parser.add_argument("--members", type=int, default=4, help="runs per cross-run group")
    parser.add_argument(
        "--image-size", type=int, help="cross_run and long_run only: a smaller image (stated)"
    )
    parser.add_argument(
        "--reuse-finished",
        action="store_true",
        help="keep a run folder whose training finished with the same options (e.g. the "
        "sweep's run of the chosen setting, copied in) instead of retraining it; its wall "
        "time is then not recorded, its training time is the one the run measured",
    )
    args = parser.parse_args()

    configure_threads()
    book = RecordBook(args.topic, hardware_label(resolve_device(args.device)))
    for name in args.datasets:
        setup = SETUPS[name]
        collection = setup.collection()
        for seed in args.seeds:
            console.rule(f"{name} · seed {seed}")
            cfg = TrainConfig.from_dict({**setup.config, "seed": seed, "device": args.device})
            small = cfg if args.image_size is None else replace_size(cfg, args.image_size)
            scores: dict[str, float] = {}
            if "heritage" in args.methods:
                run_dir = args.runs / name / f"seed{seed}"
                scores |= heritage_rows(book, name, collection, cfg, run_dir, args.reuse_finished)
            if "plain_finetune" in args.methods:
                scores |= plain_rows(book, name, collection, cfg)
            if "cross_run" in args.methods:
                folder = args.runs / name / f"cross_seed{seed}"
                scores |= cross_run_rows(book, name, collection, small, folder, args.members)
            if "long_run" in args.methods:
                run_dir = args.runs / name / f"long_seed{seed}"
                scores |= long_run_rows(book, name, collection, small, run_dir, args.members)
            if "ema" in args.methods:
                run_dir, plain_dir = (
                    args.runs / name / f"ema_seed{seed}",
                    args.runs / name / f"seed{seed}",
                )
                scores |= ema_rows(book, name, collection, cfg, run_dir, plain_dir)
            console.print({m: round(v, 4) for m, v in scores.items()})
            path = book.write()  # after every seed: an interrupted benchmark keeps its records
    console.print(f"records written to {path}")


def replace_size(cfg: TrainConfig, size: int) -> TrainConfig:
    return replace(cfg, image_size=size)


if __name__ == "__main__":
    main()
