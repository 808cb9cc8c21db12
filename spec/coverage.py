"""Which lines of the notes' .tex carry content, which section they belong to, and which claims cover them.

The notes are read at run time, never copied into the project (DESIGN.md). They come from outside,
so :func:`read_notes` checks that they are text of a sane shape before anything uses them, and
``spec/notes-lines.json`` keeps a sha256 of each claim's lines as they were when the registry's line
numbers were written: a different notes file is reported claim by claim instead of silently
checking the wrong text (``python -m spec.coverage --update-hashes`` refreshes it after registry edits).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HASHES = Path(__file__).resolve().parent / "notes-lines.json"
DEFAULT_NOTES = Path(__file__).resolve().parent.parent.parent / "shared" / "notes" / "machine-perception-summary.tex"
LONG_LINE = 100_000  # characters; the real notes' longest line is a few hundred
MAX_BYTES = 32 * 2**20


class NotesError(ValueError):
    """The notes file cannot be used (missing, not UTF-8, empty, too large); the message says why."""


@dataclass(frozen=True)
class Notes:
    path: Path
    text: str
    lines: list[str]
    warnings: list[str] = field(default_factory=list)
    sha256: str = ""


def read_notes(path: str | Path) -> Notes:
    """The notes file as text, or NotesError with a message a reader can act on.

    Warnings (kept in ``Notes.warnings``, shown in the ledger): no ``\\section`` at all (coverage
    has no sections to report), or a line over LONG_LINE characters (not a LaTeX source as written
    by hand; the page shows it cut).
    """
    path = Path(path)
    if not path.exists():
        raise NotesError(f"notes file {path} does not exist")
    if not path.is_file():
        raise NotesError(f"notes file {path} is not a file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise NotesError(f"notes file {path} is {size / 2**20:.0f} MiB: not the notes' .tex (limit {MAX_BYTES // 2**20} MiB)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotesError(f"notes file {path} is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                         "the notes' .tex is UTF-8") from None
    if "\x00" in text:
        raise NotesError(f"notes file {path} holds NUL bytes: not a .tex source")
    if not text.strip():
        raise NotesError(f"notes file {path} is empty")
    lines = text.splitlines()
    warnings = []
    if not re.search(r"\\section\*?\{", text):
        warnings.append(f"notes file {path} has no \\section: coverage cannot be split by section")
    if "\\begin{document}" not in text:
        warnings.append(f"notes file {path} has no \\begin{{document}}: no line counts as content")
    long = [n for n, line in enumerate(lines, 1) if len(line) > LONG_LINE]
    if long:
        warnings.append(f"notes file {path}: {len(long)} line(s) longer than {LONG_LINE} characters "
                        f"(first: line {long[0]}, {len(lines[long[0] - 1])} characters); shown cut")
    return Notes(path, text, lines, warnings, hashlib.sha256(raw).hexdigest())


def claim_source(lines: list[str], numbers) -> str:
    """The text of the given line numbers (1-based, sorted), joined by newlines; missing lines are empty."""
    return "\n".join(lines[n - 1] if 0 < n <= len(lines) else "" for n in sorted(numbers))


def line_hash(lines: list[str], numbers) -> str:
    # The line numbers are part of the hash: the same text moved to other lines is a different file.
    nums = sorted(numbers)
    h = hashlib.sha256(",".join(map(str, nums)).encode())
    h.update(b"\0" + claim_source(lines, nums).encode("utf-8"))
    return h.hexdigest()


def claim_hashes(notes: Notes, claims: dict) -> dict:
    return {"notes_sha256": notes.sha256,
            "claims": {cid: {"lines": c.lines, "sha256": line_hash(notes.lines, c.line_numbers())}
                       for cid, c in sorted(claims.items())}}


def load_hashes(path: Path = HASHES) -> dict:
    """The recorded hashes ({} when the file is missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("claims"), dict) else {}


def notes_check(notes: Notes, claims: dict, recorded: dict) -> dict[str, str]:
    """{claim id: "same" | "changed" | "unrecorded"} against the recorded hashes.

    "unrecorded": no hash, or the registry's ``lines`` were edited since the hashes were taken
    (then the hash says nothing about the notes; ``--update-hashes`` records the new lines).
    """
    rec = recorded.get("claims", {}) if recorded else {}
    out = {}
    for cid, c in claims.items():
        r = rec.get(cid)
        if not isinstance(r, dict) or r.get("lines") != c.lines:
            out[cid] = "unrecorded"
        else:
            out[cid] = "same" if r.get("sha256") == line_hash(notes.lines, c.line_numbers()) else "changed"
    return out


