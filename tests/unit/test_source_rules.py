"""Rules over the source tree of ``src/opencbs`` (issue 10; docs/style.md 12 and 18;
docs/architecture.md "Layers and rooms"). Fast: it parses the files, it imports nothing of ours.

- size: no module over ``MAX_MODULE_LINES`` lines (the file's lines as ``ruff format`` leaves
  them); no function over ``MAX_FUNCTION_LINES`` lines, counted from its ``def`` line to its
  last line (``end_lineno - lineno + 1``: decorators are not counted, nested functions count in
  their outer function as well as on their own). ``store/migrations`` is exempt (generated).
- import cycles: every import counts (module level, inside functions, under
  ``if TYPE_CHECKING``). ``from opencbs.x import name`` is an import of ``opencbs.x.name`` when
  that is a module, else of ``opencbs.x``. A package's ``__init__`` importing its own submodules
  is not a cycle with them.
- keyword-only: at most ``MAX_POSITIONAL`` parameters that can be passed by position
  (``self``/``cls`` of a method not counted, ``*args``/``**kwargs`` not counted), and every
  parameter annotated ``bool`` (or ``bool | None``) keyword-only.
- layers: no import goes up the layer table ``LAYERS`` (the same table as
  docs/architecture.md's, which a test here compares).

Each rule has a short allow-list below; an entry says why it must wait. An allow-list entry that
no longer matches anything fails too, so the lists only shrink.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = SRC / "opencbs"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 80
MAX_POSITIONAL = 4

# Folders (relative to src/opencbs) whose files the size rules skip: Alembic's generated files.
SIZE_EXEMPT = ("store/migrations/",)

# The package root (``opencbs/__init__.py``: ``__version__`` only) may be used by every room.
ROOT_ROOM = "opencbs"

# Room -> the other rooms its modules may import (docs/architecture.md "Layers and rooms").
# A room is a subpackage (``engine``) or a top-level module (``settings``).
LAYERS: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "fileio": frozenset(),
    "security": frozenset(),
    "reports": frozenset({"errors"}),
    "model": frozenset({"reports", "errors"}),
    "settings": frozenset({"reports", "model", "errors"}),
    "destinations": frozenset({"model", "errors", "fileio"}),
    "engine": frozenset({"reports", "model", "destinations", "errors", "fileio"}),
    "store": frozenset({"reports", "model", "errors", "fileio", "security", "settings"}),
    "notify": frozenset({"store", "reports", "model", "errors", "settings", "fileio"}),
    "api": frozenset({"store", "notify", "reports", "model", "errors", "security", "settings"}),
    "agent": frozenset({"engine", "destinations", "model", "reports", "errors", "fileio"}),
}
LAYERS["cli"] = frozenset(LAYERS)
LAYERS["__main__"] = frozenset({"cli"})  # python -m opencbs

# Allow-lists: "module path:qualified name" (or "importer -> imported" for imports) -> why.
LONG_MODULES_ALLOWED: dict[str, str] = {}
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}
POSITIONAL_ALLOWED: dict[str, str] = {
    "settings.py:load_settings._Layered.settings_customise_sources": (
        "overrides pydantic-settings' hook: the library's positional signature (mypy checks it)"
    ),
}
CYCLE_EDGES_ALLOWED: dict[str, str] = {}
LAYER_IMPORTS_ALLOWED: dict[str, str] = {}


@dataclass(frozen=True)
class Module:
    name: str  # opencbs.engine.scan
    path: Path
    tree: ast.Module
    lines: int

    @property
    def rel(self) -> str:
        """The path relative to src/opencbs, as the allow-lists name it."""
        return self.path.relative_to(PACKAGE).as_posix()

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    def at(self, line: int) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{line}"


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        text = path.read_text(encoding="utf-8")
        name = ".".join(parts)
        found[name] = Module(name, path, ast.parse(text, str(path)), len(text.splitlines()))
    return found


def _size_checked(module: Module) -> bool:
    return not module.rel.startswith(SIZE_EXEMPT)


def _report(rule: str, offenders: list[str], allowed: dict[str, str], used: set[str]) -> None:
    stale = sorted(set(allowed) - used)
    message = []
    if offenders:
        message.append(f"{rule}: {len(offenders)} offender(s):")
        message.extend(f"  {line}" for line in offenders)
    if stale:
        message.append(f"{rule}: allow-list entries that match nothing (remove them):")
        message.extend(f"  {key}" for key in stale)
    assert not message, "\n".join(message)


# ---------------------------------------------------------------------------------------------
# Functions


@dataclass(frozen=True)
class Function:
    module: Module
    node: ast.FunctionDef | ast.AsyncFunctionDef
    qualname: str
    is_method: bool

    @property
    def key(self) -> str:
        return f"{self.module.rel}:{self.qualname}"

    @property
    def where(self) -> str:
        return f"{self.module.at(self.node.lineno)} {self.qualname}"


def _functions_in(module: Module) -> Iterator[Function]:
    def walk(node: ast.AST, prefix: str, in_class: bool) -> Iterator[Function]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qualname = f"{prefix}{child.name}"
                yield Function(module, child, qualname, in_class)
                yield from walk(child, f"{qualname}.", False)
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.", True)
            else:
                yield from walk(child, prefix, in_class)

    yield from walk(module.tree, "", False)


def functions() -> Iterator[Function]:
    for module in modules().values():
        yield from _functions_in(module)


def test_module_size() -> None:
    offenders, used = [], set()
    for module in modules().values():
        if not _size_checked(module) or module.lines <= MAX_MODULE_LINES:
            continue
        if module.rel in LONG_MODULES_ALLOWED:
            used.add(module.rel)
            continue
        offenders.append(f"{module.at(1)} has {module.lines} lines (budget {MAX_MODULE_LINES})")
    _report("modules over budget", offenders, LONG_MODULES_ALLOWED, used)


def test_function_size() -> None:
    offenders, used = [], set()
    for fn in functions():
        length = (fn.node.end_lineno or fn.node.lineno) - fn.node.lineno + 1
        if not _size_checked(fn.module) or length <= MAX_FUNCTION_LINES:
            continue
        if fn.key in LONG_FUNCTIONS_ALLOWED:
            used.add(fn.key)
            continue
        offenders.append(f"{fn.where} has {length} lines (budget {MAX_FUNCTION_LINES})")
    _report("functions over budget", offenders, LONG_FUNCTIONS_ALLOWED, used)


def _is_bool(annotation: ast.expr | None) -> bool:
    """``bool``, ``bool | None``, ``Optional[bool]``, also as a string annotation."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return _is_bool(ast.parse(annotation.value, mode="eval").body)
    if isinstance(annotation, ast.Name):
        return annotation.id == "bool"
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        sides = (annotation.left, annotation.right)
        is_none = [isinstance(s, ast.Constant) and s.value is None for s in sides]
        return (is_none[0] and _is_bool(sides[1])) or (is_none[1] and _is_bool(sides[0]))
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        return annotation.value.id == "Optional" and _is_bool(annotation.slice)
    return False


