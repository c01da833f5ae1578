"""The Dockerfile, read as text (no Docker engine here): sources exist, pins are used, runtime is safe."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib

from infra_files import dockerfile_instructions


def copy_sources(dockerfile) -> list[str]:
    sources = []
    for keyword, args in dockerfile:
        if keyword == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources += words[:-1]
    return sources


def test_parser_joins_continuations_and_skips_comments():
    text = "# c\nFROM a\nRUN x \\\n # inner comment\n && y\nCOPY --chown=u:u p q /d/\n"
    assert dockerfile_instructions(text) == [
        ("FROM", "a"),
        ("RUN", "x && y"),
        ("COPY", "--chown=u:u p q /d/"),
    ]


def test_base_image_and_non_root_user(dockerfile):
    froms = [args for kw, args in dockerfile if kw == "FROM"]
    assert froms == ["python:3.11-slim"]
    users = [args for kw, args in dockerfile if kw == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    # Nothing is installed after switching to the runtime user (it cannot write /usr/local).
    last_user = max(i for i, (kw, _) in enumerate(dockerfile) if kw == "USER")
    assert not [a for kw, a in dockerfile[last_user:] if kw == "RUN" and "pip install" in a]


def test_every_copied_path_exists_and_is_not_dockerignored(repo, dockerfile):
    sources = copy_sources(dockerfile)
    assert sources, "the image copies the repo"
    ignore = [
        line.strip()
        for line in (repo / "infra" / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in sources:
        assert (repo / source).exists(), (
            f"COPY {source}: no such path in the repo (build context = repo root)"
        )
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignore), f"{source} is dockerignored"


def test_every_package_and_packaging_file_is_copied(repo, dockerfile):
    """`pip install .` in the image needs what pyproject.toml names: packages, readme, package data."""
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    sources = {s.rstrip("/") for s in copy_sources(dockerfile)}
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert package in sources, f"package {package} is not copied into the image"
    for name in ("pyproject.toml", "constraints.txt", pyproject["project"]["readme"]):
        assert name in sources


def test_pip_installs_are_constrained_and_torch_is_cpu_2_13(repo, dockerfile):
    runs = [args for kw, args in dockerfile if kw == "RUN"]
    installs = [part for run in runs for part in run.split("&&") if "pip install" in part]
    assert installs
    for command in installs:
        assert "-c constraints.txt" in command, f"unconstrained install: {command.strip()}"
    assert any(re.search(r"pip install .* \.\s*$", c.strip()) for c in installs), (
        "the repo itself is installed"
    )
    pins = (repo / "constraints.txt").read_text().split()
    assert "torch==2.13.0" in pins
    args = dict(a.split("=", 1) for kw, a in dockerfile if kw == "ARG" and "=" in a)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert any(
        "--extra-index-url" in c and "TORCH_INDEX_URL" in c and c.strip().endswith("torch") for c in installs
    )


def env_of(dockerfile) -> dict[str, str]:
    env = {}
    for keyword, args in dockerfile:
        if keyword == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def test_runtime_environment(dockerfile):
    env = env_of(dockerfile)
    assert env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    volumes = " ".join(args for kw, args in dockerfile if kw == "VOLUME")
    mounted = re.findall(r'"(/[^"]+)"', volumes)
    assert any(env["HF_HOME"].startswith(v.rstrip("/") + "/") for v in mounted), "HF_HOME must be on a volume"
    assert "/shared" in mounted, "the shared volume (shard temp dir, folders to scan)"


def test_image_label_matches_package_version(repo, image, dockerfile):
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    assert image.endswith(":" + version)
    labels = " ".join(args for kw, args in dockerfile if kw == "LABEL")
    assert f'org.opencontainers.image.version="{version}"' in labels
