"""Which lines of the notes' .tex carry content, which section they belong to, and which claims cover them.

The notes are read at run time, never copied into the project (DESIGN.md).
"""

from __future__ import annotations

import re
from pathlib import Path

# Markup that carries no statement of its own: layout, headings, environment delimiters, figures.
_LAYOUT = re.compile(
    r"\\(?:section|subsection|subsubsection)\*?\{(?:[^{}]|\{[^{}]*\})*\}"
    r"|\\(?:begin|end)\{[^}]*\}(?:\{[^}]*\}|\[[^\]]*\])*"
    r"|\\(?:newpage|columnbreak|vfill|hfill|noindent|centering|medskip|smallskip|bigskip|par)\b"
    r"|\\(?:setlength|addtolength)\{[^}]*\}\{[^}]*\}"
    r"|\\phantom\{[^}]*\}"
    r"|\\include(?:svg|graphics)(?:\[[^\]]*\])?\{[^}]*\}"
    r"|\\\[|\\\]|\\\\|\\!"
)
_HEADING = re.compile(r"\\(section|subsection|subsubsection)(\*?)\{((?:[^{}]|\{[^{}]*\})*)\}")


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
    text = Path(path).read_text(encoding="utf-8")
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
    """``python -m spec.coverage [--lines 518-624] [--notes PATH]``: list content lines no claim covers."""
    import argparse

    from spec.registry import load_registry, parse_lines

    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(prog="python -m spec.coverage", description=main.__doc__)
    ap.add_argument("--lines", help="only lines in this range, e.g. '518-624, 1021-1043'")
    ap.add_argument("--notes", default=str(root.parent / "shared" / "notes" / "machine-perception-summary.tex"))
    args = ap.parse_args(argv)
    claims = load_registry(root / "spec" / "claims")
    text = Path(args.notes).read_text(encoding="utf-8")
    wanted = parse_lines(args.lines) if args.lines else None
    covered = set().union(*(c.line_numbers() for c in claims.values())) if claims else set()
    missing = [(n, sec, line) for n, (sec, line) in content_lines(text).items()
               if n not in covered and (wanted is None or n in wanted)]
    for n, sec, line in missing:
        print(f"{n:5d} [{sec}] {line.strip()[:110]}")
    print(f"{len(missing)} content line(s) not covered by any claim")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
