-- The session's store_files() STRUCT (catalogs/sql/00_store_files.sql).
SELECT store_files()
