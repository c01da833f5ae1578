"""Validation on hand-made tables with known rank correlations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipelines.proof.validation import VALIDATION_METRICS, ValidationError, render, validate_frames, verdict


def make(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 8
    acc = np.sort(rng.random(2 * n))
    rng.shuffle(acc)
    truth = pd.DataFrame({"repo_id": [f"m{i}" for i in range(2 * n)], "sweep": ["a"] * n + ["b"] * n,
                          "test_accuracy": acc})
    models = pd.DataFrame({
        "repo_id": [f"zoo/m{i}" for i in range(2 * n)],  # folder scans may prefix a path: joined on the name
        "alpha": -acc * 3 + 5,  # lower is better and perfectly anti-correlated with accuracy: tau = +1
        "alpha_weighted": acc,  # lower is better but rises with accuracy: expected-sign tau = -1
        "share_alpha_2_6": acc ** 3,  # higher is better, monotone in accuracy: +1
        "log_norm": np.full(2 * n, 1.0),  # constant: undefined
    })
    return models, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_taus(seed):
    models, truth = make(seed)
    v = validate_frames(models, truth)
    tau = v.wide("tau")
    assert list(tau.index) == ["a", "b", "pooled"]
    assert np.allclose(tau["alpha"].astype(float), 1.0)
    assert np.allclose(tau["alpha_weighted"].astype(float), -1.0)
    assert np.allclose(tau["share_alpha_2_6"].astype(float), 1.0)
    assert tau["log_norm"].isna().all()
    assert np.allclose(v.wide("rho")["alpha"].astype(float), 1.0)
    verdicts = v.wide("verdict")
    assert (verdicts["alpha"] == "works").all() and (verdicts["alpha_weighted"] == "wrong sign").all()
    assert (v.long.loc[v.long["sweep"] == "pooled", "n"] == 16).all()


def test_partial_correlation_matches_scipy():
    acc = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    metric = np.array([5.0, 3.0, 4.0, 2.0, 1.0])  # one discordant pair of 10: tau = (9 - 1) / 10 for -metric
    models = pd.DataFrame({"repo_id": list("abcde"), "alpha": metric})
    truth = pd.DataFrame({"repo_id": list("abcde"), "test_accuracy": acc})
    v = validate_frames(models, truth, metrics=("alpha",))
    row = v.long.iloc[0]
    assert row["sweep"] == "all" and row["tau"] == pytest.approx(0.8) and row["rho"] == pytest.approx(0.9)


def test_renderings_and_unmatched():
    models, truth = make(0)
    truth = pd.concat([truth, pd.DataFrame({"repo_id": ["ghost"], "sweep": ["a"], "test_accuracy": [0.5]})])
    v = validate_frames(models.drop(columns="log_norm"), truth)
    assert v.unmatched == ("ghost",)
    md = render(v, "markdown")
    assert "| sweep | n |" in md and "**+1.00**" in md
    js = json.loads(render(v, "json"))
    assert {r["metric"] for r in js["correlations"]} <= set(VALIDATION_METRICS)
    assert "pooled" in render(v, "table") and "wrong sign: alpha_weighted" in render(v, "table")
    assert render(v, "csv").startswith("sweep,metric,direction,n,tau")


def test_no_match_is_an_error():
    models, truth = make(0)
    models["repo_id"] = "other"
    with pytest.raises(ValidationError, match="no model"):
        validate_frames(models.iloc[:1], truth)


def test_verdict_thresholds():
    assert verdict(0.5, 0.01) == "works" and verdict(-0.5, 0.01) == "wrong sign"
    assert verdict(0.5, 0.2) == "weak" and verdict(math.nan, math.nan) == "n/a"


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\x00", b"", b'repo_id,test_accuracy\n"unclosed,1\n',
                                     b"name,acc\nm0,0.5\n"])
def test_a_damaged_truth_file_is_one_line_naming_the_fix(tmp_path, capsys, content):
    from pipelines.cli import main

    (tmp_path / "truth.csv").write_bytes(content)
    assert main(["validate", "--data", str(tmp_path), "--truth", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "repo_id, test_accuracy" in err.replace("repo_id and test_accuracy",
                                                                             "repo_id, test_accuracy")


def test_two_truth_rows_or_two_models_for_one_name_are_ambiguous():
    models, truth = make(0)
    with pytest.raises(ValidationError, match="twice"):
        validate_frames(models, pd.concat([truth, truth.iloc[:1]]))
    twin = models.iloc[:1].assign(repo_id="other/m0")
    with pytest.raises(ValidationError, match="share the name"):
        validate_frames(pd.concat([models, twin]), truth)
    unrelated = models.iloc[:1].assign(repo_id="a/unrelated")  # a twin name the truth never mentions is fine
    validate_frames(pd.concat([models, unrelated, unrelated.assign(repo_id="b/unrelated")]), truth)
