-- The sandbox every catalog connection runs under once its views exist (catalogs/catalog.py connect()).
-- User SQL (the sql command, leaderboard --where) reaches the store's own files and nothing else:
-- no other file (read_text, read_blob, read_csv, glob, parquet_metadata, ATTACH...), no network (http,
-- s3 URLs other than the store's), no extension install or load, no Python objects by name.
-- $allowed: the DATA root and the in-memory seed folder, each ending in '/'; DuckDB adds its own temp
-- folder. $timeout_ms: the longest a query may run. lock_configuration comes last: after it no SET works.
SET allowed_directories = $allowed;
SET enable_external_access = false;
SET autoinstall_known_extensions = false;
SET autoload_known_extensions = false;
SET allow_community_extensions = false;
SET python_enable_replacements = false;
SET max_execution_time = $timeout_ms;
SET parquet_metadata_cache = true;
SET enable_progress_bar = false;
SET lock_configuration = true;
