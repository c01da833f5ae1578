-- store_files(): the Parquet files the views read, as a STRUCT of lists of globs: <table> (every file of
-- the table) and <table>_compacted (its compacted c-*.parquet files), for layers, models, failures, scans.
-- By default the globs under the DATA root ({{root}}: the root with glob characters escaped, so a root
-- named 'st[1]' never reads 'st1'). A session may set the variable ww_spectral_files to a STRUCT of the
-- same shape instead: catalogs/catalog.py binds the views against the in-memory seed files only (binding
-- reads the footer of every matched file; 20,000 files for 10,000 models), and a session over a store
-- without seed files reads the in-memory seeds plus the globs that match a file.
-- The *_in macros (01_raw_table.sql and after) take such a STRUCT; a drill-down to one model passes the
-- files of its owner= folder only (catalogs/catalog.py show_model).
CREATE OR REPLACE MACRO root_glob(table_name, prefix) AS
    {{root}} || '/' || table_name || '/*/' || prefix || '*.parquet';

CREATE OR REPLACE MACRO store_files() AS coalesce(getvariable('ww_spectral_files'), {
    'layers': [root_glob('layers', '')], 'layers_compacted': [root_glob('layers', 'c-')],
    'models': [root_glob('models', '')], 'models_compacted': [root_glob('models', 'c-')],
    'failures': [root_glob('failures', '')], 'failures_compacted': [root_glob('failures', 'c-')],
    'scans': [root_glob('scans', '')], 'scans_compacted': [root_glob('scans', 'c-')]
});
