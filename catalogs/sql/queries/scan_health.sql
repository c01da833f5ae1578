-- `ww-spectral scans`: the scan-health view (catalogs/sql/50_scan_health.sql), newest scan first.
SELECT * FROM scan_health ORDER BY started_at DESC NULLS LAST, scan_id DESC
