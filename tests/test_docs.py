"""The README and docs/ are short and their links resolve: every relative link points at a file that exists,
and every #anchor at a heading of that file (GitHub's rule for heading anchors)."""
import re

import pytest
from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "theory" / "RESULTS.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # a '#' in a code block is not a heading
    return {slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_slug_follows_githubs_rule():
    assert slug("The viewmaker game at quick scale on the CPU (2026-12-02, issue 11)") == \
        "the-viewmaker-game-at-quick-scale-on-the-cpu-2026-12-02-issue-11"
    assert slug("Resume, safety") == "resume-safety" and slug("On a GPU") == "on-a-gpu"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    links = [m[1] for m in LINK.finditer(doc.read_text())]
    broken = []
    for link in links:
        if re.match(r"[a-z]+://|mailto:", link):
            continue  # the web is not checked (no network in tests)
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(f"{link}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.name}")
    assert not broken, "\n".join(broken)


def test_readme_is_short_and_keeps_the_two_quickstart_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in quickstart.splitlines() if line.startswith("    ")]
    assert commands == [
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && '
        "papermill notebooks/pretrain.ipynb out.ipynb -p overlay shapes",
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && python -m pytest']
