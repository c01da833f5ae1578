SELECT fingerprint FROM _catalog_meta
