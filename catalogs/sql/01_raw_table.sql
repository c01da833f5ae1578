-- raw_{{table}}_in(files): every stored row of the {{table}} table (rendered once per table: layers,
-- models, failures, scans). `files` is a STRUCT as store_files() returns (00_store_files.sql).
-- union_by_name: files of older schema versions (fewer columns) read with NULLs; the zero-row seed file
-- of the current schema guarantees every declared column exists, and holds the legacy names of renamed
-- columns too (catalogs/schema.py LEGACY_COLUMNS), so a store of old files, new files or both reads
-- analysed_at from whichever name a file has. hive_partitioning exposes the folder level (owner= /
-- month=) as a column, so WHERE on it prunes files.
-- De-duplication during compaction: compacted files (c-*.parquet) win; a per-model file (m-*.parquet)
-- is read only while no compacted file holds its record_key. Compaction writes the compacted file
-- before deleting the per-model files, so at every instant each record is read exactly once.
CREATE OR REPLACE MACRO raw_{{table}}_in(files) AS TABLE
SELECT * EXCLUDE (filename, analyzed_at) REPLACE (coalesce(analysed_at, analyzed_at) AS analysed_at)
FROM read_parquet(files['{{table}}'], union_by_name = true, hive_partitioning = true, filename = true)
WHERE starts_with(parse_filename(filename), 'c-')
   OR record_key NOT IN (
        SELECT record_key
        FROM read_parquet(files['{{table}}_compacted'], union_by_name = true, hive_partitioning = true)
   );
