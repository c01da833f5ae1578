"""The truth file (each model's measured test accuracy) and the one rule that joins it to stored models.

A truth file is a CSV with columns repo_id, test_accuracy and optionally sweep (else every row is in
sweep "all"); the demo zoo writes one (pipelines/proof/zoo.py). Models are joined to it by NAME: the
last path component of repo_id on both sides (`truth_key`), so a folder scan's 'mlp-x' and a hub-style
'zoo/mlp-x' both match the truth's 'mlp-x'. Validation, the demo's leaderboard and the report all join
through `merge_truth`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from catalogs.errors import CatalogError

TRUTH_FILE = "truth.csv"
REQUIRED = ("repo_id", "test_accuracy")
ADDED = ("sweep", "test_accuracy")  # the truth columns merge_truth adds to a models table


class ValidationError(CatalogError):
    """The inputs cannot be joined or correlated (no shared repo_id, missing columns, ...)."""


def truth_key(repo_id: object) -> str:
    """The join key of a model name: its last path component ('zoo/mlp-x/' -> 'mlp-x')."""
    return str(repo_id).rstrip("/").split("/")[-1]


def read_truth(path: str | os.PathLike):
    """A truth file as a DataFrame (repo_id, test_accuracy, sweep, ...).

    path: the CSV, or a folder holding truth.csv (e.g. the demo zoo's folder). Raises ValidationError
    (one line naming the fix) when it is missing, unreadable as CSV, or lacks a required column.
    """
    p = Path(path)
    if p.is_dir():
        p = p / TRUTH_FILE
    if not p.is_file():
        raise ValidationError(
            f"truth file {p} not found; build the demo zoo (`ww-spectral zoo build DIR`) "
            "or pass a CSV with columns repo_id, test_accuracy[, sweep]"
        )
    try:
        df = pd.read_csv(p)
    except (ValueError, UnicodeError, pd.errors.ParserError) as exc:
        raise ValidationError(f"truth file {p} is not a readable CSV ({type(exc).__name__}); "
                              "pass a CSV with columns repo_id, test_accuracy[, sweep]") from exc
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValidationError(f"truth file {p} lacks columns {missing}; it needs repo_id and test_accuracy")
    if "sweep" not in df.columns:
        df["sweep"] = "all"
    return df


def merge_truth(models, truth, *, how: str = "inner"):
    """`models` (one row per model, a repo_id column) with the truth's sweep and test_accuracy added,
    joined on truth_key; how="inner" keeps matched models only, "left" every model (NaN when unmatched).
    Row order of `models` is kept.

    Raises ValidationError when a column is missing, or a key is ambiguous: two truth rows with one key,
    or two models with one key that the truth names (which model does its accuracy belong to?).
    """
    for col in REQUIRED:
        if col not in truth.columns:
            raise ValidationError(f"truth lacks column {col!r}; it needs repo_id, test_accuracy (and sweep)")
    if "repo_id" not in models.columns:
        raise ValidationError("models lack a repo_id column; pass the catalog's `models` view")
    t = truth.assign(_key=truth["repo_id"].map(truth_key))
    if "sweep" not in t.columns:
        t["sweep"] = "all"
    if t["_key"].duplicated().any():
        dups = sorted(t.loc[t["_key"].duplicated(), "_key"].unique())[:5]
        raise ValidationError(f"the truth file names {dups} twice; keep one row per model")
    m = models.drop(columns=[c for c in ADDED if c in models.columns]).assign(_key=models["repo_id"].map(truth_key))
    shared = m.loc[m["_key"].duplicated(keep=False) & m["_key"].isin(set(t["_key"])), "_key"]
    if len(shared):
        raise ValidationError(f"several models share the name(s) {sorted(shared.unique())[:5]}; "
                              "validate one scan's catalog")
    joined = m.merge(t[["_key", *ADDED]], on="_key", how=how, sort=False)
    return joined.drop(columns="_key").reset_index(drop=True)


def unmatched(truth, joined) -> tuple[str, ...]:
    """The truth's repo_ids that no model of `joined` (a merge_truth result) matched, sorted."""
    have = set(joined["repo_id"].map(truth_key))
    return tuple(sorted(str(r) for r in truth["repo_id"] if truth_key(r) not in have))
