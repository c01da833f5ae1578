-- The DATA root of this session (00_store_files.sql): ww_spectral_root, glob characters escaped, is what
-- the views' globs start with; ww_spectral_data_root, as given, is where `show` lists one model's files.
SET VARIABLE ww_spectral_root = $root;
SET VARIABLE ww_spectral_data_root = $data_root;
