"""The MLP zoo (the default): small MLPs on scikit-learn's bundled 8x8 digits, with known clean accuracy.

Data: sklearn.datasets.load_digits (1797 images, no download), one fixed stratified split (70 % train /
30 % test), standardised with the training split's statistics; the test labels are never corrupted, so
`test_accuracy` is the clean accuracy. Model: 64 -> 512 -> 512 -> 256 -> 10 with ReLU, plain SGD with
momentum, cross-entropy. Sweeps (pipelines/proof/zoo_spec.py): label noise in the training set, batch
size and training length - factors known to move alpha - around the base point (no noise, batch 32,
40 epochs), 3 seeds each.

GRID FIXED 2026-11-25 14:05 UTC, BEFORE ANY MODEL WAS TRAINED OR ANY METRIC WAS LOOKED AT; on 2026-11-27
epochs = 0 (randomly initialised members) was added to the epochs sweep, before the default ranking's
rule was validated on it (issue 13). Do not change DEFAULT_GRID to make the validation look better; a
changed grid is a new experiment.

Cost: about 85 k SGD steps. The whole `ww-spectral demo` (this zoo, then the scan) took 570 CPU-seconds
(user + system) on 2026-11-27 with pinned kernels, 16 min wall on a shared 2-core box at load average 4-9:
roughly 4.5 min of training on 2 idle cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .zoo_spec import Sweep, accuracies, fit_classifier, grid_hash, noisy_labels, one_factor_specs

KIND = "mlp"
ZOO_VERSION = 3  # 3: kernels pinned (pipelines/proof/zoo.py PINNED_ENV), steps in the truth; bump when numbers change
MODEL_TYPE = "ww-zoo-mlp"
FACTORS = ("label_noise", "batch_size", "epochs")
TRUTH_COLUMNS = ("repo_id", "sweep", "label_noise", "batch_size", "epochs", "seed", "steps", "test_accuracy")
DATASET = "sklearn.datasets.load_digits (8x8 digits, 1797 images)"
TASK = "image-classification"  # the model card's task and dataset tag
DATASET_TAG = "sklearn-digits"


@dataclass(frozen=True)
class MlpSpec:
    """One MLP to train; `name` is its folder name and repo_id."""

    sweep: str
    label_noise: float
    batch_size: int
    epochs: int
    seed: int
    hidden_sizes: tuple[int, ...] = field(default=(512, 512, 256))
    lr: float = 0.02
    momentum: float = 0.9
    test_fraction: float = 0.3
    split_seed: int = 0

    @property
    def name(self) -> str:
        return (f"mlp-{self.sweep.replace('_', '')}-noise{self.label_noise:.2f}-bs{self.batch_size}"
                f"-ep{self.epochs}-s{self.seed}")

    def matches(self, meta: dict) -> bool:
        """A stored model is this spec: the folder name fixes the swept factors and the seed; check the rest."""
        return meta.get("hidden_sizes") == list(self.hidden_sizes) and meta.get("lr") == self.lr \
            and meta.get("momentum") == self.momentum


@dataclass(frozen=True)
class MlpGrid:
    """The whole experiment: architecture, optimiser, base point, sweeps, seeds.

    hidden_sizes: widths of the hidden layers (the input is 64 pixels, the output 10 classes).
    lr, momentum: plain SGD with momentum; fixed for every model (the sweeps vary other factors).
    base_*: the value of each factor when another factor is swept.
    seeds: per-sweep seed offsets (pipelines/proof/zoo_spec.py one_factor_specs).
    """

    hidden_sizes: tuple[int, ...] = (512, 512, 256)
    lr: float = 0.02
    momentum: float = 0.9
    base_label_noise: float = 0.0
    base_batch_size: int = 32
    base_epochs: int = 40
    sweeps: tuple[Sweep, ...] = (
        Sweep("label_noise", "label_noise", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)),
        Sweep("batch_size", "batch_size", (8, 16, 32, 64, 128, 256)),
        Sweep("epochs", "epochs", (0, 1, 3, 10, 20, 40, 80)),
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    test_fraction: float = 0.3
    split_seed: int = 0
    kind = KIND  # not a field: the grid's kind, for pipelines/proof/zoo.py

    def grid_hash(self) -> str:
        return grid_hash(self, kind=KIND, version=ZOO_VERSION)

    def specs(self) -> list[MlpSpec]:
        """Every model of the grid, in a fixed order (sweep, value, seed)."""
        base = {"label_noise": float(self.base_label_noise), "batch_size": int(self.base_batch_size),
                "epochs": int(self.base_epochs)}
        return one_factor_specs(self.sweeps, base=base, seeds=self.seeds, make=lambda **kw: MlpSpec(
            hidden_sizes=tuple(self.hidden_sizes), lr=self.lr, momentum=self.momentum,
            test_fraction=self.test_fraction, split_seed=self.split_seed, **kw))


# The demo zoo: 6 + 6 + 7 values x 3 seeds = 57 models. See the module docstring: fixed in advance.
DEFAULT_GRID = MlpGrid()

# A seconds-long grid for tests (narrow layers are fine there: it checks files, not science).
TINY_GRID = MlpGrid(
    hidden_sizes=(32, 16),
    base_epochs=1,
    base_batch_size=64,
    sweeps=(Sweep("label_noise", "label_noise", (0.0, 0.5)), Sweep("epochs", "epochs", (0, 2))),
    seeds=(0,),
)


def load_digits_split(test_fraction: float, split_seed: int):
    """Standardised digits: (x_train, y_train, x_test, y_test) as float32 / int64 numpy arrays."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=split_seed,
                                              stratify=y)
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0  # constant border pixels
    return (((x_tr - mean) / std).astype(np.float32), y_tr.astype(np.int64),
            ((x_te - mean) / std).astype(np.float32), y_te.astype(np.int64))


