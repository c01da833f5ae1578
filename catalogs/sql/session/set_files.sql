-- The files the views read in this session instead of the DATA root's globs (00_store_files.sql).
SET VARIABLE ww_spectral_files = $files
