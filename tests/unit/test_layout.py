"""pytest imports test modules by their base name (no __init__.py here): a unit and an
integration module of one name break collection in a fresh clone."""
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name():
    unit = {p.name for p in (TESTS / "unit").glob("test_*.py")}
    integration = {p.name for p in (TESTS / "integration").glob("test_*.py")}
    assert not unit & integration


def test_only_main_and_handlers_import_the_controller():
    """Reconcilers get the client, the cache and the queue, never the Controller: no cycles."""
    import re
    pkg = TESTS.parent / "operator" / "peon"
    importers = {p.stem for p in pkg.glob("*.py")
                 if re.search(r"^\s*from \.controller import|^\s*from \. import .*\bcontroller\b|"
                              r"^\s*import peon\.controller", p.read_text(), re.M)}
    assert importers <= {"main", "handlers"}, importers
