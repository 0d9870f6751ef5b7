"""Image similarity that agrees with people: triplet judgements, learnt and context-sensitive
embeddings, their ensembles, and search by example (Liao & Chen, KDD 2024; see
``../shared/PAPERS.md`` §4).

===================  ==========================================================================
``triplets``         :class:`TripletTable` (load and validate judgements), :func:`agreement`
``items``            :class:`ItemTable`: item ids and their image column(s) (groups)
``embedding``        :class:`ImageEmbedder`: cached frozen features from any backbone
``learn``            :class:`TripletEmbedding`: a head (optionally last stages) learnt from triplets
``contexts``         context models: per context column, image group or reference cluster
``ensemble``         :class:`MajorityVote`, :class:`ReliabilityWeighted`
``model``            :class:`SimilarityModel`: global + context models + ensembles, saved as one
``index``            :class:`SimilarityIndex`: FAISS cosine index, grows in place
``search``           :func:`build_index`, :func:`search_similar`, :func:`hits_html`
===================  ==========================================================================
"""

from heritage.similarity.contexts import Context, build_contexts, fit_context_models
from heritage.similarity.embedding import EmbeddingConfig, ImageEmbedder, normalise
from heritage.similarity.ensemble import MajorityVote, ReliabilityConfig, ReliabilityWeighted
from heritage.similarity.index import SimilarityIndex
from heritage.similarity.items import ItemTable
from heritage.similarity.learn import HeadConfig, TripletEmbedding
from heritage.similarity.model import SimilarityConfig, SimilarityModel, pretrained_agreement
from heritage.similarity.search import build_index, hits_html, list_images, search_similar
from heritage.similarity.triplets import (
    Agreement,
    TripletError,
    TripletTable,
    agreement,
    margins_from_embeddings,
)

__all__ = [
    "Agreement",
    "Context",
    "EmbeddingConfig",
    "HeadConfig",
    "ImageEmbedder",
    "ItemTable",
    "MajorityVote",
    "ReliabilityConfig",
    "ReliabilityWeighted",
    "SimilarityConfig",
    "SimilarityIndex",
    "SimilarityModel",
    "TripletEmbedding",
    "TripletError",
    "TripletTable",
    "agreement",
    "build_contexts",
    "build_index",
    "fit_context_models",
    "hits_html",
    "list_images",
    "margins_from_embeddings",
    "normalise",
    "pretrained_agreement",
    "search_similar",
]
