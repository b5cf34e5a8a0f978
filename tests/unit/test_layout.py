"""The layout shows the programs (docs/design.md, Layout): operator, api, cli, jobs and gate each
import only `peon.shared` and their own modules; shared imports no program; no module imports
another in a cycle (function-level imports count); and the design's module map names exactly the
modules in the tree."""
import ast
import pathlib
import re

TESTS = pathlib.Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
PKG = ROOT / "operator" / "peon"
PROGRAMS = {"operator", "api", "cli", "jobs", "gate"}
SHARED = "shared"
# `peon` is one command for two programs: the user's and the Jobs' tools (commands.py routes it).
ROUTERS = {"peon.commands"}


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The peon modules `name` imports, anywhere in it (a function's import is an import)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("peon")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "peon":
                mod = node.module
            else:
                continue
            for a in node.names:  # `from peon.shared import kube` imports peon.shared.kube
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports_of(n, p, set(mods)) for n, p in mods.items()}


def program_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in PROGRAMS | {SHARED}) else None


def test_no_two_test_modules_share_a_name():
    """pytest imports test modules by their base name (no __init__.py here): two of one name
    break collection in a fresh clone."""
    names = [p.name for p in (TESTS / "unit").rglob("test_*.py")] + \
            [p.name for p in (TESTS / "integration").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_every_module_lives_in_a_program_or_in_shared():
    loose = {n for n in modules() if program_of(n) is None} - {"peon"} - ROUTERS
    assert not loose, f"modules outside the programs and shared: {sorted(loose)}"


def test_each_program_imports_only_shared_and_its_own():
    wrong = []
    for mod, deps in graph().items():
        prog = program_of(mod)
        if prog is None:
            continue
        for dep in deps:
            other = program_of(dep)
            allowed = {None, SHARED} if prog == SHARED else {None, SHARED, prog}
            if other not in allowed:
                wrong.append(f"{mod} imports {dep}")
    assert not wrong, wrong


def test_no_import_cycle():
    g = graph()
    # a package's __init__ is imported on the way to its modules; it imports none of them here
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles


def test_the_layout_check_sees_a_cycle_and_a_crossing(tmp_path, monkeypatch):
    """The checks above fail when they should (they read the tree; here a tree of two)."""
    pkg = tmp_path / "peon"
    for d in ("shared", "cli", "api"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "shared" / "a.py").write_text("from peon.cli import b\n")
    (pkg / "cli" / "b.py").write_text("def f():\n    from peon.shared import a\n    from peon.api import c\n")
    (pkg / "api" / "c.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PKG", pkg)
    g = graph()
    assert g["peon.shared.a"] == {"peon.cli.b"} and g["peon.cli.b"] == {"peon.shared.a", "peon.api.c"}
    for check in (test_each_program_imports_only_shared_and_its_own, test_no_import_cycle):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} passed on a tree that breaks it")


def test_only_main_and_handlers_import_the_controller():
    """Reconcilers get the client, the cache and the queue, never the Controller: no cycles."""
    importers = {m for m, deps in graph().items() if "peon.operator.controller" in deps}
    assert importers <= {"peon.operator.main", "peon.operator.handlers"}, importers


def test_the_design_module_map_names_the_tree():
    """docs/design.md's Layout lists each program's modules under its folder: the same set."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text[text.index("## 8. Layout"):]
    section = section[:section.index("\n```\n", section.index("```") + 3)]
    mapped: set[str] = set()
    package = None
    for line in section.splitlines():
        head = re.match(r"^  (\w+)/\s", line)
        if head:
            package = head.group(1)
            continue
        item = re.match(r"^    ([a-z_][a-z_0-9, ]*?)(?:\s{2,}|$)", line)
        if item and package:
            mapped |= {f"peon.{package}.{n.strip()}" for n in item.group(1).split(",") if n.strip()}
        top = re.match(r"^  ([a-z][a-z_]*)\.py\s", line)
        if top:
            mapped.add(f"peon.{top.group(1)}")
    tree = {m for m in modules() if m.count(".") == 2} | ROUTERS
    assert mapped == tree, (f"in the tree, not the map: {sorted(tree - mapped)}; "
                            f"in the map, not the tree: {sorted(mapped - tree)}")


def test_unit_tests_mirror_the_layout():
    """tests/unit/<folder> is a program's or shared's; each module's tests sit in its folder."""
    folders = {p.name for p in (TESTS / "unit").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= PROGRAMS | {SHARED}, folders - PROGRAMS - {SHARED}
    for folder in folders:
        for test in (TESTS / "unit" / folder).glob("test_*.py"):
            tested = {m.split(".")[1] for m in re.findall(r"^\s*(?:from|import) (peon\.\w+)",
                                                          test.read_text(), re.M)
                      if m.split(".")[1] in PROGRAMS | {SHARED}}
            assert folder in tested, f"{test.relative_to(TESTS)} tests no module of peon.{folder}"
