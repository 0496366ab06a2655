"""Formats the state machine definitions in stepfunctions/ one way: two-space indents, and any object
or array that fits on a line of 110 characters written on one line.

    python scripts/format_asl.py            # rewrites stepfunctions/*.asl.json
    python scripts/format_asl.py --check    # exits 1 when a file is not formatted (CI's lint)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

WIDTH = 110
FOLDER = Path(__file__).resolve().parents[1] / "stepfunctions"


def render(value: Any, indent: int = 0, key: str = "") -> str:
    prefix = " " * indent + (f"{json.dumps(key)}: " if key else "")
    compact = json.dumps(value, ensure_ascii=False)
    if len(prefix) + len(compact) + 1 <= WIDTH or not isinstance(value, dict | list) or not value:
        return prefix + compact
    if isinstance(value, dict):
        inner = [render(v, indent + 2, k) for k, v in value.items()]
        return prefix + "{\n" + ",\n".join(inner) + "\n" + " " * indent + "}"
    inner = [render(v, indent + 2) for v in value]
    return prefix + "[\n" + ",\n".join(inner) + "\n" + " " * indent + "]"


def main(argv: list[str]) -> int:
    stale = []
    for path in sorted(FOLDER.glob("*.asl.json")):
        text = path.read_text()
        formatted = render(json.loads(text)) + "\n"
        if text != formatted:
            stale.append(path.name)
            if "--check" not in argv:
                path.write_text(formatted)
    if "--check" in argv and stale:
        print(f"not formatted: {', '.join(stale)} (run python scripts/format_asl.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
