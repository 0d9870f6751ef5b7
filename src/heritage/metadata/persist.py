"""Model folders that are safe to open: arrays in safetensors, everything else in JSON.

Museums share models, so opening a model folder must never run code. A pickle (``joblib``,
``torch.load(weights_only=False)``) can: unpickling calls whatever the file tells it to. A
fitted :class:`~heritage.metadata.predictor.MetadataPredictor` is therefore written as two
files that hold data only:

* ``predictor.json``: the structure — configurations, class lists, scores, calibration,
  scikit-learn hyper-parameters, LightGBM boosters in LightGBM's own text format — with every
  array replaced by a reference ``{"$array": NAME}``;
* ``predictor.safetensors``: those arrays (learnt coefficients, vocabularies' IDF weights,
  network weights, out-of-fold probabilities), numbers only.

Reading parses JSON, a safetensors header and LightGBM's model text; nothing in a file decides
what is imported or called. Modalities are rebuilt through a fixed table of known classes
(:func:`register_modality_class` adds one), scikit-learn estimators from their
hyper-parameters and learnt attributes, LightGBM classifiers from their booster text.
Rebuilt models predict exactly what the fitted ones did: arrays keep their bits and JSON
writes floats with every digit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from heritage.metadata.base import Modality

__all__ = [
    "ArrayStore",
    "LightGBMModel",
    "ModelFileError",
    "lightgbm_from_state",
    "lightgbm_state",
    "logistic_from_state",
    "logistic_state",
    "modality_from_state",
    "modality_state",
    "read_model_files",
    "register_modality_class",
    "scaler_from_state",
    "scaler_state",
    "tfidf_vectoriser_from_state",
    "tfidf_vectoriser_state",
    "write_model_files",
]

FORMAT = "heritage.metadata.predictor"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that heritage will not or cannot read (a pickle, a damaged or foreign
    file); the message says which file and what to do."""


# --------------------------------------------------------------------------- arrays


class ArrayStore:
    """The arrays of one safetensors file. :meth:`put` files an array under a unique name and
    returns the JSON reference that stands for it; :meth:`get` resolves a reference."""

    def __init__(self, arrays: Mapping[str, np.ndarray] | None = None, source: str = "") -> None:
        self.arrays: dict[str, np.ndarray] = dict(arrays or {})
        self.source = source

    def put(self, name: str, value: Any) -> dict[str, str]:
        array = np.ascontiguousarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"{name}: only numeric arrays are saved as arrays, got dtype {array.dtype}"
            )
        if name in self.arrays:
            raise ValueError(f"two arrays named {name!r}")
        self.arrays[name] = array
        return {"$array": name}

    def get(self, ref: Mapping[str, Any]) -> np.ndarray:
        name = ref.get("$array") if isinstance(ref, Mapping) else None
        if not isinstance(name, str) or name not in self.arrays:
            raise ModelFileError(f"{self.source}: array {name!r} is referenced but not stored")
        return self.arrays[name]

    def put_torch(self, name: str, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """A torch state dict; bfloat16 tensors (numpy has no such type) are stored as
        float32, which holds them exactly, and cast back on reading."""
        import torch

        out = {}
        for key, tensor in state.items():
            t = tensor.detach().cpu()
            dtype = str(t.dtype).removeprefix("torch.")
            if t.dtype == torch.bfloat16:
                t = t.float()
            out[key] = {**self.put(f"{name}.{key}", t.numpy()), "dtype": dtype}
        return {"$torch": out}

    def get_torch(self, ref: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        import torch

        dtypes = {
            str(t).removeprefix("torch."): t
            for t in (
                torch.bool,
                torch.uint8,
                torch.int8,
                torch.int16,
                torch.int32,
                torch.int64,
                torch.float16,
                torch.bfloat16,
                torch.float32,
                torch.float64,
            )
        }
        out = {}
        for key, item in ref["$torch"].items():
            dtype = dtypes.get(item["dtype"])
            if dtype is None:
                raise ModelFileError(f"{self.source}: unknown tensor type {item['dtype']!r}")
            out[key] = torch.from_numpy(self.get(item).copy()).to(dtype)
        return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_model_files(
    json_path: Path, arrays_path: Path, tree: dict[str, Any], arrays: ArrayStore
) -> None:
    """Write the arrays, then the JSON (which records the arrays file's SHA-256, so a pair
    that does not belong together is noticed on reading). Each file is written under a
    temporary name and renamed: an interrupted save never leaves half a file."""
    from safetensors.numpy import save

    data = save(arrays.arrays, metadata={"format": FORMAT})
    _replace_atomically(arrays_path, lambda p: p.write_bytes(data))
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arrays": {"file": arrays_path.name, "sha256": _sha256(arrays_path)},
        **tree,
    }
    text = json.dumps(document, indent=1, ensure_ascii=False, default=_plain_default) + "\n"
    _replace_atomically(json_path, lambda p: p.write_text(text, encoding="utf-8"))


def read_model_files(json_path: Path, arrays_path: Path) -> tuple[dict[str, Any], ArrayStore]:
    """The JSON tree and the arrays of a folder written by :func:`write_model_files`. Only
    JSON and safetensors are parsed: a file of any other kind (a pickle renamed, say) is
    refused with :class:`ModelFileError`, never executed."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tree = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"{json_path} is not a heritage model file (not JSON: {exc}); it was not opened "
            "further. Refit the model with `heritage metadata fit`, or ask for the folder again"
        ) from exc
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise ModelFileError(f"{json_path} is JSON but not a heritage metadata model")
    version = tree.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{json_path} has format version {version}; this heritage reads version "
            f"{FORMAT_VERSION}: upgrade heritage, or refit the model with this one"
        )
    expected = tree.get("arrays", {}).get("sha256")
    if expected is not None and arrays_path.is_file() and _sha256(arrays_path) != expected:
        raise ModelFileError(
            f"{arrays_path} is not the arrays file saved with {json_path.name} (its SHA-256 "
            "differs): copy the model folder again as a whole"
        )
    try:
        arrays = load_file(str(arrays_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{arrays_path} is not a safetensors file ({exc}); it was not opened further. "
            "Refit the model with `heritage metadata fit`, or ask for the folder again"
        ) from exc
    return tree, ArrayStore(arrays, str(arrays_path))


def _plain_default(obj: Any) -> Any:
    """JSON for numpy scalars (numbers that came out of numpy or scikit-learn)."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not saved in a model file: {obj!r}")


