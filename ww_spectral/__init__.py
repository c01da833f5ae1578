"""ww-spectral: WeightWatcher-compatible heavy-tailed spectral analysis of model weights.

Public API (see README):
    analyze(source, **options) -> pandas.DataFrame   one row per analysed layer (WW's columns + ours)
    describe(source) -> pandas.DataFrame             the layers, without eigenvalues
    analyze_model(source, **options) -> ModelAnalysis  layers (incl. skipped), summary, facts, checkpoint ref
    summarize(layers) -> dict                        WW's get_summary() means + robust aggregates
    plan_model(checkpoint, options) -> ModelPlan     / assemble_model(plan, rows, seconds=...) -> ModelAnalysis:
                                                     the per-model unit (ww_spectral/model.py)
    AnalysisOptions(...) / make_options(...)         every analysis option (ww_spectral/records.py)
    WeightWatcher(model=...)                         WeightWatcher 0.7.7's API: analyze(**its keywords),
                                                     get_summary, get_details, describe, get_ESD, distances
                                                     (ww_spectral/compat.py)
"""

from __future__ import annotations

import importlib

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

# The analysis API loads numpy, scipy and pandas (~0.8 s); it is imported on first use (PEP 562), so
# `import ww_spectral` - and the `ww-spectral` console script's start-up - stays fast.
_LAZY = {
    "analyze": "analysis", "analyze_model": "analysis", "describe": "analysis", "summarize": "summary",
    "ModelAnalysis": "model", "ModelFacts": "model", "ModelPlan": "model", "assemble_model": "model",
    "plan_model": "model", "WeightWatcher": "compat", "AnalysisOptions": "records", "make_options": "records",
}
__all__ += sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ww_spectral' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
