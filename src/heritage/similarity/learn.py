"""An embedding learnt from triplet judgements: a projection head on frozen features.

Pretrained ImageNet features already order most triplets the way people do (about three in
four on ``material-similarity``); what they miss is which of their directions matter for *this*
notion of "alike". A small head that projects them into a low-dimensional unit sphere,
trained on the judgements, learns exactly that, and because it works on cached features an
epoch over twenty thousand triplets takes milliseconds on a CPU. ``tune_stages`` also trains
the backbone's last stages (on cached activations before them) when the head alone is not
enough.

Two losses:

* ``order`` (default): the probability that ``closer`` is nearer,
  σ(s · (d(r, farther) − d(r, closer))), fitted by cross-entropy to the *share of votes* for
  ``closer``. A 3–2 judgement then pulls less than a 5–0 one, and a 1–1 tie asks for no
  preference at all instead of being a coin-flip label. ``s`` is learnt.
* ``triplet``: the margin loss max(0, d(r, closer) − d(r, farther) + margin) on the
  clear-majority triplets (the FaceNet / Lagunas et al. recipe).

Distances are squared Euclidean between unit vectors (2 − 2·cosine), so a learnt embedding
can be searched with the same cosine index as a pretrained one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heritage.progress import progress_bar
from heritage.similarity.triplets import Agreement, TripletTable, agreement

__all__ = ["HeadConfig", "TripletEmbedding"]

Features = np.ndarray | torch.Tensor
Views = Features | Sequence[Features]


@dataclass
class HeadConfig:
    """How the head is built and trained (defaults chosen on a validation split of
    ``material-similarity``; see ``benchmarks/similarity.md``)."""

    dim: int = 32  # embedding size; 8, 16, 32 and 64 were within half a point on validation
    hidden: int = 0  # 0: a linear projection; > 0: one hidden GELU layer of this width
    loss: Literal["order", "triplet"] = "order"
    margin: float = 0.2  # triplet loss only; squared distances of unit vectors lie in [0, 4]
    lr: float = 1e-2
    weight_decay: float = 1e-2
    epochs: int = 300
    batch_size: int | None = None  # triplets per step; None: all of them (one step per epoch)
    eval_every: int = 10  # epochs between validation checks (early stopping keeps the best)
    # with several views of the items (e.g. renderings), pull each item's views together:
    # the embedding then ignores what differs between views (lighting), so a photo finds the
    # same object seen otherwise; 1.0 was the best of 0 / 0.3 / 1 / 3 on validation agreement
    align_views: float = 1.0
    tune_stages: int = 0  # also train the backbone's last N stages (on cached activations)
    stage_lr: float = 1e-4  # learning rate of those stages
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in ("order", "triplet"):
            raise ValueError(f"loss must be order or triplet, got {self.loss!r}")
        if self.dim < 1 or self.epochs < 1 or self.eval_every < 1:
            raise ValueError("dim, epochs and eval_every must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _as_views(features: Views) -> list[torch.Tensor]:
    """One or several feature matrices of the same items (e.g. two renderings)."""
    if isinstance(features, np.ndarray | torch.Tensor):
        features = [features]
    views = [torch.as_tensor(np.asarray(f) if isinstance(f, np.ndarray) else f) for f in features]
    views = [v.float() for v in views]
    if not views or any(len(v) != len(views[0]) for v in views):
        raise ValueError("every view must have one row per item")
    return views


def _epoch_info(record: dict, best: float) -> str:
    """The progress bar's text after an epoch: its loss, and its validation agreement (with
    the best so far) when it was validated."""
    info = f"loss {record['loss']:.4f}"
    if "val_agreement" in record:
        info += f" · val agreement {record['val_agreement']:.4f} (best {best:.4f})"
    return info


class TripletEmbedding:
    """Projection head (optionally with the backbone's last stages) trained on triplets.

    ``fit(triplets, features)``: ``features`` has one row per item of ``triplets.items`` (or is
    a list of such matrices, *views* of the same items such as two renderings: the head is then
    shared, trained on all of them, and pulls each item's views together, ``align_views``).
    With ``val`` triplets, training keeps the epoch with the best validation agreement. Learnt
    state: ``head_``, ``stages_`` (or None), ``mean_``, ``scale_`` (feature standardisation),
    ``log_scale_`` (the order loss's sharpness), ``history_``, ``best_epoch_``.
    """

    def __init__(self, config: HeadConfig | None = None, stages: nn.Module | None = None) -> None:
        self.config = config or HeadConfig()
        self.stages = stages
        if self.config.tune_stages and stages is None:
            raise ValueError(
                "tune_stages > 0 needs the trainable stages: "
                "TripletEmbedding(config, stages=ImageEmbedder(...).trainable_stages(n))"
            )

    # ------------------------------------------------------------------ embedding
    def _pooled(self, x: torch.Tensor, stages: nn.Module | None) -> torch.Tensor:
        return stages(x).flatten(1) if stages is not None else x

    def _embed(self, x: torch.Tensor, stages: nn.Module | None, head: nn.Module) -> torch.Tensor:
        z = (self._pooled(x, stages) - self.mean_) / self.scale_
        return F.normalize(head(z), dim=1)

    def transform(self, features: Features, batch_size: int = 4096) -> np.ndarray:
        """Unit-length embeddings, one row per feature row (stage inputs if tuning stages)."""
        x = _as_views(features)[0]
        self.head_.eval()
        if self.stages_ is not None:
            self.stages_.eval()
        with torch.no_grad():
            out = [
                self._embed(x[i : i + batch_size], self.stages_, self.head_)
                for i in range(0, len(x), batch_size)
            ]
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.dim), np.float32)

    def margins(self, triplets: TripletTable, features: Views) -> np.ndarray:
        """``d(r, farther) − d(r, closer)`` per triplet (positive = agrees); averaged over
        views when several are given."""
        out = []
        for view in _as_views(features):
            e = self.transform(view).astype(np.float64)
            r, c, f = e[triplets.reference], e[triplets.closer], e[triplets.farther]
            out.append(((r - f) ** 2).sum(1) - ((r - c) ** 2).sum(1))
        return np.mean(out, axis=0)

    def agreement(self, triplets: TripletTable, features: Views) -> Agreement:
        return agreement(self.margins(triplets, features), triplets)

    # ------------------------------------------------------------------ training
    def _loss(
        self,
        e: torch.Tensor,
        batch: TripletTable,
        log_scale: torch.Tensor,
        weight: torch.Tensor,
    ) -> torch.Tensor:
        r, c, f = (torch.as_tensor(a) for a in (batch.reference, batch.closer, batch.farther))
        n = len(e)
        if n <= 2048:  # all pairwise distances, then a 1-D gather: backward stays cheap on CPU
            flat = (2.0 - 2.0 * e @ e.T).reshape(-1)  # unit vectors: |a − b|² = 2 − 2 a·b
            d_close, d_far = flat[r * n + c], flat[r * n + f]
        else:
            d_close = ((e[r] - e[c]) ** 2).sum(1)
            d_far = ((e[r] - e[f]) ** 2).sum(1)
        if self.config.loss == "order":
            target = torch.as_tensor(batch.vote_share, dtype=torch.float32)
            per = F.binary_cross_entropy_with_logits(
                log_scale.exp() * (d_far - d_close), target, reduction="none"
            )
        else:
            per = F.relu(d_close - d_far + self.config.margin)
            weight = weight * torch.as_tensor(batch.clear, dtype=torch.float32)
        return (per * weight).sum() / weight.sum().clamp_min(1e-12)

    @staticmethod
    def _misalignment(embedded: list[torch.Tensor]) -> torch.Tensor:
        """Mean squared distance between the views of the same item, over pairs of views."""
        pairs = [
            ((a - b) ** 2).sum(1).mean() for i, a in enumerate(embedded) for b in embedded[i + 1 :]
        ]
        return sum(pairs) / len(pairs)

    def fit(
        self,
        triplets: TripletTable,
        features: Views,
        *,
        val: TripletTable | None = None,
        sample_weight: np.ndarray | None = None,
        description: str = "learning from triplets",
    ) -> TripletEmbedding:
        """Train on ``triplets``; ``sample_weight`` weighs each triplet's loss (e.g. to favour
        one context); ``val`` chooses the epoch to keep."""
        cfg = self.config
        if len(triplets) == 0:
            raise ValueError("no triplets to learn from")
        views = _as_views(features)
        if len(views[0]) != len(triplets.items):
            raise ValueError(
                f"features have {len(views[0])} rows but the triplets index {len(triplets.items)}"
                " items; give one row per item, in the order of triplets.items"
            )
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        stages = copy.deepcopy(self.stages) if self.stages is not None else None
        head = self._new_head(self._standardise(views, stages))
        log_scale = nn.Parameter(torch.tensor(2.0))
        groups = [
            {"params": [*head.parameters(), log_scale], "lr": cfg.lr},
        ]
        if stages is not None:
            groups.append({"params": list(stages.parameters()), "lr": cfg.stage_lr})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        weights = (
            np.ones(len(triplets)) if sample_weight is None else np.asarray(sample_weight, float)
        )
        if weights.shape != (len(triplets),):
            raise ValueError("sample_weight needs one value per triplet")
        self.history_: list[dict] = []
        self.head_, self.stages_ = head, stages
        best = (-1.0, 0, None)
        n = len(triplets)
        bs = cfg.batch_size or n
        with progress_bar() as bar:
            task = bar.add_task(description, total=cfg.epochs)
            for epoch in range(1, cfg.epochs + 1):
                head.train()
                if stages is not None:
                    stages.train()
                order = torch.randperm(n, generator=gen).numpy() if bs < n else np.arange(n)
                total = 0.0
                for start in range(0, n, bs):
                    index = order[start : start + bs]
                    weight = torch.as_tensor(weights[index], dtype=torch.float32)
                    loss = self._batch_loss(triplets, index, views, weight, stages, head, log_scale)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(index)
                record = {"epoch": epoch, "loss": total / n}
                if val is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                    self.log_scale_ = float(log_scale.detach())
                    score = self.agreement(val, views).all
                    record["val_agreement"] = score
                    if score > best[0]:
                        best = (score, epoch, self._snapshot(head, stages, log_scale))
                self.history_.append(record)
                bar.update(task, advance=1, info=_epoch_info(record, best[0]))
        if best[2] is not None:
            head, stages, log_value = best[2]
            self.best_epoch_ = best[1]
        else:
            log_value, self.best_epoch_ = float(log_scale.detach()), cfg.epochs
        self.head_, self.stages_, self.log_scale_ = head, stages, float(log_value)
        return self

    def _standardise(self, views: list[torch.Tensor], stages: nn.Module | None) -> int:
        """Set ``mean_`` and ``scale_`` from every item in every view and return the pooled
        width. Dividing by sqrt(width) as well keeps initial distances O(1) whatever the width."""
        with torch.no_grad():
            pooled = torch.cat([self._pooled(v, stages) for v in views])
        self.mean_ = pooled.mean(0)
        self.scale_ = (pooled.std(0) + 1e-6) * pooled.shape[1] ** 0.5
        return pooled.shape[1]

    def _new_head(self, width: int) -> nn.Module:
        """A freshly initialised head (from torch's global generator, seeded by :meth:`fit`)."""
        cfg = self.config
        if cfg.hidden:
            return nn.Sequential(
                nn.Linear(width, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.dim)
            )
        return nn.Linear(width, cfg.dim)

    def _batch_loss(
        self,
        triplets: TripletTable,
        index: np.ndarray,
        views: list[torch.Tensor],
        weight: torch.Tensor,
        stages: nn.Module | None,
        head: nn.Module,
        log_scale: torch.Tensor,
    ) -> torch.Tensor:
        """The loss of triplets ``index``, averaged over the views, plus the penalty for views
        that disagree. Only the items these triplets use are embedded: a forward pass over
        every item would cost far more than the step itself."""
        batch = triplets.subset(index)
        used = np.unique(np.concatenate([batch.reference, batch.closer, batch.farther]))
        local = np.full(len(triplets.items), -1, dtype=np.int64)
        local[used] = np.arange(len(used))
        batch = TripletTable(
            triplets.items,
            local[batch.reference],
            local[batch.closer],
            local[batch.farther],
            batch.votes_closer,
            batch.votes_farther,
        )
        embedded = [self._embed(v[used], stages, head) for v in views]
        loss = sum(self._loss(e, batch, log_scale, weight) for e in embedded) / len(embedded)
        if len(embedded) > 1 and self.config.align_views > 0:
            loss = loss + self.config.align_views * self._misalignment(embedded)
        return loss

    @staticmethod
    def _snapshot(head: nn.Module, stages: nn.Module | None, log_scale: torch.Tensor):
        return (
            copy.deepcopy(head),
            copy.deepcopy(stages) if stages is not None else None,
            float(log_scale.detach()),
        )

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path, name: str = "head") -> Path:
        """``NAME.safetensors`` (head, stages, standardisation) and ``NAME.json`` (config)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"head.{k}": v.contiguous() for k, v in self.head_.state_dict().items()}
        if self.stages_ is not None:
            tensors |= {f"stages.{k}": v.contiguous() for k, v in self.stages_.state_dict().items()}
        tensors |= {"mean": self.mean_.contiguous(), "scale": self.scale_.contiguous()}
        save_file(tensors, str(folder / f"{name}.safetensors"))
        card = {
            "config": self.config.to_dict(),
            "input_dim": int(self.mean_.shape[0]),
            "log_scale": self.log_scale_,
            "best_epoch": self.best_epoch_,
            "history": self.history_,
        }
        (folder / f"{name}.json").write_text(json.dumps(card, indent=1))
        return folder / f"{name}.safetensors"

    @classmethod
    def load(
        cls, folder: str | Path, name: str = "head", stages: nn.Module | None = None
    ) -> TripletEmbedding:
        """A saved head; a head with tuned stages needs the untrained stages module of the same
        backbone to load them into (``ImageEmbedder.trainable_stages``)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        card = json.loads((folder / f"{name}.json").read_text())
        cfg = HeadConfig(**card["config"])
        tensors = load_file(str(folder / f"{name}.safetensors"))
        model = cls(cfg, stages=stages)
        width = card["input_dim"]
        head = (
            nn.Sequential(nn.Linear(width, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.dim))
            if cfg.hidden
            else nn.Linear(width, cfg.dim)
        )
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        model.stages_ = None
        if cfg.tune_stages:
            model.stages_ = copy.deepcopy(stages)
            model.stages_.load_state_dict(
                {k[7:]: v for k, v in tensors.items() if k.startswith("stages.")}
            )
        model.head_, model.mean_, model.scale_ = head, tensors["mean"], tensors["scale"]
        model.log_scale_, model.best_epoch_ = card["log_scale"], card["best_epoch"]
        model.history_ = card["history"]
        return model
