-- _catalog_meta: what the catalog was built with; connect() compares the fingerprint to decide whether
-- a catalog file is current (same SQL, metric table, tier rule and schema version). The views hold no
-- DATA root (00_store_files.sql), so the same file serves the store wherever it is copied.
CREATE OR REPLACE TABLE _catalog_meta AS
SELECT $fingerprint AS fingerprint, $schema_version AS schema_version
