SELECT data_root, fingerprint FROM _catalog_meta
