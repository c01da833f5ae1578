"""Fixtures for the infra/ tests: parsed config files and the image the Dockerfile declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from infra_files import dockerfile_instructions

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((INFRA / "docker" / "Dockerfile").read_text())


@pytest.fixture(scope="session")
def image(dockerfile) -> str:
    """The image reference the Dockerfile's LABEL declares; every config must run exactly this."""
    labels = " ".join(args for kw, args in dockerfile if kw == "LABEL")
    match = re.search(r'org\.opencontainers\.image\.ref\.name="([^"]+)"', labels)
    assert match, "infra/docker/Dockerfile must declare LABEL org.opencontainers.image.ref.name"
    return match.group(1)


@pytest.fixture(scope="session")
def prefect_yaml() -> dict:
    return yaml.safe_load((INFRA / "prefect" / "prefect.yaml").read_text())


@pytest.fixture(scope="session")
def raycluster() -> dict:
    return yaml.safe_load((INFRA / "k8s" / "raycluster.yaml").read_text())
