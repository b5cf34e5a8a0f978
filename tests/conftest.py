import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# the unit tests live in folders that mirror the package (tests/unit/shared, .../operator, ...);
# their fakes and fixtures stay in tests/unit
sys.path.insert(0, str(ROOT / "tests" / "unit"))
