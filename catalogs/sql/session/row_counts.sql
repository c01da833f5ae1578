-- What `catalog build` reports: models, failures, scans (counting layers would read every layer file).
SELECT
    (SELECT count(*) FROM models) AS models,
    (SELECT count(*) FROM failures) AS failures,
    (SELECT count(*) FROM scans) AS scans