def _positional(fn: Function) -> list[ast.arg]:
    params = [*fn.node.args.posonlyargs, *fn.node.args.args]
    if fn.is_method and params and params[0].arg in ("self", "cls"):
        params = params[1:]
    return params


def test_keyword_only_parameters() -> None:
    offenders, used = [], set()
    for fn in functions():
        positional = _positional(fn)
        problems = []
        if len(positional) > MAX_POSITIONAL:
            problems.append(f"{len(positional)} positional parameters (at most {MAX_POSITIONAL})")
        flags = [p.arg for p in positional if _is_bool(p.annotation)]
        if flags:
            problems.append(f"bool parameter(s) not keyword-only: {', '.join(flags)}")
        if not problems:
            continue
        if fn.key in POSITIONAL_ALLOWED:
            used.add(fn.key)
            continue
        offenders.append(f"{fn.where}: {'; '.join(problems)}")
    _report("keyword-only parameters", offenders, POSITIONAL_ALLOWED, used)


# ---------------------------------------------------------------------------------------------
# Imports


@dataclass(frozen=True)
class Import:
    importer: Module
    target: str  # a module of ours
    line: int

    @property
    def key(self) -> str:
        return f"{self.importer.name} -> {self.target}"

    @property
    def where(self) -> str:
        return f"{self.importer.at(self.line)} {self.importer.name} imports {self.target}"


def _known(name: str) -> str:
    """``name``, or its nearest enclosing module we have (``opencbs.x.attr`` -> ``opencbs.x``)."""
    known = modules()
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports_of(module: Module) -> Iterator[Import]:
    known = modules()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT_ROOM or alias.name.startswith(f"{ROOT_ROOM}."):
                    yield Import(module, _known(alias.name), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.name if module.is_package else module.name.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    package = package.rsplit(".", 1)[0]
                base = f"{package}.{base}" if base else package
            if base != ROOT_ROOM and not base.startswith(f"{ROOT_ROOM}."):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield Import(module, full if full in known else _known(base), node.lineno)


def imports() -> Iterator[Import]:
    """Every import of a module of ours, once per importer, target and line."""
    for module in modules().values():
        yield from dict.fromkeys(_imports_of(module))


def _own_submodule(imp: Import) -> bool:
    return imp.importer.is_package and imp.target.startswith(f"{imp.importer.name}.")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], list[Import]] = {}
    used: set[str] = set()
    for imp in imports():
        if imp.target == imp.importer.name or _own_submodule(imp):
            continue
        if imp.key in CYCLE_EDGES_ALLOWED:
            used.add(imp.key)
            continue
        edges.setdefault(imp.importer.name, set()).add(imp.target)
        lines.setdefault((imp.importer.name, imp.target), []).append(imp)
    offenders = []
    for component in _cycles(edges):
        members = set(component)
        offenders.append(f"cycle between {', '.join(component)}:")
        for (src, dst), found in sorted(lines.items()):
            if src in members and dst in members:
                offenders.extend(f"    {imp.where}" for imp in found)
    _report("import cycles", offenders, CYCLE_EDGES_ALLOWED, used)


