"""Validation on hand-made tables with known rank correlations."""

from __future__ import annotations

import json
import math
import re

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


def test_default_rank_is_lower_is_better_and_comes_first():
    models, truth = make(0)
    models["default_rank"] = (-truth["test_accuracy"]).rank(method="min").astype(int)  # 1 = most accurate
    v = validate_frames(models, truth)
    assert list(v.wide("tau").columns)[0] == "default_rank"
    assert np.allclose(v.wide("tau")["default_rank"].astype(float), 1.0)


def test_random_init_models_are_placed_in_every_ranking():
    """Two random-init models (steps 0): last under `alpha`, among the best under `alpha_weighted` (the
    failure of issue 13), and a missing value counts as last."""
    truth = pd.DataFrame({"repo_id": [f"m{i}" for i in range(6)], "sweep": ["epochs"] * 6,
                          "steps": [0, 0, 10, 20, 40, 80], "test_accuracy": [0.1, 0.12, 0.7, 0.8, 0.9, 0.95]})
    models = pd.DataFrame({"repo_id": truth["repo_id"],
                           "alpha": [9.0, 8.5, 5.0, 4.0, 3.5, 3.0],  # lower is better: random last
                           "alpha_weighted": [0.5, 0.6, 2.0, 2.2, 2.3, 2.4],  # small weights first
                           "share_alpha_2_6": [np.nan, 0.0, 0.5, 1.0, 1.0, 1.0]})  # higher is better; NaN last
    v = validate_frames(models, truth)
    r = v.random_init.set_index("metric")
    assert r.loc["alpha", "positions"] == (5, 6) and r.loc["alpha", "all_last"]
    assert r.loc["alpha_weighted", "positions"] == (1, 2) and not r.loc["alpha_weighted", "all_last"]
    assert r.loc["share_alpha_2_6", "positions"] == (5, 6) and r.loc["share_alpha_2_6", "all_last"]
    assert (r["n"] == 6).all() and (r["n_random"] == 2).all()
    text, md = render(v, "table"), render(v, "markdown")
    assert re.search(r"alpha_weighted +NOT all last +1, 2\n", text) and "| alpha_weighted | 1, 2 | **no** |" in md
    by_metric = {r["metric"]: r for r in json.loads(render(v, "json"))["random_init"]}
    assert by_metric["alpha"]["positions"] == [5, 6] and by_metric["alpha"]["all_last"] is True
    # a truth without the steps column (or without random-init models) has no such check
    assert validate_frames(models, truth.drop(columns="steps")).random_init is None
    assert validate_frames(models, truth.assign(steps=5)).random_init is None


def test_text_table_numbers_are_aligned():
    """Every number of the text table ends one character before its column header ends (the last
    character is the 'works' mark or blank)."""
    models, truth = make(1)
    lines = render(validate_frames(models, truth), "table").splitlines()
    head, rows = lines[1], lines[3:6]
    assert len(rows) == 3 and all(r.split()[0] in ("a", "b", "pooled") for r in rows)
    for name in ("alpha", "alpha_weighted", "share_alpha_2_6", "log_norm"):
        end = re.search(rf" {name}(?= |$)", head).end()
        for row in rows:
            assert re.fullmatch(r"[+-]\d\.\d\d|  n/a", row[end - 6:end - 1]), (name, row)
