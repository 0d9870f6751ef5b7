"""A run folder and the steps after training: cook soups, evaluate, compare.

:class:`Run` reopens what :class:`~heritage.training.trainer.Trainer` wrote (configuration,
split, checkpoint pool) so that ``heritage soup``, ``heritage evaluate`` and ``heritage refit``
work from the folder alone, in a fresh process, also after an interrupted run. Soups go to
``soups/``, reports to ``eval/<method>/``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from heritage.calibration import apply_temperature
from heritage.collection import Collection
from heritage.config import TrainConfig
from heritage.data import ImageCache, ImageDataset, eval_transform, make_loader
from heritage.evaluation import Evaluation, evaluate, expected_calibration_error, write_report
from heritage.locking import folder_lock
from heritage.model import ImageClassifier, ModelCard, load_card, predict_proba
from heritage.modelfile import model_paths
from heritage.progress import console
from heritage.runtime import Precision, resolve_device
from heritage.soups import ModelSoup, SoftVoting
from heritage.training.pool import CheckpointPool, epoch_of
from heritage.training.runfolder import clear_run, group_members
from heritage.training.trainer import Trainer

METHODS = ("best_checkpoint", "uniform_soup", "greedy_soup", "soft_voting")
REFIT_RECIPES = ("greedy_soup", "uniform_soup")


class RunError(RuntimeError):
    """A run folder lacks something a step needs; the message says which command makes it."""


def _writes_run(what: str) -> Callable:
    """A :class:`Run` method that writes into the run folder holds its lock meanwhile (a
    second writer gets :class:`~heritage.locking.FolderLocked` at once)."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def locked(self: Run, *args, **kwargs):
            with folder_lock(self.folder, what):
                return method(self, *args, **kwargs)

        return locked

    return decorate