# --------------------------------------------------------------------------- scikit-learn


def _params(estimator: Any) -> dict[str, Any]:
    """Hyper-parameters as JSON: tuples tagged (they must come back as tuples), numpy types
    by name; anything else that is not plain data (a callable) cannot be saved safely."""

    def plain(key: str, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, tuple):
            return {"$tuple": [plain(key, v) for v in value]}
        if isinstance(value, list):
            return [plain(key, v) for v in value]
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: plain(key, v) for k, v in value.items()}
        if isinstance(value, type) and issubclass(value, np.generic):
            return {"$dtype": np.dtype(value).name}
        raise TypeError(
            f"{type(estimator).__name__}.{key} = {value!r} cannot be saved as data, only "
            "numbers, strings, lists and numpy types"
        )

    return {k: plain(k, v) for k, v in estimator.get_params(deep=False).items()}


def _unparams(params: Mapping[str, Any], estimator: type) -> dict[str, Any]:
    """Hyper-parameters for ``estimator(**...)``: those this scikit-learn version still has
    (a parameter retired since the model was saved is dropped, not fatal)."""
    known = set(estimator().get_params(deep=False))

    def back(value: Any) -> Any:
        if isinstance(value, list):
            return [back(v) for v in value]
        if isinstance(value, dict):
            if set(value) == {"$tuple"}:
                return tuple(back(v) for v in value["$tuple"])
            if set(value) == {"$dtype"}:
                return np.dtype(value["$dtype"]).type
            return {k: back(v) for k, v in value.items()}
        return value

    return {k: back(v) for k, v in params.items() if k in known}


def logistic_state(model: Any, arrays: ArrayStore, name: str) -> dict[str, Any]:
    """A fitted ``LogisticRegression``: its parameters, coefficients and classes."""
    return {
        "params": _params(model),
        "coef": arrays.put(f"{name}.coef", model.coef_),
        "intercept": arrays.put(f"{name}.intercept", model.intercept_),
        "classes": arrays.put(f"{name}.classes", model.classes_),
        "n_iter": arrays.put(f"{name}.n_iter", model.n_iter_),
    }


def logistic_from_state(state: Mapping[str, Any], arrays: ArrayStore) -> Any:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(**_unparams(state["params"], LogisticRegression))
    model.coef_ = arrays.get(state["coef"])
    model.intercept_ = arrays.get(state["intercept"])
    model.classes_ = arrays.get(state["classes"])
    model.n_iter_ = arrays.get(state["n_iter"])
    model.n_features_in_ = model.coef_.shape[1]
    return model


def scaler_state(scaler: Any, arrays: ArrayStore, name: str) -> dict[str, Any]:
    """A fitted ``StandardScaler``."""

    def maybe(attr: str) -> Any:
        value = getattr(scaler, attr, None)
        return None if value is None else arrays.put(f"{name}.{attr}", value)

    return {
        "params": _params(scaler),
        "mean": maybe("mean_"),
        "var": maybe("var_"),
        "scale": maybe("scale_"),
        "n_samples_seen": arrays.put(f"{name}.n_samples_seen", scaler.n_samples_seen_),
        "n_features_in": int(scaler.n_features_in_),
    }


