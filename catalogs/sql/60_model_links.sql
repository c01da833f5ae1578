-- model_links: hub revisions not analysed because their weight files are byte-identical (same LFS sha256s)
-- to a revision already stored or being analysed (pipelines/unit.py; written by catalogs/store.py
-- write_link, schema LINKS_SCHEMA there). One row per linked revision and option set:
--   repo_id, revision, options_hash   the duplicate (its rows are those of the linked revision)
--   linked_repo_id, linked_revision   the revision whose rows it shares
--   linked_stored                     false: the linked revision was still being analysed when the link was
--                                     written (the next scan checks again)
--   content_digest, sha256s_json      the weight bytes (digest of the sorted sha256s; {file: sha256})
--   linked_at, owner
-- model_links_in(files): the same over a list of link-file globs. The store's links/ folder always holds
-- a zero-row seed once `catalog build` (or a scan) ran (catalogs/store.py ensure_seeds), so the glob of a
-- built store always matches; while the views are bound against the in-memory seeds (no root set) the
-- in-memory links seed is read instead.
CREATE OR REPLACE MACRO model_links_in(files) AS TABLE
SELECT
    repo_id, revision, options_hash, linked_repo_id, linked_revision, linked_stored, content_digest,
    sha256s_json, linked_at, owner
FROM read_parquet(files, union_by_name = true, hive_partitioning = true)
QUALIFY row_number() OVER (PARTITION BY repo_id, revision, options_hash ORDER BY linked_at DESC) = 1;

CREATE OR REPLACE MACRO links_files() AS CASE
    WHEN getvariable('ww_spectral_root') IS NULL AND getvariable('ww_spectral_files') IS NOT NULL
        THEN [regexp_replace(getvariable('ww_spectral_files')['models'][1], '/models/owner=_seed/.*$',
                             '/links/owner=_seed/c-seed-links.parquet')]
    ELSE [root_glob('links', '')]
END;

CREATE OR REPLACE VIEW model_links AS FROM model_links_in(links_files());
