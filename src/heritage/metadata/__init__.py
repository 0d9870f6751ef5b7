"""Multimodal metadata prediction for museum records (SILKNOW-style late fusion).

Predict missing properties of objects (place, time span, technique, material, …) from their
multilingual texts, tabular fields and images: one model per modality, a stacker over their
out-of-fold probabilities, calibrated confidences, and an explicit "no prediction" when a
record offers nothing to go on.

    from heritage.metadata import MetadataPredictor, RecordSpec, RecordTable

    spec = RecordSpec.infer(columns, properties=["place", "timespan"], id_column="object")
    table = RecordTable.from_csv("records.csv", spec)
    predictor = MetadataPredictor(["tfidf", "tabular"]).fit(table)
    predictions = predictor.predict(table)   # record, property, value, confidence, ...
"""

from heritage.metadata.base import Modality, Targets
from heritage.metadata.flat import FlatText
from heritage.metadata.fusion import (
    FusionConfig,
    ModalityChoice,
    Stacker,
    TemperatureScaling,
    out_of_fold,
)
from heritage.metadata.image import ImageConfig, ImageModel, aggregate_images
from heritage.metadata.multitask import MultiTaskConfig, MultiTaskImageModel
from heritage.metadata.persist import ModelFileError, register_modality_class
from heritage.metadata.predictor import (
    MODALITY_NAMES,
    PREDICTION_COLUMNS,
    STATUSES,
    MetadataPredictor,
    default_modalities,
    make_modality,
)
from heritage.metadata.records import RecordError, RecordSpec, RecordTable
from heritage.metadata.tabular import TabularConfig, TabularModel
from heritage.metadata.text import (
    TEXT_ENCODERS,
    EmbeddingCache,
    EncoderText,
    FocalHeadConfig,
    FocalHeads,
    TextEncoder,
    TfidfConfig,
    TfidfText,
    embed_texts,
    register_encoder,
)

__all__ = [
    "MODALITY_NAMES",
    "PREDICTION_COLUMNS",
    "STATUSES",
    "TEXT_ENCODERS",
    "EmbeddingCache",
    "EncoderText",
    "FlatText",
    "FocalHeadConfig",
    "FocalHeads",
    "FusionConfig",
    "ImageConfig",
    "ImageModel",
    "MetadataPredictor",
    "Modality",
    "ModalityChoice",
    "ModelFileError",
    "MultiTaskConfig",
    "MultiTaskImageModel",
    "RecordError",
    "RecordSpec",
    "RecordTable",
    "Stacker",
    "TabularConfig",
    "TabularModel",
    "Targets",
    "TemperatureScaling",
    "TextEncoder",
    "TfidfConfig",
    "TfidfText",
    "aggregate_images",
    "default_modalities",
    "embed_texts",
    "make_modality",
    "out_of_fold",
    "register_encoder",
    "register_modality_class",
]
