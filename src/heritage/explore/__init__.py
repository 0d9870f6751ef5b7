"""The curator's end of heritage: a web explorer over the knowledge graph of predictions.

``heritage explore --store kg-store`` serves, on http://127.0.0.1:8765, faceted search over
every property (catalogued values and predictions at or above a confidence the user moves),
free-text search in every language, object pages that show each prediction as a machine
suggestion with its provenance, similar objects and search by image (with ``--index``), and
review: a curator accepts, rejects or corrects a prediction, and the decision is kept as a
PROV activity in its own named graph (:mod:`heritage.kg.reviews`), never as an edit.

Modules: ``facets`` (the facet table read from the graph), ``fulltext`` (SQLite FTS5),
``explorer`` (what pages show, as Python), ``images`` (safe image serving, uploads),
``charts`` (SVG), ``i18n`` (interface strings), ``app`` (FastAPI routes and templates),
``serve`` (starting it).
"""

from __future__ import annotations

from heritage.explore import explorer as _explorer
from heritage.explore.explorer import *  # noqa: F403 - the package's front door

__all__ = list(_explorer.__all__)
