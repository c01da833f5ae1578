SELECT getvariable('ww_spectral_data_root')
