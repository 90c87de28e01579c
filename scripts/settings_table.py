"""Writes the README's table of every PAGEMILL_* setting: name and default from the Settings
class, meaning from the comment above it in .env.example (which tests/deploy keeps complete).

    python scripts/settings_table.py          # rewrite the table in README.md
    python scripts/settings_table.py --check  # exit 1 if README.md's table is out of date
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
_ASSIGNMENT = re.compile(r"#\s*[A-Z][A-Z0-9_]*=")


def _meanings(env_example: str) -> dict[str, str]:
    """PAGEMILL_X → the comment lines right above `# PAGEMILL_X=...` in .env.example."""
    found: dict[str, str] = {}
    comment: list[str] = []
    for line in env_example.splitlines():
        match = re.match(r"#?\s*(PAGEMILL_[A-Z0-9_]+)=", line)
        if match:
            found[match.group(1)] = " ".join(comment)
            comment = []
        elif line.startswith("# ") and not line.startswith("# --") and not _ASSIGNMENT.match(line):
            comment.append(line[2:].strip())
        else:
            comment = []
    return found


def _default(value: Any) -> str:
    if value is None:
        return "—"
    if value == "":
        return '""'
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def table() -> str:
    sys.path.insert(0, str(ROOT))
    from app.settings import Settings

    meanings = _meanings((ROOT / ".env.example").read_text(encoding="utf-8"))
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        variable = f"PAGEMILL_{name.upper()}"
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        meaning = meanings.get(variable, "").replace("|", "\\|")
        rows.append(f"| `{variable}` | `{_default(default)}` | {meaning} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + table() + "\n" + readme[end:]


def main() -> int:
    path = ROOT / "README.md"
    readme = path.read_text(encoding="utf-8")
    wanted = render(readme)
    if "--check" in sys.argv[1:]:
        if wanted != readme:
            print("README.md's settings table is out of date: python scripts/settings_table.py")
            return 1
        return 0
    path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