@dataclass
class Run:
    """An opened run folder."""

    folder: Path
    config: TrainConfig
    collection: Collection
    pool: CheckpointPool
    card: ModelCard  # of the first checkpoint: classes and preprocessing of every model here
    _cache: ImageCache | None = field(default=None, repr=False)

    @property
    def cache(self) -> ImageCache:
        """Decoded images at the models' preprocessing, shared by every loader of this run."""
        if self._cache is None:
            self._cache = ImageCache(self.card.preprocessing)
        return self._cache

    @classmethod
    def open(cls, folder: str | Path) -> Run:
        folder = Path(folder)
        if not folder.is_dir():
            raise RunError(f"run folder {folder} does not exist; create it with `heritage train`")
        for name in ("config.yaml", "split.csv"):
            if not (folder / name).is_file():
                raise RunError(
                    f"{folder} has no {name}: it is not a heritage run folder "
                    "(start one with `heritage train`)"
                )
        raw = yaml.safe_load((folder / "config.yaml").read_text())
        source, label_column = raw.pop("source"), raw.pop("label_column", "label")
        config = TrainConfig.from_dict(raw)
        collection = Collection.from_split_file(folder / "split.csv", source, label_column)
        pool = CheckpointPool.open(folder / "pool")
        if not pool.entries:
            raise RunError(
                f"{folder} has no checkpoints yet: let `heritage train` finish at "
                "least one epoch (rerun it to resume)"
            )
        card = load_card(pool.paths()[0])
        card_classes = card.classes
        if card_classes != collection.classes:
            raise RunError(
                f"{folder}: the classes in split.csv do not match the checkpoints' "
                f"({len(collection.classes)} vs {len(card_classes)}); was split.csv "
                "edited?"
            )
        return cls(folder, config, collection, pool, card)

    # ------------------------------------------------------------------ data
    def loader(self, split: str, batch_size: int = 64) -> DataLoader:
        """Unaugmented images of one split, decoded once per process and shared."""
        part = self.collection.split(split)
        if len(part) == 0:
            hint = ""
            if split == "val" and self.config.keep_epochs:
                hint = " (a refit trains on train + val; its soup is cooked by `heritage refit`)"
            raise RunError(f"the {split} split of {self.folder} is empty{hint}")
        self.cache.load(part.paths(), f"decoding {split} images")
        ds = ImageDataset(part.paths(), part.targets(), self.cache, eval_transform(self.cache.prep))
        return make_loader(ds, batch_size, shuffle=False, workers=0)

    def bn_loader(self, max_images: int = 1024, batch_size: int = 64) -> DataLoader:
        """Training images for BatchNorm recalibration: a fixed, seeded subset (enough for
        stable statistics, bounded so large collections stay fast). Images are decoded only
        if the loader is used."""
        part = self.collection.split("train")
        rng = np.random.default_rng(self.config.seed)
        idx = np.sort(rng.permutation(len(part))[:max_images])
        all_paths = part.paths()
        paths = [all_paths[i] for i in idx]
        ds = ImageDataset(paths, part.targets()[idx], self.cache, eval_transform(self.cache.prep))
        return make_loader(ds, batch_size, shuffle=True, workers=0, seed=self.config.seed)

    # ------------------------------------------------------------------ steps
    def model_path(self, method: str) -> Path:
        if method == "best_checkpoint":
            return self.pool.folder / self.pool.best("val_macro_f1").name
        return self.folder / "soups" / method

    @_writes_run("cooking soups")
    def cook_soups(
        self,
        metric: str = "macro_f1",
        recalibrate_bn: bool | None = None,
        recipes: tuple[str, ...] = ("uniform", "greedy"),
    ) -> dict[str, ModelSoup]:
        """Cook each recipe from the whole pool and save it under ``soups/``."""
        val, bn = self.loader("val"), self.bn_loader()
        soups = {}
        summary_path = self.folder / "soups" / "soups.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        for recipe in recipes:
            t0 = time.perf_counter()
            console.print(f"[bold]{recipe} soup[/] from {len(self.pool.entries)} checkpoints")
            soup = ModelSoup(
                recipe,
                metric,
                recalibrate_bn=recalibrate_bn,
                device=self.config.device,
                precision=self.config.precision,
            )
            soup.fit(self.pool.paths(), val, bn)
            soup.save(self.model_path(f"{recipe}_soup"))
            soups[recipe] = soup
            summary[f"{recipe}_soup"] = {
                "ingredients": soup.ingredients_,
                f"val_{metric}": soup.val_score_,
                "steps": [s.__dict__ for s in soup.steps_],
                "seconds": time.perf_counter() - t0,
                "recalibrate_bn": recalibrate_bn,  # as asked (None: automatic), for a refit
            }
            console.print(
                f"  → {len(soup.ingredients_)} ingredients, val {metric} {soup.val_score_:.4f}"
                f", temperature {soup.temperature_:.2f}"
            )
        # soft voting is no model file: its temperature (fitted on val) is kept here
        if len(self.collection.split("val")):
            voting = SoftVoting(self.pool.paths(), self.config.device, self.config.precision)
            summary["soft_voting"] = {"temperature": voting.fit(val).temperature_}
        summary_path.write_text(json.dumps(summary, indent=2))
        return soups

    def refit(
        self, out: str | Path, recipe: str = "greedy_soup", *, overwrite: bool = False
    ) -> Path:
        """Train again on train + val with this run's options and cook ``recipe`` from the
        same epochs; returns the refit soup's path (``out/soups/<recipe>``).

        Why: a small collection keeps a fifth of its labelled images for validation. Once
        validation has chosen the options and the soup's ingredients, a second run on train +
        val learns from those images too (AutoGluon's ``refit_full``). Its soup is the uniform
        average of the checkpoints at the epochs this run's soup kept, so nothing is chosen on
        images the refit trained on; judge it on test (``heritage evaluate``). Calling it
        again resumes an interrupted refit; ``overwrite`` deletes whatever run ``out`` holds
        and starts afresh, and without it a run there that is not this refit is refused.
        """
        if recipe not in REFIT_RECIPES:
            raise ValueError(
                f"--recipe {recipe!r} is not a soup to refit; use {' or '.join(REFIT_RECIPES)}"
            )
        members = group_members(self.folder)
        if members is not None:  # its soup's ingredients are runs, not epochs to retrain
            raise RunError(
                f"{self.folder} is a group of runs ({', '.join(members)}), not a run: a refit "
                f"trains one run again; refit one of its runs, e.g. heritage refit "
                f"{members[0] if members else 'RUN'} --out OUT"
            )
        out = Path(out)
        if out.resolve() == self.folder.resolve():  # before overwrite could delete the run
            raise RunError("the refit needs its own folder (--out), not the run's")
        summary_path = self.folder / "soups" / "soups.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if recipe not in summary:
            raise RunError(
                f"{self.folder} has no {recipe} to refit: cook it first with "
                f"`heritage soup {self.folder}`"
            )
        # the epochs are in the ingredients' names (epoch_007): the refit trains its own
        # checkpoints, so it does not need the first run's files to still be in the pool
        found = {epoch_of(name) for name in summary[recipe]["ingredients"]}
        if None in found:
            raise RunError(f"{self.folder}: {recipe} has ingredients that are not pool epochs")
        epochs = sorted(found)
        if len(self.collection.split("val")) == 0:
            raise RunError(f"{self.folder} has no validation split (is it a refit already?)")
        with folder_lock(out, "refitting"):  # held through training and the soup
            if overwrite:
                deleted = clear_run(out)
                if deleted:
                    console.print(f"[bold]overwrite[/]: deleted {', '.join(deleted)} in {out}")
            else:
                _refuse_a_run_that_is_not_a_refit(out)
            return self._refit_into(out, recipe, summary, epochs)

    def _refit_into(self, out: Path, recipe: str, summary: dict, epochs: list[int]) -> Path:
        started = out / "config.yaml"
        if started.is_file():
            before = yaml.safe_load(started.read_text()).get("keep_epochs")
            if before != epochs:
                raise RunError(
                    f"{out} is a refit of epochs {before}, but {self.folder}'s {recipe} now "
                    f"keeps {epochs} (re-cooked since?): choose a new --out"
                )
        config = replace(self.config, keep_epochs=epochs)
        console.print(
            f"[bold]refit[/] of {self.folder} on train + val, keeping epochs {epochs} ({recipe})"
        )
        Trainer(config).fit(self.collection.move_split("val", "train"), out)
        refit = Run.open(out)
        soup = ModelSoup(
            "uniform",
            recalibrate_bn=summary[recipe].get("recalibrate_bn"),  # as the first soup was
            device=self.config.device,
            precision=self.config.precision,
        ).fit(
            [refit.pool.folder / e.name for e in refit.pool.entries if e.epoch in epochs],
            None,
            refit.bn_loader(),
        )
        soup.card_.provenance.update({"recipe": f"{recipe} (refit)", "refit_of": str(self.folder)})
        # nothing is held out in a refit: it keeps the temperature its recipe's soup was
        # given on validation (same epochs, same options, a little more data)
        first = self.model_path(recipe)
        if model_paths(first)[1].is_file():
            soup.card_.temperature = load_card(first).temperature
        path = soup.save(refit.model_path(recipe))
        (out / "soups" / "soups.json").write_text(
            json.dumps({recipe: {"ingredients": soup.ingredients_, "refit_of": str(self.folder)}})
        )
        return path

    @_writes_run("evaluating")
    def evaluate(
        self,
        split: str = "test",
        methods: tuple[str, ...] = METHODS,
    ) -> dict[str, Evaluation]:
        """Evaluate each method on a split; write a report per method and a comparison."""
        loader = self.loader(split)
        targets = loader.dataset.targets
        classes = self.collection.classes
        results: dict[str, Evaluation] = {}
        rows = []
        device = resolve_device(self.config.device)
        precision = Precision.resolve(self.config.precision, device)
        for method in methods:
            if method == "soft_voting":
                voting = SoftVoting(self.pool.paths(), self.config.device, self.config.precision)
                models = [voting.load_member(p) for p in voting.checkpoints]
                temperature = self._soft_voting_temperature(voting)
            else:
                try:
                    path = self.model_path(method)
                except ValueError as exc:  # e.g. no best checkpoint in a refit's pool
                    console.print(f"[yellow]skipping {method}: {exc}[/]")
                    continue
                if not model_paths(path)[0].is_file():
                    how = "`heritage soup` first"
                    if self.config.keep_epochs:  # a refit cooks only the soup it refits
                        how = f"`heritage refit --recipe {method}` into another folder"
                    console.print(f"[yellow]skipping {method}: {path} not found (run {how})[/]")
                    continue
                classifier = ImageClassifier.load(path, self.config.device)
                models, temperature = [classifier.model], classifier.temperature_
            raw, seconds = _timed_mean_proba(models, loader, device, precision)
            n_models = len(models)
            ev = evaluate(targets, apply_temperature(raw, temperature), classes)
            ece_raw = expected_calibration_error(targets, raw)
            results[method] = ev
            extra = {
                "run": str(self.folder),
                "split": split,
                "models_at_inference": n_models,
                "images_per_second": len(targets) / seconds,
                "temperature": temperature,
                "ece_raw": ece_raw,
            }
            write_report(
                ev, self.folder / "eval" / split / method, title=f"{method} — {split}", extra=extra
            )
            rows.append(
                {
                    "method": method,
                    "top1": ev.top1,
                    "macro_f1": ev.macro_f1,
                    "ece": ev.ece,
                    "ece_raw": ece_raw,
                    "temperature": temperature,
                    "models": n_models,
                    "images_per_second": len(targets) / seconds,
                }
            )
        if rows:
            _write_comparison(rows, self.folder / "eval" / split, split)
        return results

    def _soft_voting_temperature(self, voting: SoftVoting) -> float:
        """The temperature ``cook_soups`` fitted for soft voting; fitted now on validation
        for a run cooked by an older heritage; 1.0 without validation (a refit)."""
        summary_path = self.folder / "soups" / "soups.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if "temperature" in summary.get("soft_voting", {}):
            return float(summary["soft_voting"]["temperature"])
        if len(self.collection.split("val")) == 0:
            return 1.0
        return voting.fit(self.loader("val")).temperature_


