-- metrics: the metric table of catalogs/metrics.py (one row per metric; rows from metrics_rows()).
CREATE OR REPLACE TABLE metrics (
    name VARCHAR, column_name VARCHAR, direction VARCHAR, sign INTEGER, value_range VARCHAR, doc VARCHAR
);
