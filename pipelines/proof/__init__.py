"""The proof that the metrics predict quality: a demo zoo of trained models with known accuracy
(`zoo`), rank correlations against that truth (`validation`), a static HTML report (`report`) and the
`ww-spectral zoo|validate|report|demo` commands (`cli`). An experiment built on the library, the store
and the scan flows; nothing below it imports it."""
