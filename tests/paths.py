"""Where the repository is, for tests in any folder (tests/ is on pytest's pythonpath)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
