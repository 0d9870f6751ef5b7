"""Why soups and ensembles work, measured: bias–variance decompositions over a set of models,
the geometry of the checkpoints' predictions, and a self-contained HTML report per run
(``heritage analyse``)."""

from heritage.analysis.bias_variance import (
    CrossEntropyDecomposition,
    ZeroOneDecomposition,
    compare_methods,
    cross_entropy_decomposition,
    describe_changes,
    geometric_mean,
    main_prediction,
    zero_one_decomposition,
)
from heritage.analysis.diagnostics import (
    ConfidentMistake,
    confident_mistakes,
    plot_decomposition,
    plot_training_curves,
)
from heritage.analysis.geometry import (
    Geometry,
    checkpoint_geometry,
    cross_entropy_distance,
    distance_matrix,
    divergence_matrix,
    mds_embedding,
    plot_geometry,
)
from heritage.analysis.probabilities import (
    ProbabilityCache,
    SplitProbabilities,
    model_proba,
    split_probabilities,
)
from heritage.analysis.report import AnalysisResult, SeedAnalysis, Skipped, analyse, analyse_runs

__all__ = [
    "AnalysisResult",
    "ConfidentMistake",
    "CrossEntropyDecomposition",
    "Geometry",
    "ProbabilityCache",
    "SeedAnalysis",
    "Skipped",
    "SplitProbabilities",
    "ZeroOneDecomposition",
    "analyse",
    "analyse_runs",
    "checkpoint_geometry",
    "compare_methods",
    "confident_mistakes",
    "cross_entropy_decomposition",
    "cross_entropy_distance",
    "describe_changes",
    "distance_matrix",
    "divergence_matrix",
    "geometric_mean",
    "main_prediction",
    "mds_embedding",
    "model_proba",
    "plot_decomposition",
    "plot_geometry",
    "plot_training_curves",
    "split_probabilities",
    "zero_one_decomposition",
]
