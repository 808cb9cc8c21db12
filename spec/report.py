"""Writes the ledger as JSON (the contract), Markdown and a self-contained HTML page.

The HTML opens straight from disk: inline CSS and a few lines of inline JavaScript (search, links
into folded sections, figure zoom), no network, no external files; formulas are MathML written by
:mod:`spec.latex`; figures are PNG files beside it (``figures/``).

Everything that comes from the notes file is data: it reaches the page through ``html.escape`` or
the whitelisting MathML writer, and ledger.md puts it in code fences that it cannot close.
"""

from __future__ import annotations

import html
import json
import re
import textwrap
from pathlib import Path

from spec.coverage import Notes, NotesError, content_lines, read_notes
from spec.latex import math_spans, parse_macros, render, render_math_or_source

BADGE = {
    "holds": "#1a7f37", "false-as-written": "#cf222e", "conditional": "#bc4c00", "not-testable": "#6e7781",
    "confirmed": "#1a7f37", "failing": "#cf222e", "untested": "#6e7781",
    "passed": "#1a7f37", "failed": "#cf222e", "error": "#cf222e", "skipped": "#6e7781",
    "killed": "#1a7f37", "timeout": "#1a7f37", "survived": "#cf222e", "broken": "#bc4c00", "not run": "#6e7781",
    "slip": "#9a6700", "fine-print": "#57606a", "ungraded": "#8250df",
}
# Colour of a notes line by the "worst" verdict of the claims on it.
LINE_RANK = ["false-as-written", "conditional", "holds", "not-testable"]
# The flagged claims' groups, most serious first: (severity, heading, what it means to a reader).
GROUPS = [
    ("error", "Errors: what to fix", "Used as printed, these give a wrong formula, number, shape or conclusion."),
    ("slip", "Slips", "Typos and notation faults whose intended meaning is clear from context."),
    ("fine-print", "Fine print", "True under a convention or an assumption that textbooks leave implicit."),
    ("ungraded", "Flagged, not yet graded", "False as written or conditional, without a severity in the registry yet."),
]
DISPLAY_LINE = 2000     # characters of a notes line shown in the notes view
RENDER_CHARS = 8000     # characters of a claim's source rendered as math (a 1 MB line is cut)


# --------------------------------------------------------------------------- shared helpers


def chapters(ledger: dict) -> list[tuple[str, list[dict]]]:
    """Claims grouped by registry file (the id's prefix), in the order the notes take them."""
    groups: dict[str, list[dict]] = {}
    for c in ledger["claims"]:
        groups.setdefault(c["id"].split(".", 1)[0], []).append(c)
    return sorted(groups.items(), key=lambda kv: min(map(first_line, kv[1])))


def first_line(claim: dict) -> int:
    return int(claim["lines"].replace("-", ",").split(",")[0])


def severity_of(claim: dict) -> str | None:
    """error | slip | fine-print for flagged claims (``ungraded`` without one), None otherwise."""
    if claim["verdict"] not in ("false-as-written", "conditional"):
        return None
    return claim.get("severity") or "ungraded"


def wrong(ledger: dict) -> list[dict]:
    """The false-as-written and conditional claims: errors, slips, fine print, then ungraded; each in notes order."""
    order = [g[0] for g in GROUPS]
    return sorted((c for c in ledger["claims"] if severity_of(c)),
                  key=lambda c: (order.index(severity_of(c)), first_line(c)))


def by_severity(ledger: dict) -> list[tuple[str, str, str, list[dict]]]:
    flagged = wrong(ledger)
    return [(sev, title, blurb, [c for c in flagged if severity_of(c) == sev]) for sev, title, blurb in GROUPS]


_FLOAT = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+(?:[eE][-+]?\d+)?)(?![\w.])")


def round_numbers(text: str, digits: int = 4) -> str:
    """Floats in ``text`` with more than ``digits`` significant digits, rounded to that many
    (``2.220446049250313e-16`` -> ``2.22e-16``); integers, versions and names are left alone."""
    def one(m: re.Match) -> str:
        s = m.group(0)
        mant = re.split(r"[eE]", s)[0].lstrip("+-").replace(".", "").lstrip("0")
        if len(mant) <= digits:
            return s
        return f"{float(s):.{digits}g}"

    return _FLOAT.sub(one, text or "")