def scaler_from_state(state: Mapping[str, Any], arrays: ArrayStore) -> Any:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler(**_unparams(state["params"], StandardScaler))
    for attr in ("mean", "var", "scale"):
        ref = state[attr]
        setattr(scaler, f"{attr}_", None if ref is None else arrays.get(ref))
    seen = arrays.get(state["n_samples_seen"])
    scaler.n_samples_seen_ = seen if seen.ndim else seen.item()
    scaler.n_features_in_ = int(state["n_features_in"])
    return scaler


def tfidf_vectoriser_state(vectoriser: Any, arrays: ArrayStore, name: str) -> dict[str, Any]:
    """A fitted ``TfidfVectorizer``: parameters, vocabulary (terms in column order) and IDF
    weights."""
    vocabulary = vectoriser.vocabulary_
    terms = [""] * len(vocabulary)
    for term, column in vocabulary.items():
        terms[int(column)] = term
    return {
        "params": _params(vectoriser),
        "terms": terms,
        "idf": arrays.put(f"{name}.idf", vectoriser.idf_),
    }


def tfidf_vectoriser_from_state(state: Mapping[str, Any], arrays: ArrayStore) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectoriser = TfidfVectorizer(**_unparams(state["params"], TfidfVectorizer))
    vectoriser.vocabulary_ = {term: i for i, term in enumerate(state["terms"])}
    vectoriser.fixed_vocabulary_ = False
    vectoriser.idf_ = arrays.get(state["idf"])
    return vectoriser


# --------------------------------------------------------------------------- LightGBM


class LightGBMModel:
    """A LightGBM classifier rebuilt from its booster text (``model_to_string``):
    ``predict_proba`` and ``classes_`` as ``lightgbm.LGBMClassifier`` gives them."""

    def __init__(self, booster: Any, classes: np.ndarray) -> None:
        self.booster = booster
        self.classes_ = classes

    def predict_proba(self, x: Any) -> np.ndarray:
        proba = np.asarray(self.booster.predict(x))
        if proba.ndim == 1:  # binary: the probability of the second class
            proba = np.vstack((1.0 - proba, proba)).transpose()
        return proba


def lightgbm_state(model: Any, arrays: ArrayStore, name: str) -> dict[str, Any]:
    """A fitted ``LGBMClassifier`` (or a :class:`LightGBMModel`): its booster as LightGBM's
    text model format, which describes trees and is parsed, never executed."""
    booster = model.booster if isinstance(model, LightGBMModel) else model.booster_
    return {
        "lightgbm": booster.model_to_string(),
        "classes": arrays.put(f"{name}.classes", model.classes_),
    }


def lightgbm_from_state(state: Mapping[str, Any], arrays: ArrayStore) -> LightGBMModel:
    import lightgbm as lgb

    text = state["lightgbm"]
    if not isinstance(text, str):
        raise ModelFileError(f"{arrays.source}: a LightGBM model is not text")
    return LightGBMModel(lgb.Booster(model_str=text), arrays.get(state["classes"]))


# --------------------------------------------------------------------------- modalities

_MODALITY_CLASSES: dict[str, type[Modality]] = {}


def register_modality_class(cls: type[Modality]) -> type[Modality]:
    """Let saved models hold modalities of class ``cls`` (which implements ``state`` and
    ``from_state``); a saved model names its modalities' classes and only registered ones
    are rebuilt. Usable as a class decorator."""
    _MODALITY_CLASSES[cls.__name__] = cls
    return cls


def _known_modalities() -> dict[str, type[Modality]]:
    # heritage's own, imported here (their modules import this one)
    from heritage.metadata.flat import FlatText
    from heritage.metadata.image import ImageModel
    from heritage.metadata.multitask import MultiTaskImageModel
    from heritage.metadata.tabular import TabularModel
    from heritage.metadata.text import EncoderText, TfidfText

    builtin = (TfidfText, FlatText, EncoderText, TabularModel, ImageModel, MultiTaskImageModel)
    return {**{c.__name__: c for c in builtin}, **_MODALITY_CLASSES}


def modality_state(modality: Modality, arrays: ArrayStore, name: str) -> dict[str, Any]:
    known = _known_modalities()
    kind = type(modality).__name__
    if known.get(kind) is not type(modality):
        raise TypeError(
            f"modality {modality.name!r} ({kind}) cannot be saved: register its class with "
            "heritage.metadata.persist.register_modality_class"
        )
    return {"type": kind, **modality.state(arrays, name)}


def modality_from_state(state: Mapping[str, Any], arrays: ArrayStore) -> Modality:
    known = _known_modalities()
    kind = state.get("type")
    if kind not in known:
        raise ModelFileError(
            f"{arrays.source}: the model holds a modality of class {kind!r}, which this "
            f"heritage does not know ({sorted(known)}); register it with "
            "heritage.metadata.persist.register_modality_class before loading"
        )
    return known[kind].from_state(state, arrays)
