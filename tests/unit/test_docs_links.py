"""Every pointer into docs/design.md from the code or the README names a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _headings() -> list[str]:
    text = (ROOT / "docs" / "design.md").read_text()
    return [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def test_every_section_the_code_points_to_is_in_the_design_notes() -> None:
    headings = _headings()
    cited = set()
    for path in [*ROOT.glob("batchgen/**/*.py"), *ROOT.glob("bench/*.py"),
                 *ROOT.glob("scripts/*.py")]:
        # A citation may wrap a line, in a docstring or a comment.
        flat = " ".join(re.sub(r"\n\s*#", "\n", path.read_text()).split())
        cited |= {(path.name, name) for name in re.findall(r'design\.md, "([^"]+)"', flat)}
    assert len(cited) > 15  # the notes are cited from many modules
    missing = sorted((where, name) for where, name in cited
                     if not any(h == name or h.startswith(name + ":") for h in headings))
    assert not missing, f"cited sections missing from docs/design.md: {missing}"


def test_every_readme_link_into_the_design_notes_has_its_anchor() -> None:
    anchors = {_anchor(h) for h in _headings()}
    linked = set(re.findall(r"docs/design\.md#([a-z0-9-]+)", (ROOT / "README.md").read_text()))
    assert linked, "the README links into the design notes"
    assert linked <= anchors, f"README links to missing sections: {sorted(linked - anchors)}"
