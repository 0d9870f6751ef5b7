"""The layout of the metadata prediction table, in a module that imports nothing.

:class:`~heritage.metadata.MetadataPredictor` writes this table and :mod:`heritage.kg` reads
it; both take the layout from here, so that reading predictions does not import the learning
stack (torch, LightGBM: seconds) and the two can never drift apart.
"""

from __future__ import annotations

__all__ = ["PREDICTION_COLUMNS", "STATUSES"]

#: one row per record and property, in this column order
PREDICTION_COLUMNS = (
    "record",
    "property",
    "value",
    "confidence",
    "alternatives",
    "modalities",
    "status",
    "catalogued",
)
#: what a row's ``status`` may say
STATUSES = ("predicted", "catalogued", "no prediction")
