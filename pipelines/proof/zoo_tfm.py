"""The transformer zoo: small transformer encoders on a synthetic sequence task, with known accuracy.

A second architecture and a second kind of data for the proof (issue 13), trained on CPU like the MLP zoo
(pipelines/proof/zoo_mlp.py) and cached the same way (pipelines/proof/zoo.py).

Task ("distinct"): a sequence of SEQ_LEN = 12 tokens drawn uniformly from VOCAB = 10 symbols; the label
is how many DISTINCT symbols it holds, in N_CLASSES = 5 classes (<= 5, 6, 7, 8, >= 9; the majority class,
7, is 38 % of sequences). No single token decides it: each position must find its equal tokens, which
needs attention (a mean of per-token features cannot count distinct symbols). Training sequences come
from seed 0 (the first `train_size` of one stream, so a larger set contains the smaller), the 2,000 test
sequences from seed 1; test labels are exact, so `test_accuracy` is the clean accuracy.

Model: token + learned position embeddings (d = 64), 2 pre-LayerNorm blocks (4-head self-attention with
separate q, k, v, o projections of 64 x 64; an MLP 64 -> 256 -> 64 with ReLU), a final LayerNorm, mean
over positions, a linear head to 5 classes. AdamW (no weight decay), batch 64, cross-entropy.

Sweeps (pipelines/proof/zoo_spec.py) around the base point (no label noise, lr 1e-3, 10 epochs of 2,000
sequences): training length (0 = the random initialisation, 1 = barely trained, ... 20), label noise in
the training set (0-45 %), learning rate (1e-4 .. 3e-3); 3 seeds each: 13 values x 3 = 39 models.

GRID FIXED 2026-11-27 07:49 UTC (commit c2f6ab4), BEFORE ANY MODEL OF THE FULL GRID WAS TRAINED and after
the default ranking's rule was committed (1b99639, 07:36 UTC; catalogs/metrics.py TIER_RULE). Do not change
DEFAULT_GRID to make the validation look better; a changed grid is a new experiment.

Cost: about 11 k AdamW steps, 414 CPU-seconds measured (user + system of the whole build, 2 processes):
about 3.5 min on 2 idle cores; 12 min wall on the shared 2-core box at load average 5-9.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .zoo_spec import Sweep, accuracies, fit_classifier, grid_hash, noisy_labels, one_factor_specs

KIND = "transformer"
ZOO_VERSION = 1  # bump when the files or numbers change: folders of another version are retrained
MODEL_TYPE = "ww-zoo-transformer"
FACTORS = ("label_noise", "lr", "epochs")
TRUTH_COLUMNS = ("repo_id", "sweep", "label_noise", "lr", "epochs", "seed", "steps", "test_accuracy")
VOCAB = 10
SEQ_LEN = 12
N_CLASSES = 5
MIN_DISTINCT = 5  # class 0 = at most this many distinct symbols
N_TEST = 2000
TASK = "text-classification"  # the model card's task and dataset tag
DATASET_TAG = "synthetic-distinct"
DATASET = (f"synthetic 'distinct': {SEQ_LEN} tokens of {VOCAB} symbols, label = number of distinct symbols "
           f"({N_CLASSES} classes)")


@dataclass(frozen=True)
class TfmSpec:
    """One transformer to train; `name` is its folder name and repo_id."""

    sweep: str
    label_noise: float
    lr: float
    epochs: int
    seed: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    batch_size: int = 64
    train_size: int = 2000

    @property
    def name(self) -> str:
        return (f"tfm-{self.sweep.replace('_', '')}-noise{self.label_noise:.2f}-lr{self.lr:g}"
                f"-ep{self.epochs}-s{self.seed}")

    def matches(self, meta: dict) -> bool:
        """A stored model is this spec: the folder name fixes the swept factors and the seed; check the rest."""
        return all(meta.get(k) == getattr(self, k)
                   for k in ("d_model", "n_heads", "n_layers", "batch_size", "train_size"))


@dataclass(frozen=True)
class TfmGrid:
    """The whole experiment: architecture, data size, base point, sweeps, seeds (module docstring)."""

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    batch_size: int = 64
    train_size: int = 2000
    base_label_noise: float = 0.0
    base_lr: float = 1e-3
    base_epochs: int = 10
    sweeps: tuple[Sweep, ...] = (
        Sweep("epochs", "epochs", (0, 1, 3, 10, 20)),
        Sweep("label_noise", "label_noise", (0.0, 0.15, 0.3, 0.45)),
        Sweep("lr", "lr", (1e-4, 3e-4, 1e-3, 3e-3)),
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    kind = KIND  # not a field: the grid's kind, for pipelines/proof/zoo.py

    def grid_hash(self) -> str:
        return grid_hash(self, kind=KIND, version=ZOO_VERSION)

    def specs(self) -> list[TfmSpec]:
        """Every model of the grid, in a fixed order (sweep, value, seed)."""
        base = {"label_noise": float(self.base_label_noise), "lr": float(self.base_lr),
                "epochs": int(self.base_epochs)}
        return one_factor_specs(self.sweeps, base=base, seeds=self.seeds, make=lambda **kw: TfmSpec(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, batch_size=self.batch_size,
            train_size=self.train_size, **kw))


# The second zoo: 13 values x 3 seeds = 39 models. See the module docstring: fixed in advance.
DEFAULT_GRID = TfmGrid()

# A seconds-long grid for tests: it checks files, caching and reproducibility, not science.
TINY_GRID = TfmGrid(
    d_model=16, n_heads=2, n_layers=1, train_size=256, base_epochs=1,
    sweeps=(Sweep("epochs", "epochs", (0, 2)), Sweep("label_noise", "label_noise", (0.0, 0.4))),
    seeds=(0,),
)


def make_data(n: int, *, seed: int):
    """(tokens int64 (n, SEQ_LEN), labels int64 (n,)) of the 'distinct' task (module docstring)."""
    import numpy as np

    x = np.random.default_rng(seed).integers(0, VOCAB, size=(n, SEQ_LEN))
    distinct = (np.sort(x, axis=1)[:, 1:] != np.sort(x, axis=1)[:, :-1]).sum(axis=1) + 1
    y = np.clip(distinct - MIN_DISTINCT, 0, N_CLASSES - 1)
    return x.astype(np.int64), y.astype(np.int64)


def _network(spec: TfmSpec):
    """The model (module docstring) as a torch Module; parameter names are the checkpoint's names."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, d = x.shape
            y = self.ln1(x)
            q, k, v = (m(y).view(b, t, self.heads, d // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1) @ v
            x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
            return x + self.down(torch.relu(self.up(self.ln2(x))))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = spec.d_model
            self.tok = nn.Embedding(VOCAB, d)
            self.pos = nn.Embedding(SEQ_LEN, d)
            self.blocks = nn.ModuleList(Block(d, spec.n_heads) for _ in range(spec.n_layers))
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, N_CLASSES)

        def forward(self, x):
            z = self.tok(x) + self.pos.weight
            for block in self.blocks:
                z = block(z)
            return self.head(self.ln(z).mean(dim=1))

    return Net()


def train(spec: TfmSpec) -> tuple[dict, dict]:
    """Train one transformer; returns (state dict of float32 numpy arrays, metadata dict).

    Tensor names: tok.weight, pos.weight (embeddings), blocks.{i}.{q,k,v,o,up,down}.{weight,bias},
    blocks.{i}.{ln1,ln2}.{weight,bias}, ln.*, head.*. epochs = 0: the initialisation. Bit-for-bit
    reproducible when run by pipelines/proof/zoo.py (pinned kernels, one thread, seeds for the label
    noise, the initialisation and the batch order).
    """
    import numpy as np
    import torch

    x_tr, y_tr = make_data(spec.train_size, seed=0)
    x_te, y_te = make_data(N_TEST, seed=1)
    y_noisy, n_flip = noisy_labels(y_tr, spec.label_noise, seed=spec.seed, n_classes=N_CLASSES)
    torch.manual_seed(spec.seed)
    net = _network(spec)
    opt = torch.optim.AdamW(net.parameters(), lr=spec.lr, weight_decay=0.0)
    run = fit_classifier(net, opt, x_tr, y_noisy, epochs=spec.epochs, batch_size=spec.batch_size, seed=spec.seed)
    meta = {
        "repo_id": spec.name,
        **asdict(spec),
        **accuracies(net, x_train=x_tr, y_train_used=y_noisy, y_train_clean=y_tr, x_test=x_te, y_test=y_te),
        "majority_class_share": round(float(np.bincount(y_te).max() / len(y_te)), 6),
        "n_labels_flipped": int(n_flip),
        **run,
        "dataset": DATASET,
    }
    state = {name: p.detach().numpy().astype(np.float32).copy() for name, p in net.state_dict().items()}
    return state, meta


def card_lines(meta: dict) -> tuple[list[str], str]:
    """(model-card YAML fields under ww_zoo, the card's description paragraph) for pipelines/proof/zoo.py."""
    keys = ["sweep", "label_noise", "lr", "epochs", "seed", "steps", "d_model", "n_heads", "n_layers",
            "batch_size", "train_size", "test_accuracy"]
    trained = (f"trained with AdamW on the synthetic 'distinct' task with {meta['label_noise']:.0%} of the "
               f"training labels flipped, learning rate {meta['lr']:g}, {meta['epochs']} epochs, seed {meta['seed']}"
               if meta["epochs"] else f"randomly initialised (seed {meta['seed']}, no training)")
    return [f"  {k}: {meta[k]}" for k in keys], f"A small transformer from the ww-spectral demo zoos, {trained}."


def config(meta: dict) -> dict:
    """config.json of one model."""
    return {
        "model_type": MODEL_TYPE,
        "architectures": ["WWZooTransformer"],
        "vocab_size": VOCAB,
        "max_position_embeddings": SEQ_LEN,
        "hidden_size": meta["d_model"],
        "num_attention_heads": meta["n_heads"],
        "num_hidden_layers": meta["n_layers"],
        "intermediate_size": 4 * meta["d_model"],
        "num_labels": N_CLASSES,
        "hidden_act": "relu",
        "torch_dtype": "float32",
        "ww_zoo_version": ZOO_VERSION,
    }
