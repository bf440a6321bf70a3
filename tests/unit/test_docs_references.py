"""Every reference to the project's docs resolves: a `docs/NAME.md` path names a shipped file, a
section `NAME.md §N` names a numbered section of it, and a Markdown link `…md#anchor` names one
of its headings. Checked in the README, the docs themselves, every source module and benchmark,
and the `--help` text of every command (issue: the README and `--help` pointed to a
`docs/cbs-api.md §5` that was not in the repository)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from opencbs.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: `docs/cbs-api.md`, `cbs-api.md §5`, `style.md §16, §17`, `cbs-api.md §1–3`.
DOC_NAME = r"(?:docs/)?(?P<name>cbs-api|style|architecture|operations)\.md"
SECTION_REF = re.compile(DOC_NAME + r"(?P<sections>(?:[ ,]*(?:and )?§\s*\d+(?:[–-]§?\d+)?)*)")
DOCS_PATH = re.compile(r"\bdocs/(?P<file>[\w.-]+\.md)")
BARE_SECTION = re.compile(r"(?<![\w.])§\s*(\d+)")
MD_LINK = re.compile(r"\]\((?P<target>[^)\s]+?\.md)(?:#(?P<anchor>[^)\s]+))?\)")


def _sources() -> Iterator[Path]:
    yield ROOT / "README.md"
    yield from sorted(DOCS.glob("*.md"))
    yield from sorted((ROOT / "src" / "opencbs").rglob("*.py"))
    yield from sorted((ROOT / "bench").glob("*.py"))


def _help_texts() -> Iterator[tuple[str, str]]:
    def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[str, str]]:
        with click.Context(cmd, info_name=" ".join(path)) as ctx:
            yield " ".join(path), cmd.get_help(ctx)
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])

    yield from walk(cli, ["opencbs"])


def _sections(name: str) -> set[int]:
    """Numbered sections of a doc: headings `## 5. …` and list items `16. **…**`."""
    text = (DOCS / f"{name}.md").read_text(encoding="utf-8")
    found = {int(m) for m in re.findall(r"^#+\s+(\d+)\.", text, re.M)}
    found |= {int(m) for m in re.findall(r"^(\d+)\.\s+\*\*", text, re.M)}
    return found


def _slugs(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    slugs = set()
    for heading in re.findall(r"^#+\s+(.+)$", path.read_text(encoding="utf-8"), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def _problems(where: str, text: str, base: Path) -> list[str]:
    problems = []
    for m in DOCS_PATH.finditer(text):
        if not (DOCS / m["file"]).is_file():
            problems.append(f"{where}: docs/{m['file']} is not in the repository")
    for m in SECTION_REF.finditer(text):
        have = _sections(m["name"]) if (DOCS / f"{m['name']}.md").is_file() else set()
        if not (DOCS / f"{m['name']}.md").is_file():
            problems.append(f"{where}: {m['name']}.md is not in docs/")
        for first, last in re.findall(r"§\s*(\d+)(?:[–-]§?(\d+))?", m["sections"]):
            for n in range(int(first), int(last or first) + 1):
                if n not in have:
                    problems.append(f"{where}: {m['name']}.md has no §{n}")
    if "cbs-api.md" in text and "style.md" not in text:
        # A module that cites only the API contract may write its sections bare: `(§3)`.
        have = _sections("cbs-api")
        for n in BARE_SECTION.findall(text):
            if int(n) not in have:
                problems.append(f"{where}: §{n} is not a section of cbs-api.md")
    for m in MD_LINK.finditer(text):
        target = m["target"]
        if "://" in target:
            continue
        file = (base / target).resolve()
        if not file.is_file():
            problems.append(f"{where}: link to {target}, which does not exist")
        elif m["anchor"] and m["anchor"] not in _slugs(file):
            problems.append(f"{where}: {target} has no heading #{m['anchor']}")
    return problems


def test_the_docs_the_product_refers_to_are_shipped() -> None:
    for name in ("cbs-api", "architecture", "operations", "style"):
        assert (DOCS / f"{name}.md").is_file(), name


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_docs_reference_in_a_file_resolves(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert _problems(str(path.relative_to(ROOT)), text, path.parent) == []


def test_every_docs_reference_in_help_texts_resolves() -> None:
    problems = []
    for where, text in _help_texts():
        problems += _problems(f"`{where} --help`", text, ROOT)
    assert problems == []


def test_the_checker_finds_a_dangling_reference() -> None:
    assert _problems("x", "see docs/nowhere.md", ROOT)
    assert _problems("x", "see cbs-api.md §42", ROOT)
    assert _problems("x", "see [it](docs/operations.md#no-such-heading)", ROOT)
    assert not _problems("x", "see cbs-api.md §5 and [it](docs/operations.md#login-lockout)", ROOT)
