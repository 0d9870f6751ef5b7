"""PROV-O provenance of a batch of predictions: the activity, the model it used, the software.

A curator reading a predicted value should be able to ask *which model said so, when, and
which version of the software ran it*. Each export describes one ``prov:Activity`` (one
prediction run) with its start and end time, ``prov:used`` the model — a ``prov:Entity``
identified by the SHA-256 of its weights, so two files with the same name but different
weights are told apart — and ``prov:wasAssociatedWith`` heritage as a
``prov:SoftwareAgent`` with its version.

Times are part of the graph, so they must not be "now": by default they are the
modification time of the predictions file (when the prediction run wrote it), which keeps
exports of the same file identical.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from heritage.kg.terms import DCTERMS, HER, PROV, RDF, RDFS, SCHEMA, XSD, iri, literal, typed
from heritage.kg.vocabulary import UriScheme

__all__ = ["Activity", "ModelEntity", "file_sha256", "provenance_lines"]

_CHUNK = 1 << 20
# file names of a metadata model folder (heritage.metadata.predictor; a test keeps them in step):
# the files that hold the fitted model, and its card
MODEL_FILES = ("predictor.json", "predictor.safetensors")
CARD_FILE = "card.json"
# what heritage before the safe format saved (a pickle): only hashed here, never opened
LEGACY_MODEL_FILE = "predictor.joblib"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelEntity:
    """The model a prediction run used: a name, the SHA-256 of its weights, what kind of
    model it is, and when it was made (from its card, if it has one)."""

    name: str
    sha256: str
    kind: str = "model"
    created: str | None = None
    files: tuple[str, ...] = ()

    @classmethod
    def from_path(cls, path: str | Path) -> ModelEntity:
        """A metadata model folder (``predictor.json`` + ``predictor.safetensors`` +
        ``card.json``; an older heritage's ``predictor.joblib`` is hashed too, never opened),
        an image model file (``NAME``, ``NAME.safetensors`` or ``NAME.json``), or any other
        file (hashed as is). Several weight files are hashed as the hash of their names and
        hashes."""
        path = Path(path)
        card: dict[str, Any] = {}
        if path.is_dir():
            files = [path / f for f in MODEL_FILES]
            if not all(f.is_file() for f in files):
                files = [path / LEGACY_MODEL_FILE]
            if not files[0].is_file():
                raise FileNotFoundError(
                    f"{path} holds no {' + '.join(MODEL_FILES)}; pass a folder written by "
                    "`heritage metadata fit` or an image model file (NAME.safetensors)"
                )
            kind, name = "metadata", path.name
            card = _read_json(path / CARD_FILE)
        else:
            stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
            safetensors = stem.with_name(stem.name + ".safetensors")
            if safetensors.is_file():
                files, kind, name = [safetensors], "image classifier", stem.name
                card = _read_json(stem.with_name(stem.name + ".json"))
            elif path.is_file():
                files, kind, name = [path], "model", path.name
            else:
                raise FileNotFoundError(f"model {path} not found")
        hashes = [file_sha256(f) for f in files]
        if len(files) == 1:
            sha = hashes[0]
        else:
            joined = "".join(f"{f.name}\0{h}\n" for f, h in zip(files, hashes, strict=True))
            sha = hashlib.sha256(joined.encode()).hexdigest()
        created = card.get("created") or card.get("provenance", {}).get("created")
        return cls(name, sha, kind, _iso(created) if created else None, tuple(map(str, files)))

    @property
    def command(self) -> str:
        """The heritage command that predicts with a model of this kind: the label of a
        prediction run's activity."""
        return "heritage metadata predict" if self.kind == "metadata" else "heritage predict"


@dataclass(frozen=True)
class Activity:
    """One prediction run: when it started and ended, what it used, and a label.

    ``started``/``ended`` are timezone-aware datetimes (naive ones are taken as UTC).
    """

    started: datetime
    ended: datetime
    model: ModelEntity
    label: str = "heritage prediction"

    def __post_init__(self) -> None:
        started, ended = _utc(self.started), _utc(self.ended)
        if ended < started:
            raise ValueError(f"the activity ends ({ended}) before it starts ({started})")
        object.__setattr__(self, "started", started)
        object.__setattr__(self, "ended", ended)

    @classmethod
    def from_file(
        cls,
        predictions: str | Path,
        model: ModelEntity,
        label: str = "heritage prediction",
        started: datetime | None = None,
        ended: datetime | None = None,
    ) -> Activity:
        """Times from the predictions file's modification time unless given: the run ended
        when it wrote the file; without a start time, it is recorded as instantaneous."""
        mtime = datetime.fromtimestamp(int(Path(predictions).stat().st_mtime), timezone.utc)
        ended = ended or mtime
        return cls(started or ended, ended, model, label)

    def key(self, content: str) -> str:
        """A short hash of what makes this run itself: model, times and the predictions'
        content (``content``: a digest of the rows)."""
        text = "\x1f".join(
            [self.model.sha256, _xsd_datetime(self.started), _xsd_datetime(self.ended), content]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def provenance_lines(activity: Activity, key: str, uris: UriScheme) -> list[str]:
    """N-Triples for the activity, its model entity and the software agent."""
    from heritage import __version__

    act, agent = iri(uris.activity(key)), iri(uris.agent(__version__))
    started = typed(_xsd_datetime(activity.started), XSD + "dateTime")
    ended = typed(_xsd_datetime(activity.ended), XSD + "dateTime")
    out = [
        f"{act} <{RDF}type> <{PROV}Activity> .\n",
        f"{act} <{RDFS}label> {literal(activity.label)} .\n",
        f"{act} <{PROV}startedAtTime> {started} .\n",
        f"{act} <{PROV}endedAtTime> {ended} .\n",
        f"{act} <{PROV}wasAssociatedWith> {agent} .\n",
    ]
    model = activity.model
    m = iri(uris.model(model.sha256))
    out += [
        f"{act} <{PROV}used> {m} .\n",
        f"{m} <{RDF}type> <{PROV}Entity> .\n",
        f"{m} <{RDF}type> <{HER}Model> .\n",
        f"{m} <{RDFS}label> {literal(model.name)} .\n",
        f"{m} <{HER}sha256> {typed(model.sha256, XSD + 'hexBinary')} .\n",
        f"{m} <{HER}modelKind> {literal(model.kind)} .\n",
    ]
    if model.created:
        out.append(f"{m} <{DCTERMS}created> {typed(model.created, XSD + 'dateTime')} .\n")
    out += [
        f"{agent} <{RDF}type> <{PROV}SoftwareAgent> .\n",
        f"{agent} <{RDFS}label> {literal(f'heritage {__version__}')} .\n",
        f"{agent} <{SCHEMA}name> {literal('heritage')} .\n",
        f"{agent} <{SCHEMA}softwareVersion> {literal(__version__)} .\n",
    ]
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _xsd_datetime(value: datetime) -> str:
    return _utc(value).astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso(text: str) -> str | None:
    """A card's timestamp as xsd:dateTime, or None when it is not one."""
    try:
        return _xsd_datetime(datetime.fromisoformat(str(text)))
    except ValueError:
        return None