def room_of(name: str) -> str:
    """``opencbs.engine.scan`` -> ``engine``; ``opencbs.settings`` -> ``settings``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ROOT_ROOM


def test_every_module_has_a_room() -> None:
    rooms = {room_of(name) for name in modules()} - {ROOT_ROOM}
    missing = sorted(rooms - set(LAYERS))
    assert not missing, f"add these rooms to LAYERS and to docs/architecture.md: {missing}"
    assert not [imp.where for imp in _imports_of(modules()[ROOT_ROOM])], "the root imports nothing"


def test_no_upward_imports() -> None:
    offenders, used = [], set()
    for imp in imports():
        mine, theirs = room_of(imp.importer.name), room_of(imp.target)
        if theirs in (mine, ROOT_ROOM) or theirs in LAYERS.get(mine, frozenset()):
            continue
        if imp.key in LAYER_IMPORTS_ALLOWED:
            used.add(imp.key)
            continue
        offenders.append(f"{imp.where}: {mine} may use only {sorted(LAYERS.get(mine, ()))}")
    _report("imports up the layer table", offenders, LAYER_IMPORTS_ALLOWED, used)


def _documented_layers() -> dict[str, frozenset[str]]:
    """The "Layers and rooms" table of docs/architecture.md: first cell ``room/`` or ``room.py``,
    last cell the rooms it may use in backquotes ("nothing" for none; "everything" for all)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Layers and rooms", 1)[1].split("\n## ", 1)[0]
    table: dict[str, frozenset[str]] = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)(?:/|\.py)`", cells[0]) if len(cells) >= 3 else None
        if not match:
            continue
        uses = cells[-1]
        if uses.startswith("everything"):
            table[match[1]] = frozenset(LAYERS) - {match[1]}
        else:
            table[match[1]] = frozenset(re.findall(r"`(\w+)(?:/|\.py)?`", uses))
    return table


def test_architecture_document_has_the_same_layers() -> None:
    documented = _documented_layers()
    expected = {room: uses for room, uses in LAYERS.items()}
    expected["cli"] = frozenset(LAYERS) - {"cli"}
    differences = [
        f"{room}: document says {sorted(documented.get(room, ()))}, test says "
        f"{sorted(expected.get(room, ()))}"
        for room in sorted(set(documented) | set(expected))
        if documented.get(room) != expected.get(room)
    ]
    assert not differences, "docs/architecture.md and LAYERS differ:\n" + "\n".join(differences)


def test_architecture_module_map_names_every_module() -> None:
    """docs/architecture.md "Where each behaviour lives" names every module (package
    ``__init__`` files and Alembic's ``store/migrations`` aside), as ``room/name.py``."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Where each behaviour lives", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/]+\.py)`", section))
    missing = sorted(
        module.rel
        for module in modules().values()
        if not module.is_package and _size_checked(module) and module.rel not in named
    )
    assert not missing, "add to docs/architecture.md's module map: " + ", ".join(missing)


# ---------------------------------------------------------------------------------------------
# The checks themselves, on small examples


def test_bool_annotations_are_recognised() -> None:
    def annotation(text: str) -> ast.expr:
        return ast.parse(text, mode="eval").body

    for text in ("bool", "bool | None", "None | bool", "Optional[bool]", "'bool'"):
        assert _is_bool(annotation(text)), text
    for text in ("int", "bool | int", "list[bool]", "'str'"):
        assert not _is_bool(annotation(text)), text


def test_cycles_are_found_through_any_length() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_imports_resolve_to_submodules_or_their_package() -> None:
    code = (
        "from opencbs.engine import scan, entries as e\n"
        "from opencbs.engine.scan import Scan\n"
        "from opencbs import __version__, errors\n"
        "def f():\n"
        "    import opencbs.reports.vocabulary\n"
        "    from opencbs.destinations import LocalStorage\n"
    )
    fake = Module("opencbs.fake", PACKAGE / "fake.py", ast.parse(code), 6)
    found = [(imp.target, imp.line) for imp in _imports_of(fake)]
    assert found == [
        ("opencbs.engine.scan", 1),
        ("opencbs.engine.entries", 1),
        ("opencbs.engine.scan", 2),
        ("opencbs", 3),
        ("opencbs.errors", 3),
        ("opencbs.reports.vocabulary", 5),
        ("opencbs.destinations", 6),
    ]