def train(spec: MlpSpec) -> tuple[dict, dict]:
    """Train one MLP; returns (state dict of float32 numpy arrays, metadata dict).

    Tensor names: "mlp.fc{i}.weight" (out x in) / "mlp.fc{i}.bias", i = 1..depth (the last is the 10-way
    output layer), so checkpoint (alphabetical) order is depth order. epochs = 0: the initialisation.
    Bit-for-bit reproducible when run by pipelines/proof/zoo.py (pinned kernels, one thread, seeds for
    the label noise, the initialisation and the batch order).
    """
    import numpy as np
    import torch

    x_tr, y_tr, x_te, y_te = load_digits_split(spec.test_fraction, spec.split_seed)
    y_noisy, n_flip = noisy_labels(y_tr, spec.label_noise, seed=spec.seed, n_classes=10)

    torch.manual_seed(spec.seed)
    sizes = (x_tr.shape[1], *spec.hidden_sizes)
    layers: list[torch.nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-1], 10))
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=spec.lr, momentum=spec.momentum)
    run = fit_classifier(net, opt, x_tr, y_noisy, epochs=spec.epochs, batch_size=spec.batch_size, seed=spec.seed)
    meta = {
        "repo_id": spec.name,
        **{k: v for k, v in asdict(spec).items() if k != "hidden_sizes"},
        "hidden_sizes": list(spec.hidden_sizes),
        **accuracies(net, x_train=x_tr, y_train_used=y_noisy, y_train_clean=y_tr, x_test=x_te, y_test=y_te),
        "n_labels_flipped": int(n_flip),
        **run,
        "dataset": DATASET,
    }
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    state: dict[str, np.ndarray] = {}
    for i, lin in enumerate(linears):
        prefix = f"mlp.fc{i + 1}"
        state[f"{prefix}.weight"] = lin.weight.detach().numpy().astype(np.float32).copy()
        state[f"{prefix}.bias"] = lin.bias.detach().numpy().astype(np.float32).copy()
    return state, meta


def card_lines(meta: dict) -> tuple[list[str], str]:
    """(model-card YAML fields under ww_zoo, the card's description paragraph) for pipelines/proof/zoo.py."""
    keys = ["sweep", "label_noise", "batch_size", "epochs", "seed", "steps", "lr", "momentum", "test_accuracy"]
    fields = [f"  {k}: {meta[k]}" for k in keys]
    fields.append(f"  hidden_sizes: [{', '.join(str(h) for h in meta['hidden_sizes'])}]")
    trained = (f"trained with SGD on scikit-learn's digits with {meta['label_noise']:.0%} of the training labels "
               f"flipped, batch size {meta['batch_size']}, {meta['epochs']} epochs, seed {meta['seed']}"
               if meta["epochs"] else f"randomly initialised (seed {meta['seed']}, no training)")
    return fields, f"A small MLP from the ww-spectral demo zoo (`ww-spectral zoo build`), {trained}."


def config(meta: dict) -> dict:
    """config.json of one model."""
    return {
        "model_type": MODEL_TYPE,
        "architectures": ["WWZooMLP"],
        "input_size": 64,
        "hidden_sizes": meta["hidden_sizes"],
        "num_labels": 10,
        "hidden_act": "relu",
        "torch_dtype": "float32",
        "ww_zoo_version": ZOO_VERSION,
    }
