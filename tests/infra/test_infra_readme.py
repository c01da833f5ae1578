"""infra/README.md stays true to the tree: every infra file it names exists, and every infra file is named."""

from __future__ import annotations

import re


def test_readme_names_existing_files_and_covers_all_of_infra(repo):
    text = (repo / "infra" / "README.md").read_text()
    named = set(re.findall(r"infra/[A-Za-z0-9_./{},*-]+[A-Za-z0-9_]", text))
    expanded = set()
    for path in named:
        brace = re.search(r"\{([^}]*)\}", path)
        options = brace.group(1).split(",") if brace else [""]
        for option in options:
            concrete = path.replace(brace.group(0), option) if brace else path
            globbed = (
                {p.relative_to(repo).as_posix() for p in repo.glob(concrete)} if "*" in concrete else set()
            )
            expanded |= globbed or {concrete}
    missing = sorted(p for p in expanded if not (repo / p).exists())
    assert not missing, f"README names files that do not exist: {missing}"
    files = {p.relative_to(repo).as_posix() for p in (repo / "infra").rglob("*") if p.is_file()}
    unnamed = sorted(f for f in files - {"infra/README.md"} if f not in expanded)
    assert not unnamed, f"README does not mention: {unnamed}"
    # The three bring-up paths and their tear-downs are all there.
    for phrase in (
        "ray up",
        "ray down",
        "helm uninstall",
        "kubectl",
        "prefect deploy",
        "RAY_AUTH_MODE=token",
    ):
        assert phrase in text