# Markup that carries no statement of its own: layout, headings, environment delimiters, figures.
# Quantifiers are bounded (a heading or an environment name is short): a hostile line of a million
# unclosed "\\begin{" must not cost quadratic time.
_LAYOUT = re.compile(
    r"\\(?:section|subsection|subsubsection)\*?\{(?:[^{}]|\{[^{}]{0,300}\}){0,500}\}"
    r"|\\(?:begin|end)\{[^}]{0,100}\}(?:\{[^}]{0,300}\}|\[[^\]]{0,300}\]){0,8}"
    r"|\\(?:newpage|columnbreak|vfill|hfill|noindent|centering|medskip|smallskip|bigskip|par)\b"
    r"|\\(?:setlength|addtolength)\{[^}]{0,100}\}\{[^}]{0,100}\}"
    r"|\\phantom\{[^}]{0,300}\}"
    r"|\\include(?:svg|graphics)(?:\[[^\]]{0,300}\])?\{[^}]{0,300}\}"
    r"|\\\[|\\\]|\\\\|\\!"
)
_HEADING = re.compile(r"\\(section|subsection|subsubsection)(\*?)\{((?:[^{}]|\{[^{}]{0,300}\}){0,500})\}")


def _strip_comment(line: str) -> str:
    return re.sub(r"(?<!\\)%.*$", "", line)


def content_lines(text: str) -> dict[int, tuple[str, str]]:
    """{line number: (section title, line text)} for every line with content inside the document."""
    lines = text.splitlines()
    out: dict[int, tuple[str, str]] = {}
    in_doc = False
    section = "Front matter"
    for no, raw in enumerate(lines, start=1):
        line = _strip_comment(raw)
        if "\\begin{document}" in line:
            in_doc = True
            continue
        if "\\end{document}" in line:
            break
        if not in_doc:
            continue
        m = _HEADING.search(line)
        if m and m.group(1) == "section":
            section = re.sub(r"\$[^$]*\$|\\[a-zA-Z]+", "", m.group(3)).strip(" {}()") or m.group(3)
            if "(" in m.group(3):
                section = m.group(3).split("(")[0].strip()
        rest = _LAYOUT.sub(" ", line)
        if re.search(r"[A-Za-z0-9]", rest):
            out[no] = (section, raw)
    return out


def notes_coverage(path: Path, claims: dict) -> dict:
    """Per-section uncovered content lines, and the totals the ledger's summary carries."""
    text = path.text if isinstance(path, Notes) else read_notes(path).text
    content = content_lines(text)
    covered_by: dict[int, list[str]] = {}
    for cid, c in claims.items():
        for n in c.line_numbers():
            covered_by.setdefault(n, []).append(cid)
    sections: dict[str, dict] = {}
    for n, (sec, _) in content.items():
        s = sections.setdefault(sec, {"section": sec, "lines": 0, "covered": 0, "uncovered": []})
        s["lines"] += 1
        if n in covered_by:
            s["covered"] += 1
        else:
            s["uncovered"].append(n)
    covered = sum(s["covered"] for s in sections.values())
    return {"notes_lines": len(content), "notes_lines_covered": covered,
            "sections": list(sections.values()),
            "covered_by": {str(k): v for k, v in sorted(covered_by.items())}}


def main(argv=None) -> int:
    """``python -m spec.coverage [--lines 518-624] [--notes PATH] [--update-hashes]``: list content
    lines no claim covers; ``--update-hashes`` records each claim's lines in spec/notes-lines.json."""
    import argparse

    from spec.registry import RegistryError, load_registry, parse_lines

    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(prog="python -m spec.coverage", description=main.__doc__)
    ap.add_argument("--lines", help="only lines in this range, e.g. '518-624, 1021-1043'")
    ap.add_argument("--notes", default=str(DEFAULT_NOTES), help="the notes' .tex (default %(default)s)")
    ap.add_argument("--update-hashes", action="store_true",
                    help=f"record a sha256 of every claim's lines of the notes in {HASHES.name}")
    args = ap.parse_args(argv)
    try:
        wanted = parse_lines(args.lines) if args.lines else None
    except ValueError as e:
        ap.error(f"--lines: {e}")  # exits 2
    try:
        notes = read_notes(args.notes)
        claims = load_registry(root / "spec" / "claims")
    except (NotesError, RegistryError) as e:
        print(f"python -m spec.coverage: {e}", file=sys.stderr)
        return 2
    for w in notes.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.update_hashes:
        HASHES.write_text(json.dumps(claim_hashes(notes, claims), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"recorded the lines of {len(claims)} claims in {HASHES}")
        return 0
    covered = set().union(*(c.line_numbers() for c in claims.values())) if claims else set()
    missing = [(n, sec, line) for n, (sec, line) in content_lines(notes.text).items()
               if n not in covered and (wanted is None or n in wanted)]
    for n, sec, line in missing:
        print(f"{n:5d} [{sec}] {line.strip()[:110]}")
    print(f"{len(missing)} content line(s) not covered by any claim")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
