"""Writes the ledger as JSON (the contract), Markdown and a self-contained HTML page.

The HTML opens straight from disk: inline CSS, no scripts or fonts from the network; figures are
PNG files beside it (``figures/``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from spec.coverage import content_lines

BADGE = {
    "holds": "#1a7f37", "false-as-written": "#cf222e", "conditional": "#bc4c00", "not-testable": "#6e7781",
    "confirmed": "#1a7f37", "failing": "#cf222e", "untested": "#6e7781",
    "passed": "#1a7f37", "failed": "#cf222e", "error": "#cf222e", "skipped": "#6e7781",
}
# Colour of a notes line by the "worst" verdict of the claims on it.
LINE_RANK = ["false-as-written", "conditional", "holds", "not-testable"]


def chapters(ledger: dict) -> list[tuple[str, list[dict]]]:
    """Claims grouped by registry file (the id's prefix), in the order the notes take them."""
    groups: dict[str, list[dict]] = {}
    for c in ledger["claims"]:
        groups.setdefault(c["id"].split(".", 1)[0], []).append(c)

    return sorted(groups.items(), key=lambda kv: min(map(first_line, kv[1])))


def first_line(claim: dict) -> int:
    return int(claim["lines"].replace("-", ",").split(",")[0])


def wrong(ledger: dict) -> list[dict]:
    """The false-as-written and conditional claims, in the order of the notes."""
    return sorted((c for c in ledger["claims"] if c["verdict"] in ("false-as-written", "conditional")), key=first_line)


# --------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def to_markdown(ledger: dict) -> str:
    s, env = ledger["summary"], ledger["environment"]
    out = [
        "# Ledger of the Machine Perception notes", "",
        f"Generated {ledger['generated']} on {env['device']} (torch {env['torch']}, Python {env['python']}).", "",
        f"**{s['claims']} claims**: {s['holds']} hold, {s['false-as-written']} false as written, "
        f"{s['conditional']} conditional, {s['not-testable']} not testable; **{s['failing']} failing**. "
        f"Notes lines covered: {s['notes_lines_covered']}/{s['notes_lines']}.", "",
        "## What the notes get wrong", "",
    ]
    for c in wrong(ledger):
        out += [f"### `{c['id']}` ({c['verdict']}, lines {c['lines']}, {c['status']})", "",
                f"- **As written:** {c['statement']}", f"- **What is wrong:** {c['reason']}",
                f"- **Correction:** {c['correction']}"]
        if c.get("evidence"):
            out.append(f"- **Evidence:** {c['evidence']}")
        out.append("")
    for name, cs in chapters(ledger):
        out += [f"## {name}", "", "| claim | lines | kind | verdict | status | tests | statement |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in cs:
            passed = sum(t["outcome"] == "passed" for t in c["tests"])
            out.append(f"| `{c['id']}` | {c['lines']} | {c['kind']} | {c['verdict']} | {c['status']} | "
                       f"{passed}/{len(c['tests'])} | {_md_cell(c['statement'])} |")
        out.append("")
    cov = ledger.get("coverage")
    if cov:
        out += ["## Notes coverage", "", "| section | content lines | covered | uncovered lines |", "| --- | --- | --- | --- |"]
        for sec in cov["sections"]:
            un = ", ".join(map(str, sec["uncovered"][:30])) + (" ..." if len(sec["uncovered"]) > 30 else "")
            out.append(f"| {sec['section']} | {sec['lines']} | {sec['covered']} | {un} |")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{margin:0 0 4px} h2{margin-top:36px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a} .card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;margin:10px 0}
.wrong{border-left:5px solid #cf222e} .wrong.conditional{border-left-color:#bc4c00}
.badge{display:inline-block;color:#fff;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;white-space:nowrap}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}
th,td{border-bottom:1px solid #eaeef2;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f6f8fa;position:sticky;top:0} td.id{font-family:ui-monospace,monospace;font-size:12px;white-space:nowrap}
.tests{font-family:ui-monospace,monospace;font-size:11px;color:#57606a;margin:0;padding-left:14px}
.ev{font-size:12px;color:#57606a} .stats{display:flex;gap:10px;flex-wrap:wrap;margin:14px 0}
.stat{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:8px 14px;min-width:110px}
.stat b{display:block;font-size:22px} figure{display:inline-block;margin:8px;background:#fff;border:1px solid #d0d7de;padding:6px}
figure img{max-width:420px;max-height:320px} figcaption{font-size:12px;color:#57606a}
nav a{margin-right:10px} details{margin:6px 0} summary{cursor:pointer}
pre.notes{background:#fff;border:1px solid #d0d7de;margin:0;padding:0;font-size:12px;overflow-x:auto}
pre.notes span{display:block;padding:0 8px;border-left:6px solid transparent;white-space:pre}
.l-holds{border-left-color:#1a7f37 !important;background:#f0fff4}
.l-false-as-written{border-left-color:#cf222e !important;background:#fff0f0}
.l-conditional{border-left-color:#bc4c00 !important;background:#fff8f0}
.l-not-testable{border-left-color:#8c959f !important;background:#f6f8fa}
.l-uncovered{border-left-color:#e3b341 !important;background:#fffbe6}
.ln{color:#8c959f;display:inline-block;width:42px} .cl{color:#0969da;font-family:ui-monospace,monospace}
"""


def _e(s) -> str:
    return html.escape(str(s if s is not None else ""))


def _badge(word: str) -> str:
    return f'<span class="badge" style="background:{BADGE.get(word, "#6e7781")}">{_e(word)}</span>'


def _tests_html(c: dict) -> str:
    if not c["tests"]:
        return '<span class="ev">no tests</span>' if c["verdict"] == "not-testable" else '<span class="ev">none ran</span>'
    items = "".join(f"<li>{_badge(t['outcome'])} {_e(t['role'])} {_e(t['nodeid'])} ({t['seconds']:.2f}s)</li>"
                    for t in c["tests"])
    return f"<details><summary>{sum(t['outcome'] == 'passed' for t in c['tests'])}/{len(c['tests'])} passed</summary>" \
           f'<ul class="tests">{items}</ul></details>'


def _figures_html(paths: list[str]) -> str:
    return "".join(f'<figure><a href="{_e(p)}"><img src="{_e(p)}" alt="{_e(p)}"></a>'
                   f"<figcaption>{_e(Path(p).name)}</figcaption></figure>" for p in paths)


def _notes_html(ledger: dict, notes: Path) -> str:
    text = notes.read_text(encoding="utf-8").splitlines()
    content = content_lines("\n".join(text))
    verdict = {c["id"]: c["verdict"] for c in ledger["claims"]}
    covered_by = ledger.get("coverage", {}).get("covered_by", {})
    by_section: dict[str, list[int]] = {}
    for n, (sec, _) in content.items():
        by_section.setdefault(sec, []).append(n)
    parts = []
    for sec, nums in by_section.items():
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
            links = " ".join(f'<a class="cl" href="#{_e(i)}">{_e(i)}</a>' for i in ids)
            rows.append(f'<span class="{cls}"><span class="ln">{n}</span>{_e(text[n - 1])}  {links}</span>')
        parts.append(f"<details><summary><b>{_e(sec)}</b>: {covered}/{len(nums)} content lines covered "
                     f"(lines {lo}-{hi})</summary><pre class=\"notes\">{''.join(rows)}</pre></details>")
    legend = " ".join(f'<span class="badge" style="background:{col}">{name}</span>' for name, col in [
        ("holds", "#1a7f37"), ("false-as-written", "#cf222e"), ("conditional", "#bc4c00"),
        ("not-testable", "#8c959f"), ("no claim", "#e3b341")])
    return f"<p class=\"meta\">Each line of the notes, coloured by the claims on it: {legend}</p>" + "".join(parts)


def _bench_html(bench: dict) -> str:
    rows = []
    for r in bench.get("ratios", []):
        ratio = "reference" if r["role"] == "reference" else ("-" if r["ratio"] is None else f"{r['ratio']:.3g}")
        base = "" if r.get("baseline") is None else f"{r['baseline']:.3g}"
        rows.append(f"<tr><td class=id>{_e(r['group'])}</td><td class=id>{_e(r['name'])}</td>"
                    f"<td>{r['min_s'] * 1e3:.2f} ms</td><td>{ratio}</td><td>{base}</td></tr>")
    rows = "".join(rows)
    exps = "".join(f"<li><code>{_e(e['sweep'])}</code> / {_e(e['name'])}: time ~ size<sup>{e['exponent']:.2f}</sup> "
                   f"over {_e(e['sizes'])}</li>" for e in bench.get("exponents", []))
    mode = "quick" if bench.get("quick") else "full"
    fails = "".join(f"<li>{_e(f)}</li>" for f in bench.get("failures", []))
    return (f"<p class=meta>Timed serially ({mode} mode); ratio = best time / the best time of the group's "
            f"reference in the same session; the gate fails when a ratio exceeds its baseline by more than {bench.get('threshold', 1.0):.0%}.</p>"
            + (f"<div class='card wrong'><b>Regressions</b><ul>{fails}</ul></div>" if fails else "")
            + f"<table><tr><th>group</th><th>benchmark</th><th>best time</th><th>ratio</th><th>baseline</th></tr>{rows}</table>"
            + (f"<h3>Fitted exponents</h3><ul>{exps}</ul>" if exps else ""))


def to_html(ledger: dict, notes: Path | None, bench: dict | None) -> str:
    s, env = ledger["summary"], ledger["environment"]
    stats = "".join(f'<div class="stat"><b style="color:{BADGE.get(k, "#1f2328")}">{s[k]}</b>{_e(label)}</div>' for k, label in [
        ("claims", "claims"), ("holds", "hold"), ("false-as-written", "false as written"),
        ("conditional", "conditional"), ("not-testable", "not testable"), ("failing", "failing")])
    stats += f'<div class="stat"><b>{s["notes_lines_covered"]}/{s["notes_lines"]}</b>notes lines covered</div>'
    chaps = chapters(ledger)
    nav = "".join(f'<a href="#ch-{_e(n)}">{_e(n)}</a>' for n, _ in chaps)
    failing = [c for c in ledger["claims"] if c["status"] == "failing"]
    body = [f"<h1>Ledger of the Machine Perception notes</h1>",
            f"<p class=meta>Generated {_e(ledger['generated'])} &middot; {_e(env['device'])} &middot; torch {_e(env['torch'])} "
            f"&middot; Python {_e(env['python'])} &middot; notes: {_e(ledger.get('notes_file') or 'not found')}</p>",
            f'<div class="stats">{stats}</div>', f"<nav>{nav} <a href='#coverage'>coverage</a>"
            + (" <a href='#benchmarks'>benchmarks</a>" if bench else "") + "</nav>"]
    if failing:
        body.append("<div class='card wrong'><b>Failing claims</b> (their tests failed; never reported as confirmed): "
                    + ", ".join(f"<a href='#{_e(c['id'])}'>{_e(c['id'])}</a>" for c in failing) + "</div>")
    body.append("<h2 id='wrong'>What the notes get wrong</h2>")
    for c in wrong(ledger):
        figs = _figures_html(c.get("figures", []))
        body.append(
            f'<div class="card wrong {c["verdict"]}"><div>{_badge(c["verdict"])} {_badge(c["status"])} '
            f'<a class="cl" href="#{_e(c["id"])}">{_e(c["id"])}</a> <span class=meta>{_e(c["section"])}, lines {_e(c["lines"])}</span></div>'
            f"<p><b>As written:</b> {_e(c['statement'])}</p><p><b>What is wrong:</b> {_e(c['reason'])}</p>"
            f"<p><b>Correction:</b> {_e(c['correction'])}</p>"
            + (f"<p class=ev><b>Evidence:</b> {_e(c['evidence'])}</p>" if c.get("evidence") else "") + figs + "</div>")
    for name, cs in chaps:
        rows = []
        figs: list[str] = []
        for c in cs:
            figs += [f for f in c.get("figures", []) if f not in figs]
            extra = f"<div class=ev><b>Correction:</b> {_e(c['correction'])}</div>" if c.get("correction") else ""
            extra += f"<div class=ev><b>Reason:</b> {_e(c['reason'])}</div>" if c.get("reason") else ""
            extra += f"<div class=ev><b>Evidence:</b> {_e(c['evidence'])}</div>" if c.get("evidence") else ""
            rows.append(f'<tr id="{_e(c["id"])}"><td class=id>{_e(c["id"])}<br><span class=meta>lines {_e(c["lines"])}</span></td>'
                        f"<td>{_e(c['statement'])}{extra}</td><td>{_e(c['kind'])}</td><td>{_badge(c['verdict'])}</td>"
                        f"<td>{_badge(c['status'])}</td><td>{_tests_html(c)}</td></tr>")
        section_names = list(dict.fromkeys(c["section"] for c in cs))
        body.append(f"<h2 id='ch-{_e(name)}'>{_e(' / '.join(section_names))} <span class=meta style='font-size:13px'>"
                    f"(spec/claims/{_e(name)}.toml)</span></h2><table><tr><th>claim</th><th>statement</th><th>kind</th>"
                    f"<th>verdict</th><th>status</th><th>tests</th></tr>{''.join(rows)}</table>{_figures_html(figs)}")
    body.append("<h2 id='coverage'>Notes coverage</h2>")
    if notes:
        body.append(_notes_html(ledger, notes))
    else:
        body.append("<p>The notes file was not found, so line coverage was not computed (verify --notes PATH).</p>")
    if bench:
        body.append("<h2 id='benchmarks'>Benchmarks</h2>" + _bench_html(bench))
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Machine Perception notes: ledger</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def write_reports(ledger: dict, out: Path, notes: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ledger.json").write_text(json.dumps(ledger, indent=2) + "\n", encoding="utf-8")
    (out / "ledger.md").write_text(to_markdown(ledger) + "\n", encoding="utf-8")
    bench_file = out / "benchmarks.json"
    bench = json.loads(bench_file.read_text()) if bench_file.exists() else None
    (out / "index.html").write_text(to_html(ledger, notes, bench), encoding="utf-8")