def line_runs(lines: str) -> list[tuple[int, int]]:
    """``"390-391, 395"`` -> [(390, 391), (395, 395)]: runs of consecutive line numbers."""
    from spec.registry import parse_lines

    runs: list[list[int]] = []
    for n in sorted(parse_lines(lines)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return [(a, b) for a, b in runs]


def severity_summary_lines(ledger: dict, width: int = 78) -> list[str]:
    """The flagged claims for a terminal: errors first, then slips, fine print and ungraded ones,
    each with its count; then what changed in the notes file. For verify's one-screen summary."""
    out = []
    for sev, title, _, cs in by_severity(ledger):
        if not cs:
            continue
        out.append(f"{title} ({len(cs)}):" if sev != "error" else f"ERRORS ({len(cs)}): what to fix first")
        out += textwrap.wrap(", ".join(c["id"] for c in cs), max(width, 40), initial_indent="  ",
                             subsequent_indent="  ", break_on_hyphens=False)
    changed = ledger.get("notes_changed") or []
    if changed:
        out.append(textwrap.shorten(f"NOTES CHANGED under {len(changed)} claim(s) since their line numbers were "
                                    f"recorded (re-check their lines): " + ", ".join(changed), 300))
    unrecorded = ledger.get("notes_unrecorded") or []
    if unrecorded:
        out.append(f"{len(unrecorded)} claim(s) without a recorded hash of their lines (registry edited since): "
                   f"run python -m spec.coverage --update-hashes")
    for w in ledger.get("notes_warnings") or []:
        out.append(textwrap.shorten(f"notes warning: {w}", 300))
    if ledger.get("notes_error"):
        out.append(textwrap.shorten(f"notes: {ledger['notes_error']}", 300))
    return out


def _open_notes(notes) -> Notes | None:
    if notes is None or isinstance(notes, Notes):
        return notes
    try:
        return read_notes(notes)
    except NotesError:
        return None


# --------------------------------------------------------------------------- Markdown


def _md(text, cell: bool = False) -> str:
    """Registry or ledger text for Markdown: no live HTML; in a table cell, no table breaks."""
    out = html.escape(str(text or ""), quote=False).replace("\n", " ")
    return out.replace("|", "\\|") if cell else out


def _md_fence(text: str, lang: str = "tex") -> list[str]:
    # A fence longer than any backtick run inside cannot be closed by the content.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + lang, text, fence]


def to_markdown(ledger: dict) -> str:
    s, env = ledger["summary"], ledger["environment"]
    out = [
        "# Ledger of the Machine Perception notes", "",
        f"Generated {_md(ledger['generated'])} on {_md(env['device'])} (torch {_md(env['torch'])}, "
        f"Python {_md(env['python'])}).", "",
        f"**{s['claims']} claims**: {s['holds']} hold, {s['false-as-written']} false as written, "
        f"{s['conditional']} conditional, {s['not-testable']} not testable; **{s['failing']} failing**. "
        f"Notes lines covered: {s['notes_lines_covered']}/{s['notes_lines']}.", "",
        f"Flagged claims by severity: **{s.get('error', 0)} errors**, {s.get('slip', 0)} slips, "
        f"{s.get('fine-print', 0)} fine print.", "",
        f"Testable claims whose tests were shown to catch a hand-made wrong implementation (spec/mutants/): "
        f"{s.get('mutants_caught', 0)}/{s['claims'] - s.get('not-testable', 0)}.", "",
    ]
    if ledger.get("notes_error"):
        out += [f"> **Notes file:** {_md(ledger['notes_error'])}", ""]
    for w in ledger.get("notes_warnings") or []:
        out += [f"> **Notes warning:** {_md(w)}", ""]
    if ledger.get("notes_changed"):
        out += [f"> **The notes differ from the ones the registry was written for** under "
                f"{len(ledger['notes_changed'])} claim(s): " + ", ".join(f"`{c}`" for c in ledger["notes_changed"]), ""]
    for sev, title, blurb, cs in by_severity(ledger):
        if not cs and sev == "ungraded":
            continue
        out += [f"## {title} ({len(cs)})", "", blurb, ""]
        for c in cs:
            out += [f"### `{c['id']}` ({c['verdict']}, {severity_of(c)}, lines {c['lines']}, {c['status']})", ""]
            if c.get("notes_source"):
                out += [f"As printed, lines {c['lines']}" + (" (**changed since recorded**)" if c.get("notes_changed") else "")
                        + ":", ""] + _md_fence(c["notes_source"]) + [""]
            out += [f"- **Statement:** {_md(c['statement'])}", f"- **What is wrong:** {_md(c['reason'])}",
                    f"- **Correction:** {_md(c['correction'])}"]
            if c.get("evidence"):
                out.append(f"- **Evidence:** {_md(round_numbers(c['evidence']))}")
            if c.get("untested_reason"):
                out.append(f"- **Untested:** {_md(c['untested_reason'])}")
            out.append("")
    for name, cs in chapters(ledger):
        out += [f"## {name}", "", "| claim | lines | kind | verdict | severity | status | tests | mutants caught | statement |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in cs:
            passed = sum(t["outcome"] == "passed" for t in c["tests"])
            status = c["status"] + (f" ({_md(c['untested_reason'], True)})" if c.get("untested_reason") else "")
            caught = sum(m["status"] in ("killed", "timeout") for m in c.get("mutants") or [])
            out.append(f"| `{c['id']}` | {c['lines']} | {c['kind']} | {c['verdict']} | {severity_of(c) or ''} | "
                       f"{status} | {passed}/{len(c['tests'])} | {caught}/{len(c.get('mutants') or [])} | "
                       f"{_md(c['statement'], True)} |")
        out.append("")
    cov = ledger.get("coverage")
    if cov:
        out += ["## Notes coverage", "", "| section | content lines | covered | uncovered lines |", "| --- | --- | --- | --- |"]
        for sec in cov["sections"]:
            un = ", ".join(map(str, sec["uncovered"][:30])) + (" ..." if len(sec["uncovered"]) > 30 else "")
            out.append(f"| {_md(sec['section'], True)} | {sec['lines']} | {sec['covered']} | {un} |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
math{font-family:"Latin Modern Math",math;font-size:1.08em}
main{max-width:1200px;margin:0 auto;padding:16px 20px 60px}
h1{margin:0 0 4px;font-size:26px} h2{margin-top:34px;border-bottom:1px solid #d0d7de;padding-bottom:4px;font-size:21px}
.meta{color:#57606a;font-size:13px} .card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;margin:10px 0}
.card.error{border-left:6px solid #cf222e} .card.slip{border-left:6px solid #d4a72c} .card.fine-print{border-left:6px solid #8c959f}
.card.ungraded{border-left:6px solid #8250df} .card.banner{border-left:6px solid #cf222e}
.card p{margin:6px 0;overflow-x:auto;overflow-y:hidden} .card{overflow-x:auto} .label{font-weight:600;color:#57606a;font-size:13px;text-transform:uppercase;letter-spacing:.02em}
.printed{background:#fbfaf5;border:1px solid #e7e2cf;border-radius:6px;padding:6px 10px;margin:6px 0;overflow-x:auto}
.printed .run+.run{border-top:1px dashed #e7e2cf;margin-top:4px;padding-top:4px}
.badge{display:inline-block;color:#fff;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;white-space:nowrap}
table.claims{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de;table-layout:fixed}
table.claims th,table.claims td{border-bottom:1px solid #eaeef2;padding:6px 8px;vertical-align:top;text-align:left;overflow-wrap:anywhere;overflow-x:auto}
table.claims th{background:#f6f8fa} td.id{font-family:ui-monospace,monospace;font-size:12px}
col.c-id{width:17%} col.c-st{width:53%} col.c-v{width:14%} col.c-t{width:16%}
.tests{font-family:ui-monospace,monospace;font-size:11px;color:#57606a;margin:0;padding-left:14px;overflow-wrap:anywhere}
.ev{font-size:13px;color:#424a53} .stats{display:flex;gap:8px;flex-wrap:wrap;margin:12px 0}
.stat{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:6px 12px;min-width:92px;text-decoration:none;color:inherit}
.stat b{display:block;font-size:21px}
figure{display:inline-block;margin:8px 8px 8px 0;background:#fff;border:1px solid #d0d7de;padding:6px;max-width:100%;box-sizing:border-box;vertical-align:top}
figure img{max-width:min(560px,100%);height:auto;cursor:zoom-in;display:block} figcaption{font-size:13px;color:#424a53;max-width:560px}
figure.zoom{position:fixed;inset:0;margin:0;z-index:10;background:#fff;overflow:auto;max-width:none;border:0;padding:16px}
figure.zoom img{width:100%;height:calc(100vh - 90px);max-width:none;object-fit:contain;margin:0 auto;cursor:zoom-out} figure.zoom figcaption{margin:8px auto;max-width:900px}
nav{margin:8px 0;line-height:1.9} nav a{margin-right:10px;white-space:nowrap} details{margin:6px 0} summary{cursor:pointer}
details.group>summary h2{display:inline;border:0} details.group>summary{margin-top:34px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
#search{width:100%;max-width:520px;font-size:16px;padding:7px 10px;border:1px solid #8c959f;border-radius:6px;box-sizing:border-box}
.hidden{display:none !important} .cl{color:#0969da;font-family:ui-monospace,monospace;font-size:12px}
code.tex{font-family:ui-monospace,monospace;font-size:12px;background:#f6f8fa;color:#953800;white-space:pre-wrap;overflow-wrap:anywhere}
.fig-ref{color:#57606a;font-style:italic}
.notes{background:#fff;border:1px solid #d0d7de;font-size:12px}
.nl{display:grid;grid-template-columns:3.6em minmax(0,1fr) auto;column-gap:8px;border-left:6px solid transparent;padding:0 6px 0 0}
.nl .ln{color:#8c959f;text-align:right;font-family:ui-monospace,monospace;text-decoration:none}
.nl .src{font-family:ui-monospace,monospace;white-space:pre-wrap;overflow-wrap:anywhere;margin:0}
.nl .by{text-align:right} .nl:target{outline:2px solid #0969da;background:#ddf4ff !important}
.l-holds{border-left-color:#1a7f37 !important;background:#f0fff4}
.l-false-as-written{border-left-color:#cf222e !important;background:#fff0f0}
.l-conditional{border-left-color:#bc4c00 !important;background:#fff8f0}
.l-not-testable{border-left-color:#8c959f !important;background:#f6f8fa}
.l-uncovered{border-left-color:#e3b341 !important;background:#fffbe6}
.card:target,tr:target{outline:3px solid #0969da}
@media (max-width:700px){main{padding:10px} .stat{min-width:0;padding:4px 8px;font-size:12px} .stat b{font-size:17px} h1{font-size:21px} table.claims,table.claims tbody,table.claims tr,table.claims td{display:block;width:auto}
 table.claims colgroup,table.claims tr.head{display:none} table.claims tr{border-bottom:2px solid #d0d7de}
 .nl{grid-template-columns:2.8em minmax(0,1fr)} .nl .by{grid-column:2;text-align:left}}
"""

# Search: every claim element carries data-q (its words, lower case); a query keeps the elements
# that contain all its words. Links into closed <details> open them first.
JS = r"""
(function(){
  var q=document.getElementById('search'), count=document.getElementById('search-count');
  function openTo(el){for(var p=el;p;p=p.parentElement){if(p.tagName==='DETAILS')p.open=true;}}
  function go(){var id=decodeURIComponent(location.hash.slice(1)); if(!id)return;
    var el=document.getElementById(id); if(el){openTo(el); el.scrollIntoView({block:'center'});}}
  window.addEventListener('hashchange',go); go();
  function filter(){
    var words=q.value.toLowerCase().split(/\s+/).filter(Boolean), n=0, items=document.querySelectorAll('[data-q]');
    for(var i=0;i<items.length;i++){var t=items[i].getAttribute('data-q'), ok=true;
      for(var j=0;j<words.length;j++){if(t.indexOf(words[j])<0){ok=false;break;}}
      items[i].classList.toggle('hidden',!ok); if(ok&&items[i].classList.contains('card'))n++;
      if(ok&&words.length)openTo(items[i]);}
    var blocks=document.querySelectorAll('[data-block]');
    for(var k=0;k<blocks.length;k++){var b=blocks[k];
      b.classList.toggle('hidden',words.length>0&&!b.querySelector('[data-q]:not(.hidden)'));}
    count.textContent=words.length?(document.querySelectorAll('tr[data-q]:not(.hidden)').length+' claims match'):'';
  }
  q.addEventListener('input',filter);
  document.addEventListener('click',function(e){var f=e.target.closest('figure');
    if(f&&(e.target.tagName==='IMG'||f.classList.contains('zoom'))){e.preventDefault();f.classList.toggle('zoom');}});
  document.addEventListener('keydown',function(e){if(e.key==='Escape'){var z=document.querySelector('figure.zoom');if(z)z.classList.remove('zoom');}});
})();
"""


def _e(s) -> str:
    return html.escape(str(s if s is not None else ""), quote=True)


def _badge(word: str) -> str:
    return f'<span class="badge" style="background:{BADGE.get(word, "#6e7781")}">{_e(word)}</span>'


def _registry_html(text: str, macros) -> str:
    """Registry text (statement, correction, reason): plain text with ``$...$`` formulas."""
    out = []
    parts = re.split(r"(?<!\\)(\$[^$]+\$)", text or "")
    for p in parts:
        if len(p) > 2 and p.startswith("$") and p.endswith("$"):
            out.append(render_math_or_source(p[1:-1], macros))
        else:
            out.append(_e(p))
    return "".join(out)


def _lines_links(lines: str) -> str:
    try:
        runs = line_runs(lines)
    except ValueError:
        return _e(lines)
    return ", ".join(f'<a href="#L{a}">{a}</a>' + (f'-<a href="#L{b}">{b}</a>' if b != a else "") for a, b in runs)


_SPANS: dict[int, tuple[Notes, list[tuple[int, int]]]] = {}


def _spans_of(notes: Notes) -> list[tuple[int, int]]:
    hit = _SPANS.get(id(notes))
    if hit is None or hit[0] is not notes:
        _SPANS.clear()
        hit = _SPANS[id(notes)] = (notes, math_spans(notes.lines))
    return hit[1]


def _widen(a: int, b: int, spans: list[tuple[int, int]], most: int = 40) -> tuple[int, int]:
    """Lines a-b widened to every multi-line formula they cut into (at most ``most`` lines more)."""
    lo, hi = a, b
    changed = True
    while changed:
        changed = False
        for s, e in spans:
            if s <= hi and e >= lo and (s < lo or e > hi):
                lo, hi, changed = min(lo, s), max(hi, e), True
    return (lo, hi) if (hi - lo) - (b - a) <= most else (a, b)


def _printed_html(c: dict, notes: Notes | None, macros) -> str:
    """"As printed, lines A-B": the notes' own source of the claim's lines, rendered as math."""
    if notes is None:
        return ""
    runs = []
    try:
        spans = line_runs(c["lines"])
    except ValueError:
        spans = []
    for a, b in spans:
        wa, wb = _widen(a, b, _spans_of(notes))
        src = "\n".join(notes.lines[n - 1] for n in range(wa, wb + 1) if 0 < n <= len(notes.lines))
        cut = len(src) > RENDER_CHARS
        body = render(src[:RENDER_CHARS], macros)
        if cut:
            body += f' <span class="meta">[... {len(src) - RENDER_CHARS} more characters]</span>'
        if (wa, wb) != (a, b):
            body += (f' <span class="meta">(lines {wa}-{wb}: the whole formula that lines '
                     f'{a}-{b} are part of)</span>' if a != b else
                     f' <span class="meta">(lines {wa}-{wb}: the whole formula that line {a} is part of)</span>')
        runs.append(f'<div class="run">{body}</div>')
    changed = (' <span class="badge" style="background:#cf222e" title="these lines of the notes differ from the '
               'ones the registry was written for">notes changed</span>') if c.get("notes_changed") else ""
    source = _e(c.get("notes_source", "")[:RENDER_CHARS])
    return (f'<div class="label">As printed, lines {_lines_links(c["lines"])}{changed}</div>'
            f'<div class="printed">{"".join(runs)}</div>'
            f'<details class="meta"><summary>LaTeX source</summary><pre class="tex"><code class="tex">{source}</code></pre></details>')


def _search_text(c: dict) -> str:
    words = [c["id"], c["section"], c["verdict"], severity_of(c) or "", c["status"], c["kind"], c["statement"],
             c.get("correction", ""), c.get("reason", ""), c.get("notes_source", "")[:4000]]
    return " ".join(w for w in words if w).lower()


def _tests_html(c: dict) -> str:
    if not c["tests"]:
        return '<span class="ev">no tests</span>' if c["verdict"] == "not-testable" else '<span class="ev">none ran</span>'
    items = "".join(f"<li>{_badge(t['outcome'])} {_e(t['role'])} {_e(t['nodeid'])} ({t['seconds']:.2f}s)"
                    + (f" <i>{_e(t['reason'])}</i>" if t.get("reason") else "") + "</li>" for t in c["tests"])
    return f"<details><summary>{sum(t['outcome'] == 'passed' for t in c['tests'])}/{len(c['tests'])} passed</summary>" \
           f'<ul class="tests">{items}</ul></details>'


def _mutants_html(c: dict) -> str:
    """The wrong implementations the claim's tests were shown to catch (spec/mutants/)."""
    ms = c.get("mutants") or []
    if not ms:
        return ""
    items = "".join(f"<li>{_badge(m['status'])} {_e(m['why'])} <span class=meta>({_e(m['file'])})</span></li>" for m in ms)
    caught = sum(m["status"] in ("killed", "timeout") for m in ms)
    return (f'<details class="ev"><summary>catches {caught} of {len(ms)} mutant{"s" * (len(ms) != 1)}</summary>'
            f'<ul class="tests">{items}</ul></details>')


def _figures_html(figs: list, claim: dict | None = None, macros=None) -> str:
    out = []
    for f in figs:
        path, caption = (f, "") if isinstance(f, str) else (f.get("path", ""), f.get("caption", ""))
        if not caption and claim:
            # No caption recorded by the figure's test: say what it belongs to rather than its file name.
            caption = f"Figure of {claim['id']}: {claim['statement']}"
        alt = re.sub(r"\$[^$]*\$", "(formula)", caption)[:200]
        out.append(f'<figure><a href="{_e(path)}"><img src="{_e(path)}" alt="{_e(alt)}" loading="lazy"></a>'
                   f"<figcaption>{_registry_html(caption, macros)} <span class=meta>(click to enlarge)</span>"
                   f"</figcaption></figure>")
    return "".join(out)


def _claim_card(c: dict, notes: Notes | None, macros) -> str:
    sev = severity_of(c)
    parts = [f'<div class="card {sev}" id="{_e(c["id"])}" data-q="{_e(_search_text(c))}">',
             f'<div>{_badge(sev)} {_badge(c["verdict"])} {_badge(c["status"])} <a class="cl" href="#{_e(c["id"])}">{_e(c["id"])}</a> '
             f'<span class="meta">{_e(c["section"])}</span></div>',
             _printed_html(c, notes, macros),
             f'<p><span class="label">The claim</span><br>{_registry_html(c["statement"], macros)}</p>',
             f'<p><span class="label">What is wrong</span><br>{_registry_html(c["reason"], macros)}</p>',
             f'<p><span class="label">Correction</span><br>{_registry_html(c["correction"], macros)}</p>']
    if c.get("evidence"):
        parts.append(f'<p class="ev"><span class="label">Evidence</span><br>{_e(round_numbers(c["evidence"]))}</p>')
    if c.get("untested_reason"):
        parts.append(f'<p class="ev"><span class="label">Untested</span><br>{_e(c["untested_reason"])}</p>')
    parts.append(f'<div class="ev"><span class="label">Tests</span> {_tests_html(c)}{_mutants_html(c)}</div>')
    parts.append(_figures_html(c.get("figures", []), c, macros))
    parts.append("</div>")
    return "".join(parts)


def _claim_row(c: dict, notes: Notes | None, macros) -> str:
    flagged = severity_of(c) is not None
    # A flagged claim's anchor is its card at the top; its row here links there.
    rid = f"row-{c['id']}" if flagged else c["id"]
    cell = [f'<td class="id"><a class="cl" href="#{_e(c["id"])}">{_e(c["id"])}</a><br>'
            f'<span class="meta">{_e(c["kind"])}; lines {_lines_links(c["lines"])}</span></td><td>']
    if flagged:
        cell.append(f'{_registry_html(c["statement"], macros)} <a href="#{_e(c["id"])}">(what is wrong, the correction)</a>')
    else:
        cell.append(f'{_printed_html(c, notes, macros)}<div class="label">The claim</div>'
                    f'<div>{_registry_html(c["statement"], macros)}</div>')
        if c.get("reason"):
            cell.append(f'<div class="ev"><b>Reason:</b> {_registry_html(c["reason"], macros)}</div>')
        if c.get("evidence"):
            cell.append(f'<div class="ev"><b>Evidence:</b> {_e(round_numbers(c["evidence"]))}</div>')
    if c.get("untested_reason"):
        cell.append(f'<div class="ev"><b>Untested:</b> {_e(c["untested_reason"])}</div>')
    cell.append("</td>")
    verdict = _badge(c["verdict"]) + (" " + _badge(severity_of(c)) if flagged else "")
    return (f'<tr id="{_e(rid)}" data-q="{_e(_search_text(c))}">{"".join(cell)}<td>{verdict}</td>'
            f'<td>{_badge(c["status"])}<br>{_tests_html(c)}{_mutants_html(c)}</td></tr>')


def _scope_lines(ledger: dict) -> set[int] | None:
    """The notes' lines a section run answers for (``coverage.scope.lines``), None for a full run."""
    from spec.registry import parse_lines

    scope = ledger.get("coverage", {}).get("scope")
    if not scope or not scope.get("lines"):
        return None
    try:
        return parse_lines(scope["lines"])
    except ValueError:
        return None


def _notes_html(ledger: dict, notes: Notes) -> str:
    text = notes.lines
    content = content_lines(notes.text)
    verdict = {c["id"]: c["verdict"] for c in ledger["claims"]}
    covered_by = ledger.get("coverage", {}).get("covered_by", {})
    by_section: dict[str, list[int]] = {}
    for n, (sec, _) in content.items():
        by_section.setdefault(sec, []).append(n)
    parts = []
    scope = _scope_lines(ledger)
    for sec, nums in by_section.items():
        if scope is not None:  # a section run shows the part of the notes it answers for
            nums = [n for n in nums if n in scope]
            if not nums:
                continue
        lo, hi = min(nums), max(nums)
        covered = sum(str(n) in covered_by for n in nums)
        rows = []
        for n in range(lo, hi + 1):
            ids = covered_by.get(str(n), [])
            if ids:
                cls = "l-" + min((verdict[i] for i in ids if i in verdict), key=LINE_RANK.index, default="holds")
            elif n in content:
                cls = "l-uncovered"
            else:
                cls = ""
            line = text[n - 1] if n <= len(text) else ""
            shown = _e(line[:DISPLAY_LINE]) + (f' <span class="meta">[... {len(line) - DISPLAY_LINE} more characters]</span>'
                                               if len(line) > DISPLAY_LINE else "")
            links = " ".join(f'<a class="cl" href="#{_e(i)}">{_e(i)}</a>' for i in ids)
            rows.append(f'<div class="nl {cls}" id="L{n}"><a class="ln" href="#L{n}">{n}</a>'
                        f'<span class="src">{shown}</span><span class="by">{links}</span></div>')
        parts.append(f'<details class="notes-sec"><summary><b>{_e(sec)}</b>: {covered}/{len(nums)} content lines covered '
                     f'(lines {lo}-{hi})</summary><div class="notes">{"".join(rows)}</div></details>')
    legend = " ".join(f'<span class="badge" style="background:{col}">{name}</span>' for name, col in [
        ("holds", "#1a7f37"), ("false-as-written", "#cf222e"), ("conditional", "#bc4c00"),
        ("not-testable", "#8c959f"), ("no claim", "#e3b341")])
    return (f'<p class="meta">The notes line by line, one section at a time, coloured by the claims on each line: {legend}. '
            f'A line number links to that line; the ids on the right link to the claims.</p>' + "".join(parts))


def _bench_html(bench: dict) -> str:
    rows = []
    for r in bench.get("ratios", []):
        ratio = "reference" if r.get("role") == "reference" else ("-" if r.get("ratio") is None else f"{r['ratio']:.3g}")
        base = "" if r.get("baseline") is None else f"{r['baseline']:.3g}"
        rows.append(f"<tr><td class=id>{_e(r.get('group'))}</td><td class=id>{_e(r.get('name'))}</td>"
                    f"<td>{float(r.get('min_s', 0)) * 1e3:.3g} ms</td><td>{ratio}</td><td>{base}</td></tr>")
    exps = "".join(f"<li><code>{_e(e.get('sweep'))}</code> / {_e(e.get('name'))}: time ~ size<sup>{float(e.get('exponent', 0)):.2f}</sup> "
                   f"over {_e(e.get('sizes'))}</li>" for e in bench.get("exponents", []))
    mode = "quick" if bench.get("quick") else "full"
    fails = "".join(f"<li>{_e(f)}</li>" for f in bench.get("failures", []))
    return (f"<p class=meta>Timed serially ({mode} mode); ratio = best time / the best time of the group's "
            f"reference in the same session; the gate fails when a ratio exceeds its baseline by more than "
            f"{float(bench.get('threshold', 1.0)):.0%}.</p>"
            + (f"<div class='card banner'><b>Regressions</b><ul>{fails}</ul></div>" if fails else "")
            + f"<table class=claims><tr class=head><th>group</th><th>benchmark</th><th>best time</th><th>ratio</th>"
              f"<th>baseline</th></tr>{''.join(rows)}</table>"
            + (f"<h3>Fitted exponents</h3><ul>{exps}</ul>" if exps else ""))


def to_html(ledger: dict, notes=None, bench: dict | None = None) -> str:
    notes = _open_notes(notes) if ledger.get("notes_file") or isinstance(notes, Notes) else None
    macros = parse_macros(notes.text[:2_000_000]) if notes else {}
    s, env = ledger["summary"], ledger["environment"]
    groups = by_severity(ledger)
    stat = [("claims", "claims", "#ch"), ("error", "errors", "#errors"), ("slip", "slips", "#slips"),
            ("fine-print", "fine print", "#fine-print"), ("holds", "hold", None), ("not-testable", "not testable", None),
            ("failing", "failing", None)]
    stats = "".join(
        f'<{"a" if href else "div"} class="stat"{f" href={chr(34)}{href}{chr(34)}" if href else ""}>'
        f'<b style="color:{BADGE.get(k, "#1f2328")}">{s.get(k, 0)}</b>{_e(label)}</{"a" if href else "div"}>'
        for k, label, href in stat)
    stats += f'<div class="stat"><b>{s["notes_lines_covered"]}/{s["notes_lines"]}</b>notes lines covered</div>'
    testable = s["claims"] - s.get("not-testable", 0)
    stats += f'<div class="stat"><b>{s.get("mutants_caught", 0)}/{testable}</b>claims shown to catch a mutant</div>'
    chaps = chapters(ledger)
    nav = " ".join(f'<a href="#ch-{_e(n)}">{_e(n)}</a>' for n, _ in chaps)
    body = ["<h1>Ledger of the Machine Perception notes</h1>",
            f"<p class=meta>Generated {_e(ledger['generated'])} &middot; {_e(env['device'])} &middot; torch {_e(env['torch'])} "
            f"&middot; Python {_e(env['python'])} &middot; notes: {_e(ledger.get('notes_file') or 'not found')}</p>",
            f'<div class="stats">{stats}</div>',
            '<p><input id="search" type="search" placeholder="Search claims: words, id, section, verdict, severity" '
            'aria-label="search claims" autocomplete="off"> <span id="search-count" class="meta"></span></p>',
            f"<nav><a href='#errors'>errors</a> <a href='#slips'>slips</a> <a href='#fine-print'>fine print</a> {nav} "
            "<a href='#coverage'>notes line by line</a> <a href='#benchmarks'>benchmarks</a></nav>"]
    if ledger.get("notes_error"):
        body.append(f"<div class='card banner'><b>Notes file:</b> {_e(ledger['notes_error'])}. Line coverage and the "
                    f"notes' own text are left out.</div>")
    for w in ledger.get("notes_warnings") or []:
        body.append(f"<div class='card banner'><b>Notes warning:</b> {_e(w)}</div>")
    if ledger.get("notes_changed"):
        body.append("<div class='card banner'><b>The notes file differs from the one the registry's line numbers were "
                    f"written for</b> under {len(ledger['notes_changed'])} claim(s); their verdicts were checked against "
                    "the registry's statements, which may no longer be what these lines say: "
                    + ", ".join(f"<a class=cl href='#{_e(i)}'>{_e(i)}</a>" for i in ledger["notes_changed"]) + "</div>")
    failing = [c for c in ledger["claims"] if c["status"] == "failing"]
    if failing:
        body.append("<div class='card banner'><b>Failing claims</b> (their tests failed; never reported as confirmed): "
                    + ", ".join(f"<a class=cl href='#{_e(c['id'])}'>{_e(c['id'])}</a>" for c in failing) + "</div>")
    untested = [c for c in ledger["claims"] if c["status"] == "untested" and c["verdict"] != "not-testable"]
    if untested:
        body.append(f"<div class='card banner'><b>Untested claims ({len(untested)})</b> (a backing test was "
                    "skipped or did not run: not confirmed): "
                    + ", ".join(f"<a class=cl href='#{_e(c['id'])}'>{_e(c['id'])}</a>"
                                + (f" <span class=meta>({_e(c['untested_reason'])})</span>" if c.get("untested_reason") else "")
                                for c in untested[:60]) + (" ..." if len(untested) > 60 else "") + "</div>")
    ids = {"error": "errors", "slip": "slips", "fine-print": "fine-print", "ungraded": "ungraded"}
    for sev, title, blurb, cs in groups:
        if sev == "ungraded" and not cs:
            continue
        cards = "".join(_claim_card(c, notes, macros) for c in cs) or "<p class=meta>None.</p>"
        head = f"{_e(title)} ({len(cs)})"
        if sev == "fine-print":  # folded by default: true under conventions every textbook leaves implicit
            body.append(f'<details class="group" id="{ids[sev]}" data-block><summary><h2>{head}</h2></summary>'
                        f'<p class=meta>{_e(blurb)}</p>{cards}</details>')
        else:
            body.append(f'<section id="{ids[sev]}" data-block><h2>{head}</h2><p class=meta>{_e(blurb)}</p>{cards}</section>')
    body.append("<h2 id='ch'>All claims, section by section</h2>")
    for name, cs in chaps:
        rows = "".join(_claim_row(c, notes, macros) for c in cs)
        figs = [(f, c) for c in cs for f in c.get("figures", []) if severity_of(c) is None]
        section_names = list(dict.fromkeys(c["section"] for c in cs))
        body.append(f"<section data-block><h2 id='ch-{_e(name)}'>{_e(' / '.join(section_names))} <span class=meta>"
                    f"(spec/claims/{_e(name)}.toml)</span></h2><table class=claims><colgroup><col class=c-id><col class=c-st>"
                    f"<col class=c-v><col class=c-t></colgroup><tr class=head><th>claim</th><th>as printed in the notes; the claim</th>"
                    f"<th>verdict</th><th>status, tests</th></tr>{rows}</table>"
                    + "".join(_figures_html([f], c, macros) for f, c in figs) + "</section>")
    body.append("<h2 id='coverage'>The notes, line by line</h2>")
    if notes:
        body.append(_notes_html(ledger, notes))
    else:
        body.append("<p>The notes file was not found or not readable, so line coverage was not computed "
                    "(<code>verify --notes PATH</code>).</p>")
    body.append("<h2 id='benchmarks'>Benchmarks</h2>")
    if bench:
        body.append(_bench_html(bench))
    else:
        body.append("<p>No benchmark timings in this report. Run <code>bench-gate --quick</code> (CI's quick mode) or "
                    "<code>bench-gate</code> (full sizes): it writes <code>report/benchmarks.json</code>, and the page "
                    "shows the table from then on.</p>")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Machine Perception notes: ledger</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main><script>{JS}</script></body></html>\n")


def write_reports(ledger: dict, out: Path, notes=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    notes = _open_notes(notes) if notes is not None and ledger.get("notes_file") else None
    (out / "ledger.json").write_text(json.dumps(ledger, indent=2) + "\n", encoding="utf-8")
    (out / "ledger.md").write_text(to_markdown(ledger) + "\n", encoding="utf-8")
    bench_file = out / "benchmarks.json"
    try:
        bench = json.loads(bench_file.read_text(encoding="utf-8")) if bench_file.exists() else None
    except (OSError, ValueError):
        bench = None
    (out / "index.html").write_text(to_html(ledger, notes, bench), encoding="utf-8")
