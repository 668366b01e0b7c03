"""The documentation agrees with the code: the configuration reference is the schema's,
and every page the README links exists."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_generated_from_the_schema() -> None:
    generator = runpy.run_path(str(REPO / "docs" / "configuration.py"))
    assert (REPO / "docs" / "configuration.md").read_text() == generator["page"](), (
        "docs/configuration.md is out of date: run python docs/configuration.py")


def test_configuration_reference_lists_every_schema_key() -> None:
    generator = runpy.run_path(str(REPO / "docs" / "configuration.py"))
    page = generator["page"]()
    for key in ("runs.{run}.learning_rate", "sample.method", "prepare.identity",
                "families.{family}.source", "loglik.tolerance"):
        assert f"`{key}`" in page


def test_readme_links_resolve_and_stay_short() -> None:
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert links
    for link in links:
        if not link.startswith("http"):
            assert (REPO / link).exists(), link
    assert len(readme.splitlines()) <= 200
