"""The spec ships in the clone (docs/spec/), with the vectors the tests use beside it, and the
README's and docs' links point inside the repository, at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_spec_vectors_are_the_tested_ones():
    assert (REPO / "docs/spec/pow-v1-vectors.json").read_bytes() == (REPO / "tests/data/pow-v1-vectors.json").read_bytes()
    assert (REPO / "docs/spec/pow-v1.md").read_text().startswith("#")


def test_links_stay_inside_the_clone_and_exist():
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert "../shared" not in text, f"{doc.name} links outside the clone"
        for target in re.findall(r"\]\(([^)#\s]+)\)", text):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: link to {target} is broken"
