"""What every demo zoo shares: one-factor sweeps, the grid's identity, seeded label noise, its error type.

A zoo kind (pipelines/proof/zoo_mlp.py, zoo_tfm.py) is a grid of one-factor-at-a-time sweeps around a
base point, after Martin & Mahoney (Nat. Commun. 2021): each sweep varies one training factor, every
other factor stays at the base value, and each sweep gets its own seeds (sweep i uses seed
1000 * (i + 1) + s), so no two models of a zoo share weights. pipelines/proof/zoo.py trains and caches
the models of any kind.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ww_spectral.errors import WWSpectralError


class ZooError(WWSpectralError):
    """The zoo folder or grid is unusable (e.g. a file where a folder should be, an invalid grid)."""


@dataclass(frozen=True)
class Sweep:
    """One factor varied around the base point.

    name: sweep label in truth.csv (e.g. "label_noise").
    factor: which field of the kind's model spec varies (one of the kind's factors).
    values: the values of that factor, in order.
    """

    name: str
    factor: str
    values: tuple


def one_factor_specs(sweeps: tuple[Sweep, ...], *, base: Mapping[str, Any], seeds: tuple[int, ...],
                     make: Callable[..., Any]) -> list:
    """Every model of a one-factor grid, in a fixed order (sweep, value, seed).

    base: factor name -> base value (its type is the type every swept value is converted to).
    make: builds one spec from keyword arguments sweep=, seed= and one per factor.
    Raises ZooError when a sweep names a factor that is not in `base`.
    """
    out = []
    for i, sweep in enumerate(sweeps):
        if sweep.factor not in base:
            raise ZooError(f"sweep {sweep.name!r}: factor {sweep.factor!r} is not one of {', '.join(base)}")
        for value in sweep.values:
            for s in seeds:
                params = dict(base)
                params[sweep.factor] = type(base[sweep.factor])(value)
                out.append(make(sweep=sweep.name, seed=1000 * (i + 1) + int(s), **params))
    return out


def grid_hash(grid: object, *, kind: str, version: int) -> str:
    """16 hex chars over a grid dataclass, its kind and the kind's zoo version: the manifest's identity."""
    blob = json.dumps({"grid": asdict(grid), "kind": kind, "version": version}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def noisy_labels(y, fraction: float, *, seed: int, n_classes: int):
    """(labels, n_flipped): a `fraction` of the labels replaced by a different class chosen uniformly,
    seeded by `seed` (numpy's PCG64), never the true class."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = y.copy()
    n_flip = int(round(fraction * len(y)))
    idx = rng.choice(len(y), size=n_flip, replace=False)
    y[idx] = (y[idx] + rng.integers(1, n_classes, size=n_flip)) % n_classes
    return y, n_flip


def fit_classifier(net, opt, x_train, y_train, *, epochs: int, batch_size: int, seed: int) -> dict:
    """Train `net` with `opt` on (x_train, y_train) (numpy arrays) by cross-entropy: `epochs` passes over
    the data in batches of `batch_size`, in an order drawn from a torch generator seeded by `seed`.

    Returns {"steps": optimiser steps, "final_batch_loss": the last batch's loss (None without a step),
    "train_seconds": wall seconds}. epochs = 0 leaves `net` at its initialisation.
    """
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    steps = 0
    last_loss = None
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), batch_size):
            idx = perm[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            steps += 1
        last_loss = float(loss.detach())
    return {"steps": steps, "final_batch_loss": last_loss, "train_seconds": round(time.perf_counter() - t0, 3)}


def accuracies(net, *, x_train, y_train_used, y_train_clean, x_test, y_test) -> dict:
    """The trained model's accuracies (rounded to 6 decimals): on the clean test set (`test_accuracy`, the
    truth), on the training labels it saw (noisy) and on the clean training labels; with the set sizes."""
    import torch

    net.eval()
    with torch.no_grad():
        test_pred = net(torch.from_numpy(x_test)).argmax(1).numpy()
        train_pred = net(torch.from_numpy(x_train)).argmax(1).numpy()
    return {
        "test_accuracy": round(float((test_pred == y_test).mean()), 6),
        "train_accuracy_noisy_labels": round(float((train_pred == y_train_used).mean()), 6),
        "train_accuracy_clean_labels": round(float((train_pred == y_train_clean).mean()), 6),
        "n_train": int(len(y_train_clean)),
        "n_test": int(len(y_test)),
    }
