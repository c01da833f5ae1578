"""The proof that the metrics predict quality, an experiment built on the library, the store and the
scan flows (nothing below it imports it); its tests mirror it in tests/proof/.

zoo          the demo zoos (kinds mlp, transformer, conv): trained on CPU, cached, reproducible, with truth.csv
zoo_spec     what every zoo kind shares: one-factor sweeps, the grid's identity, seeded label noise
zoo_mlp      the MLP zoo (the default): MLPs on scikit-learn's digits
zoo_tfm      the transformer zoo: small transformer encoders on a synthetic sequence task
zoo_cnn      the conv zoo: small conv nets on a synthetic image task (tests the pre-registered rule)
truth        the truth file and the one rule joining it to stored models by name
stored       the latest models and layer rows of a data root, as the proof reads them
validation   rank correlations of model metrics with the true accuracy
spectra      the plots of a stored model (ESDs recomputed through the analysis' own call)
outdir       the report's output folder: written aside, swapped in, nothing else deleted
report       `ww-spectral report` (report_html: its pages)
demo         `ww-spectral demo`: zoo -> scan -> leaderboard -> validation
cli          the commands zoo build|fingerprint, validate, plot, report, demo
"""

from __future__ import annotations

# The zoo folder of `zoo build` and `demo` per zoo kind, inside the default data root.
DEFAULT_ZOOS = {"mlp": "ww-data/zoo", "transformer": "ww-data/zoo-transformer", "conv": "ww-data/zoo-conv"}
DEFAULT_ZOO = DEFAULT_ZOOS["mlp"]
