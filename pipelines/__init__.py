"""Prefect flows and tasks of ww-spectral; the only package that touches Ray."""
