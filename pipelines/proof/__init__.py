"""The proof that the metrics predict quality, an experiment built on the library, the store and the
scan flows (nothing below it imports it); its tests mirror it in tests/proof/.

zoo          the demo zoo: small MLPs trained on CPU with known test accuracy, and its truth.csv
truth        the truth file and the one rule joining it to stored models by name
stored       the latest models and layer rows of a data root, as the proof reads them
validation   rank correlations of model metrics with the true accuracy
spectra      the plots of a stored model (ESDs recomputed through the analysis' own call)
outdir       the report's output folder: written aside, swapped in, nothing else deleted
report       `ww-spectral report` (report_html: its pages)
demo         `ww-spectral demo`: zoo -> scan -> leaderboard -> validation
cli          the commands zoo build, validate, plot, report, demo
"""

from __future__ import annotations

DEFAULT_ZOO = "ww-data/zoo"  # the zoo folder of `zoo build` and `demo`, inside the default data root
