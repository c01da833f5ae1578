"""Prefect flows of ww-spectral: the nightly hub scan, an explicit list of models, a local folder.

Each flow builds its ScanSettings once (its parameters, then WW_SCAN_* / WW_HUB_* variables:
pipelines/settings.py), names what to list, and hands both to `pipelines.scan.run_scan`: list, skip
revisions already stored with the same analysis options, analyse the rest as one Prefect task per model
revision whose heavy work runs on Ray, compact and refresh the catalog, record a `scans` row, return the
scan summary dict (keys: pipelines/scan.py). Every flow takes `options`: the analysis options (None = the
default analysis; an option set name of pipelines/settings.py OPTION_SETS, analysis flags as one string,
or a dict of AnalysisOptions fields), whose fingerprint is the options_hash results are stored and
skipped under, so one store holds several option sets side by side.

Runs with nothing configured: Prefect's ephemeral API (no PREFECT_API_URL needed: no Prefect code runs in
Ray workers) and a private local Ray with the machine's cores. With ray_address / RAY_ADDRESS the same
flow body runs on an existing cluster. Deployments: infra/prefect/prefect.yaml (entrypoints in this file).
"""

from __future__ import annotations

from pathlib import Path

# Absolute imports on purpose: a deployment loads this file by path (entrypoint pipelines/flows.py:...), and
# Prefect then names it "flows" with pipelines/ as its package path, so relative imports would load a second
# copy of every module as flows.<name>; objects pickled from those (work items, Ray task functions) name
# modules that Ray workers cannot import (tests/infra/test_infra_prefect.py runs the deployment on a worker).
from pipelines import ray_runtime
from pipelines.faults import root_cause
from pipelines.listing import list_folder, list_hub, list_ids
from pipelines.scan import run_scan
from pipelines.settings import ScanSettings, resolve_options
from ww_spectral import hub
from ww_spectral.errors import WWSpectralError

ray_runtime.quiet_environment()  # before prefect is imported: it reads the telemetry switches then

from prefect import flow  # noqa: E402


@flow(name="nightly-scan", persist_result=False, log_prints=False)
def nightly_scan(
    data_root: str = "ww-data",
    author: str | None = None,
    library: str | None = None,
    pipeline_tag: str | None = None,
    min_downloads: int | None = None,
    min_params: int | None = None,
    max_params: int | None = None,
    sort: str = "downloads",
    limit: int = 100,
    ray_address: str | None = None,
    workers: int | None = None,
    endpoint: str | None = None,
    options: dict | str | None = None,
) -> dict:
    """List hub models (one listing call with expand fields), skip stored revisions, analyse the rest."""
    settings = ScanSettings.from_env(data_root=data_root, ray_address=ray_address, workers=workers, endpoint=endpoint,
                                     options=resolve_options(options))
    query = {"author": author, "library": library, "pipeline_tag": pipeline_tag, "min_downloads": min_downloads,
             "min_params": min_params, "max_params": max_params, "sort": sort, "limit": limit}
    try:
        return run_scan(source="hub", filters={**query, "endpoint": hub.resolve_endpoint(endpoint)},
                        list_fn=lambda: list_hub(endpoint=endpoint, hub_settings=settings.hub, **query),
                        settings=settings)
    except Exception as exc:
        cause = root_cause(exc)
        if isinstance(cause, WWSpectralError) and cause is not exc:
            raise cause from exc  # listing failed for good: one clear error (the CLI prints it, exit 2)
        raise


@flow(name="analyze-models", persist_result=False, log_prints=False)
def analyze_models(
    model_ids: list[str],
    data_root: str = "ww-data",
    ray_address: str | None = None,
    workers: int | None = None,
    endpoint: str | None = None,
    options: dict | str | None = None,
) -> dict:
    """Analyse explicit models: hub ids "org/name[@revision]" (or local paths)."""
    ids = sorted(dict.fromkeys(model_ids))
    settings = ScanSettings.from_env(data_root=data_root, ray_address=ray_address, workers=workers, endpoint=endpoint,
                                     options=resolve_options(options))
    return run_scan(source="models", filters={"model_ids": ids}, settings=settings,
                    list_fn=lambda: list_ids(ids, endpoint=endpoint, timeout_s=settings.model_timeout_s,
                                             hub_settings=settings.hub))


@flow(name="scan-folder", persist_result=False, log_prints=False)
def scan_folder(
    folder: str,
    data_root: str = "ww-data",
    ray_address: str | None = None,
    workers: int | None = None,
    options: dict | str | None = None,
) -> dict:
    """Analyse every model folder under `folder` (or every repo of a Hugging Face cache)."""
    settings = ScanSettings.from_env(data_root=data_root, ray_address=ray_address, workers=workers,
                                     options=resolve_options(options))
    folder_abs = str(Path(folder).expanduser().resolve())
    return run_scan(source="folder", filters={"folder": folder_abs}, settings=settings,
                    list_fn=lambda: list_folder(folder_abs, timeout_s=settings.model_timeout_s))


__all__ = ["nightly_scan", "analyze_models", "scan_folder"]
