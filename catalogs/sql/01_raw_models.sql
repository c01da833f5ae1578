-- raw_models: every row of every models Parquet file under the DATA root.
-- union_by_name: files of older schema versions (fewer columns) read with NULLs; the zero-row seed file
-- of the current schema guarantees every declared column exists. hive_partitioning exposes the folder
-- level (owner= / month=) as a column, so WHERE on it prunes files.
-- De-duplication during compaction: compacted files (c-*.parquet) win; a per-model file (m-*.parquet)
-- is read only while no compacted file holds its record_key. Compaction writes the compacted file
-- before deleting the per-model files, so at every instant each record is read exactly once.
-- The macro raw_models_in(files, compacted_files) takes globs or explicit file lists: a drill-down to one
-- model passes the files of its owner= folder only (union_by_name reads the footer of every file it is
-- given, so the narrow list is what keeps it fast); the view passes the globs of the whole table.
CREATE OR REPLACE MACRO raw_models_in(files, compacted_files) AS TABLE
SELECT * EXCLUDE (filename)
FROM read_parquet(files, union_by_name = true, hive_partitioning = true, filename = true)
WHERE starts_with(parse_filename(filename), 'c-')
   OR record_key NOT IN (
        SELECT record_key FROM read_parquet(compacted_files, union_by_name = true, hive_partitioning = true)
   );

CREATE OR REPLACE VIEW raw_models AS
FROM raw_models_in({{root}} || '/models/*/*.parquet', {{root}} || '/models/*/c-*.parquet');