def _refuse_a_run_that_is_not_a_refit(out: Path) -> None:
    """A refit resumes only a refit: a training run in ``out`` (its config keeps no epochs)
    is refused, naming --overwrite, rather than trained over."""
    config = out / "config.yaml"
    if not config.is_file():
        return
    try:
        keep = (yaml.safe_load(config.read_text()) or {}).get("keep_epochs")
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
        keep = None
    if not keep:
        raise RunError(
            f"{out} already holds a run that is not a refit; choose another --out, or pass "
            "--overwrite to delete it and refit there"
        )


def _timed_mean_proba(
    models: list[nn.Module], loader: DataLoader, device: torch.device, precision: Precision
) -> tuple[np.ndarray, float]:
    """Mean softmax over ``models`` and the seconds their passes over ``loader`` took, measured
    after one warm-up batch per model (loading and first-call costs are not inference)."""
    warm = [next(iter(loader))]
    for model in models:
        predict_proba(model, warm, device, precision)
    t0 = time.perf_counter()
    probas = [predict_proba(model, loader, device, precision) for model in models]
    return np.mean(probas, axis=0), time.perf_counter() - t0


def _write_comparison(rows: list[dict], folder: Path, split: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.json").write_text(json.dumps(rows, indent=2))
    lines = [
        f"# Methods compared on the {split} split",
        "",
        "| method | top-1 | macro-F1 | ECE | ECE before temperature | temperature "
        "| models at inference | images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| [{r['method']}]({r['method']}/report.md) | {r['top1']:.4f} | "
            f"{r['macro_f1']:.4f} | {r['ece']:.4f} | {r['ece_raw']:.4f} | "
            f"{r['temperature']:.2f} | {r['models']} | {r['images_per_second']:.1f} |"
        )
    (folder / "comparison.md").write_text("\n".join(lines) + "\n")
