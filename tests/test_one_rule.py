"""One per-model rule: the same checkpoint fed to `analyze`, `analyze --out`, a `scan` and `plot` gives the
same rows and the same fitted power law, and a model with nothing to analyse is refused the same way by
`analyze` (exit 2, one line) and by a scan (one failures row, same error type).

The checkpoint holds the cases where composing the unit twice used to drift: a rank-deficient layer (the
float32 noise floor decides its tail), a conv2d kernel, a heavy-tailed dense layer, a bf16 layer and a
skipped norm vector.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from support.checkpoints import Raw, write_hf_model_folder, write_safetensors
from support.planted_models import heavy_tailed

from catalogs.store import ResultStore
from pipelines.cli import main
from pipelines.flows import scan_folder
from ww_spectral import plots
from ww_spectral.analysis import analyze_model, layer_esds
from ww_spectral.columns import LAYER_COLUMN_NAMES


def _tensors(seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    low_rank = (rng.standard_normal((96, 5)) @ rng.standard_normal((5, 64))).astype(np.float32)
    return {
        "model.layers.0.mlp.up_proj.weight": heavy_tailed(rng, 128, 64, alpha=3.0).astype(np.float32),
        "model.layers.0.mlp.down_proj.weight": low_rank,
        "model.layers.1.conv.weight": rng.standard_normal((24, 16, 3, 3)).astype(np.float32),
        "model.layers.1.self_attn.o_proj.weight": rng.standard_normal((80, 80)).astype(np.float32),
        "model.norm.weight": np.ones(64, np.float32),
    }


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        a = math.nan if a is None or pd.isna(a) else float(a)
        b = math.nan if b is None or pd.isna(b) else float(b)
        return (math.isnan(a) and math.isnan(b)) or a == b
    return (None if a is None or (not isinstance(a, str) and pd.isna(a)) else a) == \
        (None if b is None or (not isinstance(b, str) and pd.isna(b)) else b)


def _rows(frame: pd.DataFrame) -> dict[str, dict]:
    return {r["tensor_name"]: {c: r[c] for c in LAYER_COLUMN_NAMES} for r in frame.to_dict("records")}


def _assert_same_rows(got: dict[str, dict], want: dict[str, dict], what: str) -> None:
    assert sorted(got) == sorted(want), what
    for name, row in want.items():
        diff = {c: (got[name][c], v) for c, v in row.items() if not _same(got[name][c], v)}
        assert not diff, f"{what}: {name}: {diff}"


@pytest.mark.slow
def test_analyze_scan_and_plot_share_one_rule(ray_local, prefect_api, tmp_path, capsys):
    zoo = tmp_path / "zoo"
    folder = write_hf_model_folder(zoo / "one", _tensors(), n_shards=1)
    write_hf_model_folder(zoo / "bf16", _tensors(seed=4), n_shards=1, dtype="BF16")
    nothing = zoo / "nothing"
    nothing.mkdir()
    write_safetensors(nothing / "model.safetensors", {"q.weight": Raw("I8", (32, 32), bytes(32 * 32)),
                                                       "norm.weight": np.ones(32, np.float32)})

    # analyze (Python) and analyze --out (CLI): every tensor, skipped ones included.
    direct = {name: analyze_model(str(zoo / name)) for name in ("one", "bf16")}
    want = _rows(direct["one"].layers)
    assert {r["status"] for r in want.values()} == {"success", "skipped"}
    out = tmp_path / "one.parquet"
    assert main(["analyze", str(folder), "--out", str(out)]) == 0
    _assert_same_rows(_rows(pd.read_parquet(out)), want, "analyze --out")

    # The scan stores the same rows (and the same model summary) for every model it analyses.
    summary = scan_folder(folder=str(zoo), data_root=str(tmp_path / "data"), workers=2)
    assert (summary["done"], summary["failed"]) == (2, 1), summary["failures"]
    store = ResultStore(str(tmp_path / "data"))
    stored = store.read("layers").to_pandas()
    for name, result in direct.items():
        _assert_same_rows(_rows(stored[stored["repo_id"] == name]), _rows(result.layers), f"scan {name}")
        model = store.read("models").to_pandas().set_index("repo_id").loc[name]
        for key, value in result.summary.items():
            assert _same(model[key], value), (name, key, model[key], value)

    # The plots draw the fit the tables report: same eigenvalues in, same alpha/xmin, same line.
    esds = layer_esds(str(folder))
    analysed = {r["longname"]: r for r in want.values() if r["status"] == "success"}
    assert sorted(esds) == sorted(analysed)
    for longname, esd in esds.items():
        row = analysed[longname]
        assert (esd.fit.alpha, esd.fit.xmin, esd.fit.D) == (row["alpha"], row["xmin"], row["D"])
        plotted = plots.esd_fit_line(esd.evals, alpha=esd.fit.alpha, xmin=esd.fit.xmin)
        stored_line = plots.esd_fit_line(esd.evals, alpha=row["alpha"], xmin=row["xmin"])
        assert np.array_equal(plotted[0], stored_line[0]) and np.array_equal(plotted[1], stored_line[1])
    assert main(["plot", str(folder), "--out", str(tmp_path / "plots")]) == 0
    assert len(list((tmp_path / "plots").glob("*.esd.png"))) == len(analysed)

    # Nothing to analyse: analyze refuses it with one line and exit 2, the scan with one failures row.
    failures = store.read("failures").to_pylist()
    assert [(f["repo_id"], f["error_type"]) for f in failures] == [("nothing", "NoAnalysableLayerError")]
    capsys.readouterr()
    assert main(["analyze", str(nothing)]) == 2
    err = capsys.readouterr().err
    assert "none of its 2 tensors is an analysable layer" in err and err.count("\n") == 1, err

