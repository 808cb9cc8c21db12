"""Writes the ledger as JSON, Markdown and a self-contained HTML page."""

from __future__ import annotations

import json
from pathlib import Path


def write_reports(ledger: dict, out: Path, notes: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ledger.json").write_text(json.dumps(ledger, indent=2) + "\n", encoding="utf-8")
