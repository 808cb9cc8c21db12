"""The claim registry: one TOML file per section of the notes under ``spec/claims/``.

Each file holds ``[[claim]]`` tables with the fields fixed by DESIGN.md. Loading validates every
field and raises :class:`RegistryError` naming the file and the claim id, so that a typo in a
registry file is caught before any test runs.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

VERDICTS = ("holds", "false-as-written", "conditional", "not-testable")
KINDS = (
    "identity", "inequality", "algorithm", "shape", "complexity",
    "example", "structure", "convergence", "definition",
)
ROLES = ("verifies", "refutes", "corrects")
REQUIRED = ("id", "section", "statement", "kind", "verdict", "lines")
OPTIONAL = ("correction", "reason", "severity")
# How much a flagged finding matters to a reader (DESIGN.md, "Claims"), most serious first.
SEVERITIES = ("error", "slip", "fine-print")
FLAGGED = ("false-as-written", "conditional")
ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\.[a-z0-9]+(?:-[a-z0-9]+)*$")
LINES_RE = re.compile(r"^\s*\d+(?:\s*-\s*\d+)?(?:\s*,\s*\d+(?:\s*-\s*\d+)?)*\s*$")

# Which test roles must back each verdict (DESIGN.md, "Claims").
REQUIRED_ROLES = {
    "holds": ("verifies",),
    "false-as-written": ("refutes", "corrects"),
    "conditional": ("refutes", "corrects"),
    "not-testable": (),
}
# Roles a test may take for a claim of each verdict; anything else disagrees with the verdict.
ALLOWED_ROLES = {
    "holds": ("verifies",),
    "false-as-written": ("refutes", "corrects"),
    "conditional": ("refutes", "corrects"),
    "not-testable": (),
}


class RegistryError(ValueError):
    """A registry file is malformed; the message names the file and the claim."""


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    statement: str
    kind: str
    verdict: str
    lines: str
    correction: str = ""
    reason: str = ""
    severity: str = ""
    file: str = field(default="", compare=False)

    @property
    def chapter(self) -> str:
        """The registry file's stem (``cnn`` for ``spec/claims/cnn.toml``): the id's prefix."""
        return self.id.split(".", 1)[0]

    def line_numbers(self) -> set[int]:
        return parse_lines(self.lines)


def parse_lines(spec: str) -> set[int]:
    """``"808-812, 874"`` -> {808, ..., 812, 874}."""
    if not LINES_RE.match(spec):
        raise ValueError(f"lines: expected e.g. '808-812' or '871, 874', got {spec!r}")
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise ValueError(f"lines: range {part.strip()!r} runs backwards")
        out.update(range(a, b + 1))
    return out


def _claim_from_table(table: dict, path: Path, index: int) -> Claim:
    cid = table.get("id", f"<claim #{index + 1}>")
    where = f"{path}: claim {cid!r}"
    unknown = set(table) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {list(REQUIRED + OPTIONAL)}")
    missing = [k for k in REQUIRED if k not in table]
    if missing:
        raise RegistryError(f"{where}: missing field(s) {missing}")
    for k, v in table.items():
        if not isinstance(v, str) or not v.strip():
            raise RegistryError(f"{where}: field {k!r} must be a non-empty string")
    if not ID_RE.match(cid):
        raise RegistryError(f"{where}: id must be 'section.short-name' in lower case with hyphens")
    if cid.split(".", 1)[0] != path.stem:
        raise RegistryError(f"{where}: id prefix must be the file's stem {path.stem!r}")
    if table["verdict"] not in VERDICTS:
        raise RegistryError(f"{where}: verdict {table['verdict']!r} is not one of {VERDICTS}")
    if table["kind"] not in KINDS:
        raise RegistryError(f"{where}: kind {table['kind']!r} is not one of {KINDS}")
    try:
        parse_lines(table["lines"])
    except ValueError as e:
        raise RegistryError(f"{where}: {e}") from None
    if table["verdict"] != "holds":
        for k in ("correction", "reason") if table["verdict"] != "not-testable" else ("reason",):
            if k not in table:
                raise RegistryError(f"{where}: verdict {table['verdict']!r} needs a {k!r}")
    if table["verdict"] in FLAGGED and "severity" not in table:
        raise RegistryError(f"{where}: verdict {table['verdict']!r} needs a 'severity' (one of {SEVERITIES})")
    if "severity" in table:
        if table["verdict"] not in FLAGGED:
            raise RegistryError(f"{where}: only {' and '.join(FLAGGED)} claims take a severity")
        if table["severity"] not in SEVERITIES:
            raise RegistryError(f"{where}: severity {table['severity']!r} is not one of {SEVERITIES}")
    return Claim(**table, file=str(path))


def load_file(path: str | Path) -> list[Claim]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{path}: not valid TOML: {e}") from None
    extra = set(data) - {"claim"}
    if extra:
        raise RegistryError(f"{path}: unknown top-level key(s) {sorted(extra)}; use [[claim]] tables")
    tables = data.get("claim", [])
    if not isinstance(tables, list):
        raise RegistryError(f"{path}: 'claim' must be an array of tables ([[claim]])")
    return [_claim_from_table(t, path, i) for i, t in enumerate(tables)]


def load_registry(directory: str | Path) -> dict[str, Claim]:
    """All claims of ``directory/*.toml`` by id, in file then registry order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RegistryError(f"claims registry {directory} is not a directory")
    claims: dict[str, Claim] = {}
    for path in sorted(directory.glob("*.toml")):
        for c in load_file(path):
            if c.id in claims:
                raise RegistryError(f"{path}: claim {c.id!r}: duplicate id (first in {claims[c.id].file})")
            claims[c.id] = c
    return claims
