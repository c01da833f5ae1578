-- scan_health: one row per scan, newest first: what an operator reads the morning after a nightly scan
-- (`ww-spectral scans --data DATA`). From the scans row's health columns (catalogs/schema.py, written by
-- pipelines/scan.py health_columns); rows of scans older than those columns show NULL there.
--   total_s          the scan's wall time, catalog refresh included (seconds + catalog_s)
--   models_per_min   models analysed per minute of total_s; models_per_min_fanout: per minute of the
--                    analysis phase alone (fanout_s)
--   mb_downloaded    weights and config of the analysed models (1 MB = 10^6 bytes); mb_per_s over fanout_s
--   orchestration_ms_per_model
--                    the fan-out's wall time beyond the models' own work spread over the slots, per model
--                    analysed or failed: (fanout_s - work / slots) / (n_requested - n_skipped -
--                    n_skipped_failed), where work = download + plan + analysis + assemble + write seconds
--                    summed over models (prefetch is download overlapped with other models' work, so not
--                    counted) - what Prefect tasks, Ray dispatch and idle slots cost (benchmarks/bench_rehearsal.py
--                    reports the same figure)
--   n_skipped_failed revisions not attempted because their last attempt failed for good (pipelines/faults.py
--                    skips_rescan; `scan --retry-failed` attempts them); NULL in rows of older scans
--   list_s .. catalog_s   wall seconds of each scan phase
--   download_s .. write_s seconds of each model stage summed over the models (in the Ray workers, or the
--                    flow for large models); analyze_s is the model tasks' wait for their layers' Ray
--                    chunks, analysis_s the seconds spent inside the spectral analysis proper
--   failures_by_type models that failed for good, per error type [stage], most first; retries_by_type:
--                    attempts that failed and were retried (a 429 that later succeeded shows here only)
CREATE OR REPLACE VIEW scan_health AS
WITH s AS (
    SELECT
        *,
        TRY_CAST(timings_json AS JSON) AS t,
        TRY_CAST(stage_seconds_json AS JSON) AS st,
        from_json(faults_json, '[{"stage": "VARCHAR", "error_type": "VARCHAR", "failed": "BIGINT", "retried": "BIGINT"}]')
            AS faults
    FROM raw_scans_in(store_files())
), w AS (
    SELECT
        *,
        TRY_CAST(t->>'catalog' AS DOUBLE) AS catalog_s,
        fanout_seconds AS fanout_s,
        TRY_CAST(st->>'download' AS DOUBLE) AS download_s,
        TRY_CAST(st->>'plan' AS DOUBLE) AS plan_s,
        TRY_CAST(st->>'assemble' AS DOUBLE) AS assemble_s,
        TRY_CAST(st->>'write' AS DOUBLE) AS write_s
    FROM s
)
SELECT
    scan_id,
    source,
    started_at,
    round(seconds + coalesce(catalog_s, 0), 1) AS total_s,
    n_requested,
    n_done,
    n_skipped,
    n_skipped_failed,
    n_failed,
    n_retried,
    round(60 * n_done / nullif(seconds + coalesce(catalog_s, 0), 0), 1) AS models_per_min,
    round(60 * n_done / nullif(fanout_s, 0), 1) AS models_per_min_fanout,
    round(bytes_downloaded / 1e6, 1) AS mb_downloaded,
    round(bytes_downloaded / 1e6 / nullif(fanout_s, 0), 2) AS mb_per_s,
    round(1000 * (fanout_s - (download_s + plan_s + analysis_seconds + assemble_s + write_s) / nullif(slots, 0))
          / nullif(n_requested - n_skipped - coalesce(n_skipped_failed, 0), 0), 2) AS orchestration_ms_per_model,
    array_to_string(list_transform(list_sort(list_transform(list_filter(faults, lambda f: f.failed > 0),
        lambda f: {'n': -f.failed, 'text': f.error_type || ' [' || f.stage || '] ' || f.failed})), lambda x: x.text),
        ', ') AS failures_by_type,
    array_to_string(list_transform(list_sort(list_transform(list_filter(faults, lambda f: f.retried > 0),
        lambda f: {'n': -f.retried, 'text': f.error_type || ' [' || f.stage || '] ' || f.retried})), lambda x: x.text),
        ', ') AS retries_by_type,
    round(TRY_CAST(t->>'list' AS DOUBLE), 2) AS list_s,
    round(TRY_CAST(t->>'select' AS DOUBLE), 2) AS select_s,
    round(TRY_CAST(t->>'ray_start' AS DOUBLE), 2) AS ray_start_s,
    round(fanout_s, 2) AS fanout_s,
    round(TRY_CAST(t->>'ray_stop' AS DOUBLE), 2) AS ray_stop_s,
    round(catalog_s, 2) AS catalog_s,
    round(download_s, 2) AS download_s,
    round(TRY_CAST(st->>'prefetch' AS DOUBLE), 2) AS prefetch_s,
    round(plan_s, 2) AS plan_s,
    round(TRY_CAST(st->>'analyze' AS DOUBLE), 2) AS analyze_s,
    round(analysis_seconds, 2) AS analysis_s,
    round(assemble_s, 2) AS assemble_s,
    round(write_s, 2) AS write_s,
    slots,
    n_batches,
    n_batched,
    bytes_downloaded,
    options_hash,
    finished_at,
    TRY_CAST(filters_json AS JSON) AS filters
FROM w
ORDER BY started_at DESC, scan_id DESC;
