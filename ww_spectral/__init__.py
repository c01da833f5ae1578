"""ww-spectral: WeightWatcher-compatible heavy-tailed spectral analysis of model weights.

Public API (see README):
    analyze(source, **options) -> pandas.DataFrame   one row per analysed layer (WW's columns + ours)
    describe(source) -> pandas.DataFrame             the layers, without eigenvalues
    analyze_model(source, **options) -> ModelAnalysis  layers (incl. skipped), summary, facts, checkpoint ref
    summarize(layers) -> dict                        WW's get_summary() means + robust aggregates
    plan_model(checkpoint, options) -> ModelPlan     / assemble_model(plan, rows, seconds=...) -> ModelAnalysis:
                                                     the per-model unit (ww_spectral/model.py)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    CheckpointError,
    GatedRepoError,
    HubError,
    NoAnalysableLayerError,
    NoWeightsError,
    OptionError,
    SourceNotFoundError,
    TransientHubError,
    UnsafeCheckpointError,
    UnsupportedDtypeError,
    WWSpectralError,
)

__all__ = [
    "__version__",
    "CheckpointError",
    "GatedRepoError",
    "HubError",
    "NoAnalysableLayerError",
    "NoWeightsError",
    "OptionError",
    "SourceNotFoundError",
    "TransientHubError",
    "UnsafeCheckpointError",
    "UnsupportedDtypeError",
    "WWSpectralError",
]

from .analysis import analyze, analyze_model, describe, summarize  # noqa: E402
from .model import ModelAnalysis, ModelFacts, ModelPlan, assemble_model, plan_model  # noqa: E402

__all__ += ["ModelAnalysis", "ModelFacts", "ModelPlan", "analyze", "analyze_model", "assemble_model", "describe",
            "plan_model", "summarize"]
