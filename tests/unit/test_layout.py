"""pytest imports test modules by their base name (no __init__.py here): a unit and an
integration module of one name break collection in a fresh clone."""
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name():
    unit = {p.name for p in (TESTS / "unit").glob("test_*.py")}
    integration = {p.name for p in (TESTS / "integration").glob("test_*.py")}
    assert not unit & integration
