"""The numbers behind WeightWatcher's warnings and the random-likeness test of a layer.

The rule that uses them is `ww_spectral/metrics.py` `looks_random` (and the model summary's counts, in
`summary.py`); the catalog's default ranking (`catalogs/metrics.py`) renders the same constants into its SQL.
This module imports nothing, so the catalog's command-line start-up can read them for free.
"""

WW_BAND = (2.0, 6.0)  # WeightWatcher's well-trained band of layer alpha, inclusive
TW_PAD = 4.0  # Tracy-Widom scale units above the Marchenko-Pastur edge still counted as random
RAND_DISTANCE_MIN = 0.01  # a layer analysed with randomize looks random below this rand_distance
