"""Where the stream schemas live.

``schemas/`` at the repository root is their only source; the wheel carries a
copy inside the package (see ``pyproject.toml``), which an editable or source
checkout does not have.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).parent / "schemas"
SCHEMAS_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).parent.parent / "schemas"
