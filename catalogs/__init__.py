"""The results store (Parquet layout contract) and the DuckDB catalog (SQL in files)."""
