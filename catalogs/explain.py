"""A model's flags in words: why it stands in its tier of the default ranking (catalogs/metrics.py).

`show` prints these lines under the summary. They are built from the columns of one row of
model_summaries_in (catalogs/sql/20_model_summaries.sql): tier, n_fitted, n_alpha_in_2_6, n_alpha_lt_2,
n_alpha_gt_6, n_random_like, n_trap_candidates, alpha_median, n_layers_skipped, n_layers_failed; the
thresholds quoted are those of TIER_RULE, the ones the SQL was built with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .metrics import TIER_RULE, TIERS


def _n(row: Mapping[str, Any], key: str) -> int:
    value = row.get(key)
    return int(value) if value is not None else 0


def _of(k: int, n: int, verb: str, what: str) -> str:
    """'3 of 4 analysed layers have ...' with the verb agreeing ('has'/'looks' for one layer)."""
    singular = {"have": "has", "look": "looks", "are": "is"}
    return f"{k} of {n} analysed layer{'s' if n != 1 else ''} {singular.get(verb, verb) if k == 1 else verb} {what}"


def _num(x: float) -> str:
    return f"{x:g}"


def explain(row: Mapping[str, Any]) -> list[str]:
    """Sentences for one model: its tier and the layer counts that put it there, then the other flags
    (under- and over-trained layers, random-looking layers, correlation-trap candidates, skipped and
    failed tensors)."""
    r = TIER_RULE
    tier = row.get("tier")
    n = _n(row, "n_fitted")
    in_band, low, high = _n(row, "n_alpha_in_2_6"), _n(row, "n_alpha_lt_2"), _n(row, "n_alpha_gt_6")
    rand, traps = _n(row, "n_random_like"), _n(row, "n_trap_candidates")
    skipped, failed = _n(row, "n_layers_skipped"), _n(row, "n_layers_failed")
    median = row.get("alpha_median")
    band = f"{_num(r.band_low)} <= alpha <= {_num(r.band_high)}"
    head = f"tier {tier} ({TIERS.get(tier, '?')}) in the default leaderboard (rule: catalogs/metrics.py)"
    tail = [f"{skipped} tensor{'s' if skipped != 1 else ''} skipped (not analysable layers), {failed} failed"
            ] if skipped or failed else []  # fmt: skip
    if n == 0:
        return [f"{head}: no layer could be analysed, ranked last", *tail]
    random_text = ("like a random matrix (no eigenvalue beyond the Marchenko-Pastur bulk of a random "
                   f"matrix of the same shape and norm, or rand_distance < {_num(r.rand_distance_min)})")
    lines, shown = [], set()
    if tier == 4:
        lines.append(f"{head}: ranked below every well-trained, mixed and under-trained model, because "
                     + _of(rand, n, "look", random_text))
        lines.append("within this tier: fewer random-looking layers first, then the larger mean log10 "
                     "lambda_max (weights grown further from a random initialisation)")
        shown.add("rand")
    elif tier == 3:
        lines.append(f"{head}: ranked below every well-trained and mixed model, because the median layer "
                     f"alpha is {median:.2f} > {_num(r.under_trained_median)}: "
                     f"{_of(high, n, 'have', 'alpha > ' + _num(r.band_high))} (WeightWatcher: under-trained)")
        shown.add("high")
    elif tier == 1:
        lines.append(f"{head}: {_of(in_band, n, 'have', band)} (tier 1 needs {r.well_trained_share:.0%})")
    else:
        lines.append(f"{head}: {_of(in_band, n, 'have', band)}, fewer than the {r.well_trained_share:.0%} "
                     f"of tier 1; ranked below every well-trained model")
    if high and "high" not in shown:
        lines.append(_of(high, n, "have", f"alpha > {_num(r.band_high)} (WeightWatcher: under-trained)"))
    if rand and "rand" not in shown:
        lines.append(_of(rand, n, "look", "like a random matrix"))
    if low:
        lines.append(_of(low, n, "have", f"alpha < {_num(r.band_low)} (WeightWatcher: over-trained)"))
    if traps:
        what = "correlation-trap candidate" + ("s" if traps != 1 else "")
        lines.append(_of(traps, n, "are", f"{'a ' if traps == 1 else ''}{what} (view correlation_trap_candidates)"))
    return lines + tail
