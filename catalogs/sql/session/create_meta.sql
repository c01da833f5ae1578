-- _catalog_meta: what the catalog was built for; connect() compares the fingerprint to decide whether
-- a catalog file is current (same root, SQL, metric table and schema version).
CREATE OR REPLACE TABLE _catalog_meta AS
SELECT $data_root AS data_root, $fingerprint AS fingerprint, $schema_version AS schema_version
