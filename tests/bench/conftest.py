"""The bench scripts import their helpers as ``bench.*`` from the repository root (they are not
part of the installed package), so the root must be importable here too."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
