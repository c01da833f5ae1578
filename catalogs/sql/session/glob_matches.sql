-- Whether a glob matches at least one file (DuckDB's own matcher: the one the views will use).
SELECT count(*) > 0 FROM glob($pattern)
