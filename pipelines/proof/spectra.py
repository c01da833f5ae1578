"""The plots of a STORED model: model-level plots from the store's layer rows, and per-layer ESD plots
recomputed through the analysis' own call when the model's weights are at hand.

The store keeps numbers, not eigenvalues. A layer's ESD plot is redrawn with
`ww_spectral.analysis.layer_esds` - the function the stored rows were made with - on the weights found
under MODELS_DIR, with the analysis options the model was stored with (the `options_json` column), and
only when those weights are the analysed revision and those options have the stored fingerprint: then
the drawn fit is the stored one. Otherwise the page says why and shows the store's numbers only.
The report (pipelines/proof/report.py) and the `plot` command both draw through `draw_stored_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ww_spectral import plots
from ww_spectral.analysis import layer_esds
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import OptionError, WWSpectralError
from ww_spectral.progress import safe_text
from ww_spectral.records import AnalysisOptions, make_options
from ww_spectral.untrusted import loads_json_bounded

OPTIONS_MAX_DEPTH = 4  # options_json is one flat object


class StoredOptionsError(WWSpectralError):
    """A stored model's analysis options are missing, unreadable, or not the ones it was stored under."""


@dataclass(frozen=True)
class StoredFigures:
    """What draw_stored_model wrote.

    model: the model-level PNGs (alpha by depth, alpha histogram), from the store's layer rows.
    layers: {longname: {"esd" | "log_hist" | "d_vs_xmin": PNG}} of the recomputed layers (may be empty).
    note: "" when the ESDs were redrawn; else one sentence saying why not (shown on the model page).
    """

    model: tuple[Path, ...]
    layers: dict[str, dict[str, Path]] = field(default_factory=dict)
    note: str = ""

    def paths(self) -> list[Path]:
        return [*self.model, *(p for kinds in self.layers.values() for p in kinds.values())]


def weights_folder(repo_id: str, models_dir: str | Path | None) -> Path | None:
    """Where the weights of stored model `repo_id` are under models_dir: MODELS_DIR/<repo_id> (a scanned
    folder of model folders, or org/name folders) or MODELS_DIR/models--org--name (a Hugging Face cache);
    None when neither exists. A repo_id that is not a plain relative name (absolute, or with '.', '..' or
    empty parts: it comes from the store, i.e. from outside) never leaves models_dir: None."""
    if not models_dir:
        return None
    parts = repo_id.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    root = Path(models_dir)
    for candidate in (root.joinpath(*parts), root / ("models--" + "--".join(parts))):
        if candidate.exists():
            return candidate
    return None


def stored_options(row) -> AnalysisOptions:
    """The AnalysisOptions a stored `models` row was analysed with (its options_json), checked against
    its options_hash. Raises StoredOptionsError (one line) when they are missing, unreadable or differ."""
    text = row.get("options_json")
    if not isinstance(text, str) or not text:
        raise StoredOptionsError("the store keeps no analysis options for it")
    data = loads_json_bounded(text, max_depth=OPTIONS_MAX_DEPTH, what="stored options_json")
    if not isinstance(data, dict):
        raise StoredOptionsError("its stored options_json is not a JSON object")
    options = make_options(data)
    if options.fingerprint() != row.get("options_hash"):
        raise StoredOptionsError(f"its stored options have fingerprint {options.fingerprint()}, not the stored "
                              f"options_hash {safe_text(row.get('options_hash'), limit=40)}")
    return options


def stored_esds(row, models_dir: str | Path | None, *, layer: str | None = None) -> tuple[dict, str]:
    """({longname: LayerESD}, note) of a stored `models` row: the ESDs recomputed from its weights under
    models_dir (see the module docstring), or ({}, why not). Raises OptionError when `layer` names no
    tensor of the model (a user's typo, not a fact of the model)."""
    repo_id = str(row["repo_id"])
    if not models_dir:
        return {}, "ESD plots need the weights: pass --models-dir with the scanned folder"
    folder = weights_folder(repo_id, models_dir)
    if folder is None:
        return {}, f"no weights of this model under {models_dir}, so only the store's numbers are shown"
    try:
        options = stored_options(row)
        with open_checkpoint(str(folder)) as ckpt:
            if ckpt.ref.revision != row["revision"]:
                return {}, (f"the weights under {folder} are revision {ckpt.ref.revision}, not the analysed "
                            f"{row['revision']}, so only the store's numbers are shown")
            return layer_esds(ckpt, layer=layer, options=options), ""
    except OptionError:
        if layer is not None:
            raise
        return {}, "its stored analysis options are not valid, so only the store's numbers are shown"
    except WWSpectralError as exc:
        return {}, f"ESD plots not redrawn: {exc}"


def draw_stored_model(row, layers, *, out_dir: str | Path, models_dir: str | Path | None,
                      layer: str | None = None, layer_plots: bool = True) -> StoredFigures:
    """Every plot of one stored model into out_dir: alpha by depth and the alpha histogram from `layers`
    (its rows of the store's layers view), and the three ESD plots of each recomputed layer (all, or only
    `layer`) when layer_plots and the weights allow (see stored_esds)."""
    out = Path(out_dir)
    name = str(row["repo_id"])
    model = (plots.plot_alpha_by_depth(layers, path=out / "alpha_by_depth.png", title=f"{name}: alpha by depth"),
             plots.plot_alpha_histogram(layers, path=out / "alpha_hist.png", title=f"{name}: layer alphas"))
    if not layer_plots:
        return StoredFigures(model, note="ESD plots were not requested (--no-layer-plots)")
    esds, note = stored_esds(row, models_dir, layer=layer)
    drawn = {longname: plots.plot_layer(esd, out_dir=out, name=longname) for longname, esd in esds.items()}
    return StoredFigures(model, drawn, note)
