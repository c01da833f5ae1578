-- store_files(): the Parquet files the views read, as a STRUCT of lists of globs: <table> (every file of
-- the table) and <table>_compacted (its compacted c-*.parquet files), for layers, models, failures, scans.
-- The globs are relative to the DATA root, so a catalog file holds no absolute path and reads the store
-- it sits in wherever the folder is copied or moved. A relative glob is resolved by DuckDB against its
-- working directory or the `file_search_path` setting, so a plain DuckDB client opens a catalog with
--     cd DATA && duckdb catalog.duckdb           or   SET file_search_path = '/path/to/DATA';
-- or names the root explicitly (object stores, catalogs kept elsewhere):
--     SET VARIABLE ww_spectral_root = 's3://bucket/prefix';
-- A root set so must have the glob characters [ ] * ? { } escaped as [[] etc. (catalogs/store.py
-- glob_escape); catalogs/catalog.py connect() sets it so for every connection it returns.
-- A session may instead set the variable ww_spectral_files to a STRUCT of the same shape: catalogs/catalog.py
-- binds the views against the in-memory seed files only (binding reads the footer of every matched file;
-- 20,000 files for 10,000 models), and a session over a store without seed files reads the in-memory
-- seeds plus the globs that match a file.
-- The *_in macros (01_raw_table.sql and after) take such a STRUCT; a drill-down to one model passes the
-- files of its owner= folder only (catalogs/catalog.py show_model).
CREATE OR REPLACE MACRO root_glob(table_name, prefix) AS
    coalesce(getvariable('ww_spectral_root') || '/', '') || table_name || '/*/' || prefix || '*.parquet';

CREATE OR REPLACE MACRO store_files() AS coalesce(getvariable('ww_spectral_files'), {
    'layers': [root_glob('layers', '')], 'layers_compacted': [root_glob('layers', 'c-')],
    'models': [root_glob('models', '')], 'models_compacted': [root_glob('models', 'c-')],
    'failures': [root_glob('failures', '')], 'failures_compacted': [root_glob('failures', 'c-')],
    'scans': [root_glob('scans', '')], 'scans_compacted': [root_glob('scans', 'c-')]
});
