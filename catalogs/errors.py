"""Errors of the store and the catalog; each message names the fix."""

from __future__ import annotations

from ww_spectral.errors import WWSpectralError


class CatalogError(WWSpectralError):
    """A store or catalog operation failed (bad root, unknown metric/group, query error)."""


class SchemaError(CatalogError, ValueError):
    """A table does not conform to its declared schema (missing, unknown or mistyped column)."""


class ReadOnlyError(CatalogError):
    """A statement that writes was given to the read-only SQL runner."""
