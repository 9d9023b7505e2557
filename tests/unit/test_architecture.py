"""The house stays walkable: no import cycles, no product code that needs the test suite, every
reference to a repository file resolves, and the README's layout table matches the tree."""

from __future__ import annotations

import ast
import fnmatch
import io
import re
import tokenize
from pathlib import Path

import pytest

from appliance.paths import REPO
from tests import importgraph

SKIP_DIRS = {".git", ".venv", "build", "cache", "out", "__pycache__", ".pytest_cache",
             ".ruff_cache", "node_modules"}
TEXT_SUFFIXES = {".md", ".py", ".sh", ".toml", ".j2", ".yml", ".yaml", ".cfg", ".lst", ".S",
                 ".c", ".config", ""}
# Documents that live outside the repository: nothing may point at them.
OUTSIDE = re.compile(r"DESIGN\.md|DEVELOPERS\.md|tinycore11\.md|\.\./shared")
# A repository path: one of the project's top-level folders, then a path. `kernel/` is
# also the start of every path in modules.dep, so only its own files count there.
REPO_PATH = re.compile(
    r"(?<![\w./$<{-])("
    r"(?:appliance|tests|packer|iso-remaster|overlays|docs|\.github|\.ci)/[\w./@-]*[\w/]"
    r"|kernel/(?:[\w-]+\.(?:toml|md|config)|tc11-config[\w.-]*)"
    r"|(?:README|docs/[\w-]+)\.md#[\w-]+"
    r")")
MD_LINK = re.compile(r"\]\(([^)#\s]+)(#[\w-]+)?\)")


def repo_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.stat().st_size < 512_000:
            files.append(path)
    return sorted(files)


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(md: Path) -> set[str]:
    return {slug(m[1]) for m in re.finditer(r"^#+\s+(.*)$", read(md), re.M)}


def unresolved(ref: str, base: Path) -> str | None:
    """Why `ref` (a path, maybe with #anchor) does not resolve from `base`, or None."""
    target, _, anchor = ref.partition("#")
    path = (base / target) if not target.startswith("/") else None
    if path is None or not path.exists():
        return "no such file"
    if anchor and anchor not in anchors(path):
        return f"no heading #{anchor}"
    return None


def prose(path: Path) -> str:
    """What a reader reads as prose: a Python file's comments and docstrings, else the file."""
    text = read(path)
    if path.suffix != ".py":
        return text
    parts = [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
             if t.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node) or "")
    return "\n".join(parts)


def references(path: Path) -> list[tuple[str, Path]]:
    text = prose(path)
    found = [(m[1], REPO) for m in REPO_PATH.finditer(text)]
    if path.suffix == ".md":
        found += [(m[1] + (m[2] or ""), path.parent) for m in MD_LINK.finditer(text)
                  if "://" not in m[1] and not m[1].startswith("mailto:")]
    return [(ref.rstrip("./"), base) if not ref.endswith("/") else (ref, base)
            for ref, base in found if not any(c in ref for c in "*<>{}$")]


def test_no_import_cycle_inside_the_package():
    assert importgraph.cycles(importgraph.graph()) == []


def test_the_product_never_imports_the_test_suite():
    assert importgraph.foreign_imports() == {}


def test_the_graph_reader_sees_cycles_and_test_imports(tmp_path):
    pkg = tmp_path / "appliance"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from appliance import b\n")
    (pkg / "b.py").write_text("def f():\n    from appliance.sub import c\n")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from appliance import d\n"
        "from appliance.a import x\nimport tests.fakes\n")
    (pkg / "d.py").write_text("from appliance.sub import c\n")
    edges = importgraph.graph(tmp_path)
    assert importgraph.cycles(edges) == [["appliance.a", "appliance.b", "appliance.sub.c"]]
    assert "appliance.d" not in edges["appliance.sub.c"]  # TYPE_CHECKING never runs
    assert importgraph.foreign_imports(tmp_path) == {"appliance.sub.c": {"tests.fakes"}}


def test_nothing_points_outside_the_repository():
    hits = [f"{p.relative_to(REPO)}:{n}" for p in repo_files()
            for n, line in enumerate(read(p).splitlines(), 1)
            if OUTSIDE.search(line) and p != Path(__file__)]
    assert hits == []


def test_every_reference_to_a_repository_file_resolves():
    broken = []
    for path in repo_files():
        if path == Path(__file__):
            continue  # its own examples of broken references
        for ref, base in references(path):
            why = unresolved(ref, base)
            if why:
                broken.append(f"{path.relative_to(REPO)}: {ref} ({why})")
    assert broken == []


@pytest.mark.parametrize("text, bad", [
    ("see appliance/nowhere.py", "appliance/nowhere.py"),
    ("in [the docs](docs/none.md)", "docs/none.md"),
    ("README.md#no-such-section", "README.md#no-such-section"),
])
def test_the_reference_check_catches_a_broken_one(tmp_path, text, bad):
    (tmp_path / "x.md").write_text(text + "\n")
    (tmp_path / "y.py").write_text(f"# {text}\nX = 'appliance/in-code-only.py'\n")
    assert {r for r, _ in references(tmp_path / "y.py")} == {r for r, _ in references(tmp_path / "x.md")}
    refs = references(tmp_path / "x.md")
    assert any(ref.startswith(bad.split("#")[0]) for ref, _ in refs)
    assert all(unresolved(ref, REPO if base == REPO else tmp_path) for ref, base in refs)


def layout_rows() -> list[tuple[str, str]]:
    """(folder pattern, description) of each row of the README's Layout table."""
    text = read(REPO / "README.md")
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    rows = []
    for first, description in re.findall(r"^\|([^|]*`[^|]*)\|(.*)\|\s*$", section, re.M):
        rows += [(pattern, description) for pattern in re.findall(r"`([^`]+)`", first)]
    assert rows, "README.md has no Layout table"
    return rows


def tree_folders() -> list[str]:
    folders = {"./"}
    for path in repo_files():
        rel = path.parent.relative_to(REPO).as_posix()
        if rel != ".":
            folders.add(rel + "/")
    return sorted(folders)


def covers(pattern: str, folder: str) -> bool:
    if pattern.endswith("**"):
        return folder.startswith(pattern[:-2]) or fnmatch.fnmatch(folder, pattern[:-2] + "*")
    return fnmatch.fnmatch(folder, pattern)


def test_the_readme_layout_table_matches_the_tree():
    rows = layout_rows()
    folders = tree_folders()
    unlisted = [f for f in folders if not any(covers(p, f) for p, _ in rows)]
    stale = [p for p, _ in rows if not any(covers(p, f) for f in folders)]
    assert (unlisted, stale) == ([], [])
    for pattern, description in rows:
        if pattern.startswith("appliance") and "*" not in pattern:
            modules = sorted(p.stem for p in (REPO / pattern).glob("*.py")
                             if p.stem != "__init__")
            missing = [m for m in modules if f"`{m}`" not in description]
            assert missing == [], f"README Layout row {pattern} does not name {missing}"
