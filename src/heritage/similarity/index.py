"""A nearest-neighbour index over a collection's embeddings (FAISS), growable in place.

Vectors are normalised and searched by inner product, so distances are cosine distances
(1 − cosine similarity), the distance the pretrained and the learnt embeddings are meant for.

``kind``:

* ``flat`` — exact search. On 100,000 vectors one query scans them all: under a millisecond
  at the 32 dimensions of a learnt head, but 50–60 ms at the 1,280 of a raw EfficientNet
  embedding on two busy cores (memory bound); see ``benchmarks/similarity.md``.
* ``ivf`` — inverted lists (√n k-means cells, ``nprobe`` of them searched): approximate, about
  25× faster there (2–3 ms) and exact in practice on clustered embeddings; on structureless
  random vectors its recall collapses (0.11 at 1,280 dimensions).
* ``auto`` (default) — ``flat`` until ``n × dim`` passes ``AUTO_IVF_CELLS`` (≈ 5 ms per flat
  query), ``ivf`` beyond.

The raw vectors are kept next to the FAISS index (``vectors.npy``), so an index can be re-cut
(another kind, retrained cells after the collection has grown) without re-embedding images;
adding vectors never re-embeds what is already there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from heritage.similarity.embedding import normalise

__all__ = ["AUTO_IVF_CELLS", "SimilarityIndex"]

IndexKind = Literal["auto", "flat", "ivf"]
#: n × dim above which ``auto`` switches to IVF (about 5 ms per exact query on 2 cores)
AUTO_IVF_CELLS = 12_000_000


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - a dependency, but say what to do
        raise ImportError("similarity search needs FAISS: pip install faiss-cpu") from exc
    return faiss


class SimilarityIndex:
    """Ids and their unit vectors, searchable by cosine distance.

    ``meta`` is free JSON saved with the index (heritage records how the vectors were made, so
    that a query is embedded the same way).
    """

    def __init__(
        self,
        dim: int,
        kind: IndexKind = "auto",
        *,
        nprobe: int = 16,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if kind not in ("auto", "flat", "ivf"):
            raise ValueError(f"kind must be auto, flat or ivf, got {kind!r}")
        self.dim = int(dim)
        self.kind = kind
        self.nprobe = nprobe
        self.meta = dict(meta or {})
        self.ids: list[str] = []
        self._positions: dict[str, int] = {}
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._index: Any = None
        self._trained_on = 0  # vectors the IVF cells were trained on

    # ------------------------------------------------------------------ contents
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._positions

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors

    def effective_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        return "ivf" if len(self) * self.dim > AUTO_IVF_CELLS else "flat"

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> SimilarityIndex:
        """Add vectors under new ids (an id already in the index is an error: rebuild or
        skip it); the FAISS index grows in place."""
        vectors = normalise(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        ids = [str(i) for i in ids]
        if len(ids) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in one add")
        clash = [i for i in ids if i in self._positions]
        if clash:
            raise ValueError(f"{len(clash)} id(s) already in the index, e.g. {clash[0]!r}")
        start = len(self.ids)
        self.ids += ids
        self._positions.update({i: start + n for n, i in enumerate(ids)})
        self._vectors = np.concatenate([self._vectors, vectors])
        kind = self.effective_kind()
        needs_rebuild = (
            self._index is None
            or (kind == "ivf" and not self._is_ivf())
            or (kind == "ivf" and len(self) >= 2 * max(self._trained_on, 1))
        )
        if needs_rebuild:
            self._rebuild()
        else:
            self._index.add(vectors)
        return self

    def _is_ivf(self) -> bool:
        return self._index is not None and hasattr(self._index, "nprobe")

    def _rebuild(self) -> None:
        """A fresh FAISS index over every stored vector (IVF cells retrained on them)."""
        faiss = _faiss()
        if self.effective_kind() == "flat" or len(self) < 256:
            self._index = faiss.IndexFlatIP(self.dim)
            self._trained_on = 0
        else:
            n_cells = int(np.clip(np.sqrt(len(self)), 16, 65536))  # FAISS: ~sqrt(n) cells
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, n_cells, faiss.METRIC_INNER_PRODUCT)
            sample = self._vectors
            if len(sample) > 64 * n_cells:  # FAISS's advice: ~40–256 points per cell
                pick = np.random.default_rng(0).choice(len(sample), 64 * n_cells, replace=False)
                sample = sample[np.sort(pick)]
            index.train(sample)
            index.nprobe = self.nprobe
            self._index = index
            self._trained_on = len(self)
        if len(self):
            self._index.add(self._vectors)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` nearest ids per query and their cosine distances (ascending).

        An IVF index can find fewer than ``k`` (the probed cells hold fewer vectors): that
        row of ids is then shorter, and the distances past its end are ``inf``."""
        if len(self) == 0:
            raise ValueError("the index is empty")
        q = normalise(np.asarray(queries, dtype=np.float32).reshape(-1, self.dim))
        k = min(k, len(self))
        faiss = _faiss()
        threads = faiss.omp_get_max_threads()
        if len(q) < 16:  # a few queries: OpenMP start-up and contention cost more than they save
            faiss.omp_set_num_threads(1)  # (8.7 vs 0.5 ms per query on 2 busy cores)
        try:
            sims, pos = self._index.search(q, k)
        finally:
            faiss.omp_set_num_threads(threads)
        ids = [[self.ids[p] for p in row if p >= 0] for row in pos]
        distances = np.where(pos >= 0, 1.0 - sims, np.inf).astype(np.float32)
        return ids, distances

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """``index.faiss``, ``vectors.npy``, ``ids.json`` and ``index.json`` (kind, meta)."""
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self._vectors)
        (folder / "ids.json").write_text(json.dumps(self.ids))
        if self._index is not None:
            faiss.write_index(self._index, str(folder / "index.faiss"))
        info = {
            "dim": self.dim,
            "kind": self.kind,
            "nprobe": self.nprobe,
            "trained_on": self._trained_on,
            "count": len(self),
            "meta": self.meta,
        }
        (folder / "index.json").write_text(json.dumps(info, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SimilarityIndex:
        faiss = _faiss()
        folder = Path(folder)
        if not (folder / "index.json").is_file():
            raise FileNotFoundError(f"{folder} holds no index (index.json); build one first")
        info = json.loads((folder / "index.json").read_text())
        index = cls(info["dim"], info["kind"], nprobe=info["nprobe"], meta=info["meta"])
        index.ids = json.loads((folder / "ids.json").read_text())
        index._positions = {i: n for n, i in enumerate(index.ids)}
        index._vectors = np.load(folder / "vectors.npy")
        if len(index.ids) != len(index._vectors):
            raise ValueError(f"{folder}: ids.json and vectors.npy disagree; rebuild the index")
        index._trained_on = info.get("trained_on", 0)
        if (folder / "index.faiss").is_file():
            index._index = faiss.read_index(str(folder / "index.faiss"))
            if index._index.ntotal != len(index.ids):
                index._rebuild()
            elif index._is_ivf():
                index._index.nprobe = index.nprobe
        elif len(index.ids):
            index._rebuild()
        return index
