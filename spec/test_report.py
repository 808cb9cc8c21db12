"""The ledger as readers get it: macros expanded, formulas as MathML, hostile notes escaped,
findings ordered by severity, anchors and links, skipped tests leaving claims untested.

Tooling tests: no claim markers (they check the report, not the notes)."""

from __future__ import annotations

import html.parser
import json
import re
import textwrap
from pathlib import Path

import pytest

from spec import report
from spec.coverage import claim_hashes, read_notes
from spec.latex import LatexError, Macro, expand, mathml, parse_macros, render
from spec.ledger import build_ledger, claim_status
from spec.registry import Claim

REAL_NOTES = Path(__file__).resolve().parent.parent.parent / "shared" / "notes" / "machine-perception-summary.tex"
ENV = {"python": "3", "torch": "t", "device": "cpu", "dtype": "float64"}

PREAMBLE = r"""\documentclass{article}
\newcommand*{\tran}{^{\mathsf{T}}} % a comment
\newcommand{\kl}[2]{D_{\mathrm{KL}}(#1\lVert#2)}
\newcommand{\extratext}[1]{\iftoggle{showextratext}{#1}{}}
\newcommand{\opt}[2][k]{#1_{#2}}
\DeclareMathOperator{\softmax}{\mathrm{Softmax}}
\DeclareMathOperator*{\argmax}{arg\,max}
\renewcommand{\exp}{\mathrm{exp}}
\let\bar\overline
\def\myvector#1{\mathbf{#1}}
\def\vx{{\myvector{x}}}
% \def\commented{never}
"""


# --------------------------------------------------------------------------- macros


def test_parse_macros_reads_every_kind_of_definition():
    m = parse_macros(PREAMBLE + "\\begin{document}\n\\def\\ith{^{(i)}}\n")
    assert m[r"\tran"] == Macro(0, r"^{\mathsf{T}}")
    assert m[r"\kl"] == Macro(2, r"D_{\mathrm{KL}}(#1\lVert#2)")
    assert m[r"\opt"] == Macro(2, "#1_{#2}", default="k")
    assert m[r"\softmax"] == Macro(0, r"\mathrm{Softmax}")
    assert m[r"\argmax"] == Macro(0, r"\mathrm{arg\,max}")
    assert m[r"\exp"] == Macro(0, r"\mathrm{exp}")
    assert m[r"\bar"] == Macro(0, r"\overline")
    assert m[r"\myvector"] == Macro(1, r"\mathbf{#1}")
    assert m[r"\ith"] == Macro(0, "^{(i)}")  # defined in the body, as the notes do at line 986
    assert r"\commented" not in m  # inside a comment
    assert r"\extratext" not in m  # a toggle: cannot be expanded without TeX


def test_expand_follows_tex_semantics():
    m = parse_macros(PREAMBLE)
    assert expand(r"\vx\tran", m) == r"{\mathbf{x}}^{\mathsf{T}}"
    # TeX tokenises the body first: \lVert#2 with #2 = Q is \lVert followed by Q, not \lVertQ.
    assert expand(r"\kl{P}{Q}", m) == r"D_{\mathrm{KL}}(P\lVert Q)"
    assert expand(r"\kl PQ", m) == r"D_{\mathrm{KL}}(P\lVert Q)"  # undelimited one-token arguments
    assert expand(r"\opt{i}", m) == "k_{i}" and expand(r"\opt[j]{i}", m) == "j_{i}"
    assert expand(r"\bar x + \barx", m) == r"\overline x + \barx"  # \barx is another control word
    assert expand(r"\pdv{f}{x} \pdv{L}{x}{y} \dv{x}", {}) == \
        r"\frac{\partial f}{\partial x} \frac{\partial^2 L}{\partial x \partial y} \frac{\mathrm{d}}{\mathrm{d} x}"
    assert expand(r"\norm{v}", {}) == r"\left\lVert v \right\rVert"


def test_expand_stops_on_recursive_or_broken_definitions():
    with pytest.raises(LatexError, match="does not terminate"):
        expand(r"\a", parse_macros(r"\def\a{\a\a}"))
    with pytest.raises(LatexError, match="does not terminate"):
        expand(r"\b", parse_macros(r"\def\b{x\b}"))
    with pytest.raises(LatexError, match="argument"):
        expand(r"\kl{P}", parse_macros(PREAMBLE))


def test_mathml_of_a_macro_equals_mathml_of_its_expansion_by_hand():
    m = parse_macros(PREAMBLE)
    assert mathml(r"\kl{p}{q} = \vx\tran", m) == mathml(r"D_{\mathrm{KL}}(p\lVert q) = {\mathbf{x}}^{\mathsf{T}}")
    out = mathml(r"\frac{a}{b}", display=True)
    assert out.startswith('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">')
    assert "<mfrac><mrow><mi>a</mi></mrow><mrow><mi>b</mi></mrow></mfrac>" in out


def test_unknown_commands_and_broken_fragments_fall_back_to_their_source():
    with pytest.raises(LatexError, match=r"\\undefinedmacro"):
        mathml(r"x + \undefinedmacro")
    with pytest.raises(LatexError):
        mathml(r"\frac{a}{")
    out = render(r"ok $\frac{a}{$ and $x + \undefinedmacro$ and $y$")
    assert out.count('<code class="tex"') == 2  # each bad fragment shown as its escaped source
    assert "$x + \\undefinedmacro$" in out and "$\\frac{a}{$" in out
    assert "<math" in out and "<mi>y</mi>" in out  # the good fragment still renders


@pytest.mark.skipif(not REAL_NOTES.is_file(), reason=f"the notes file {REAL_NOTES} is not there")
def test_every_inline_formula_of_the_notes_converts_after_macro_expansion():
    text = REAL_NOTES.read_text(encoding="utf-8")
    macros = parse_macros(text)
    body = text[text.index(r"\begin{document}"):]
    frags = re.findall(r"(?<!\\)\$(.+?)(?<!\\)\$", body, re.S)
    assert len(frags) > 400
    failed = []
    for f in frags:
        try:
            mathml(f, macros)
        except LatexError as e:
            failed.append((f, str(e)))
    assert failed == []


def test_claim_lines_inside_a_formula_are_widened_to_the_whole_formula():
    from spec.latex import math_spans

    lines = ["a $x", "y$ b", "\\[", "z = 1", "\\]", "\\begin{align*}", "a\\\\", "\\end{align*}", "$one$ line",
             "50\\% $$", "$$", "% $ in a comment", "\\$5 and \\$6"]
    spans = math_spans(lines)
    assert spans == [(1, 2), (3, 5), (6, 8), (10, 11)]
    assert report._widen(4, 4, spans) == (3, 5) and report._widen(2, 4, spans) == (1, 5)
    assert report._widen(9, 9, spans) == (9, 9) and report._widen(12, 13, spans) == (12, 13)
    assert report._widen(4, 4, [(3, 100)]) == (4, 4)  # a runaway formula is not pulled in
    assert "<math" in render("\n".join(lines[2:5]))


@pytest.mark.skipif(not REAL_NOTES.is_file(), reason=f"the notes file {REAL_NOTES} is not there")
def test_every_claims_lines_of_the_notes_render_without_falling_back_to_source():
    from spec.registry import load_registry

    notes = read_notes(REAL_NOTES)
    macros = parse_macros(notes.text)
    left = []
    for c in load_registry(Path(__file__).resolve().parent / "claims").values():
        for a, b in report.line_runs(c.lines):
            wa, wb = report._widen(a, b, report._spans_of(notes))
            out = render("\n".join(notes.lines[wa - 1:wb]), macros)
            text = re.sub(r"<math.*?</math>", "", out, flags=re.S)
            if 'class="tex"' in out or re.search(r"\\[A-Za-z]", text):
                left.append((c.id, a, b, re.findall(r"\\[A-Za-z]+", text)[:3]))
    assert left == []


def test_render_text_mode():
    out = render(r"\textbf{Bold} and \textit{it}: $x$ \textcolor{red}{warm} \textcolor{weird;}{plain} 50\% % gone")
    assert "<b>Bold</b>" in out and "<i>it</i>" in out and '<span style="color:#cf222e">warm</span>' in out
    assert "plain" in out and "weird" not in out and "50%" in out and "gone" not in out
    assert "<math" in render(r"\begin{align*} a &= b \\ c &= d \end{align*}")


# --------------------------------------------------------------------------- hostile notes

HOSTILE_LINES = [
    r"<script>alert('text')</script> and <img src=x onerror=alert(1)>",
    r"$\text{<script>alert('mtext')</script>}$ and $\text{<b onmouseover=alert(1)>hi</b>}$",
    r"$x</math><script>alert('close')</script>$",
    r"\href{javascript:alert('href')}{click me} and $\href{javascript:alert(2)}{y}$",
    r"attribute quotes \" ' \" onload=\"alert(3)\" and $\mathrm{\"onclick=alert(4)}$",
    r"\textcolor{red;background:url(javascript:alert(5))}{colour} $\textcolor{red\" onclick=\"x}{z}$",
    "``` closes a fence? <script>md</script>",
    r"\evil{} \def\bad{<script>alert(6)</script>} $\bad$",
]
HOSTILE = "\\documentclass{article}\n\\begin{document}\n\\section{Hostile}\n" + "\n".join(HOSTILE_LINES) + "\n\\end{document}\n"

# Elements the page itself writes, and MathML's.
ALLOWED_TAGS = set("""html head meta title style body main h1 h2 h3 p div span a b i u code pre ul li details summary
section nav table colgroup col tr th td figure figcaption img input br sup""".split()) | {
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "munder", "mover",
    "munderover", "mfrac", "msqrt", "mroot", "mstyle", "mtable", "mtr", "mtd", "mpadded", "mphantom", "menclose",
    "script"}


class _Audit(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.scripts, self.bad_attrs, self.ids, self.urls = [], [], [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_script = tag == "script"
        for k, v in attrs:
            v = v or ""
            # Text inside a quoted, escaped attribute (data-q holds the notes' words) is inert; what
            # would be live is an event handler, a javascript: URL, or CSS that loads something.
            if k.startswith("on") or (k in ("href", "src", "action", "formaction") and "javascript:" in v.lower()) \
                    or (k == "style" and re.search(r"url\(|expression|[;:].*[;:]", v)):
                self.bad_attrs.append((tag, k, v))
            if k == "id":
                self.ids.append(v)
            if k in ("href", "src"):
                self.urls.append(v)

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)

    def handle_endtag(self, tag):
        self._in_script = False


def _claim(cid, lines, verdict="holds", severity="", statement="s", **kw):
    flagged = verdict in ("false-as-written", "conditional")
    return Claim(id=cid, section=kw.get("section", "Hostile"), statement=statement, kind="identity", verdict=verdict,
                 lines=lines, correction="c" if verdict != "holds" else "", reason="r" if verdict != "holds" else "",
                 severity=severity if flagged else "")


def _passed(cid, *roles, **props):
    return {f"t.py::test_{cid}_{r}": {"outcome": "passed", "seconds": 0.01, "props": {"claims": [[cid, r]], **props}}
            for r in roles}


def test_hostile_notes_never_become_markup(tmp_path):
    notes = tmp_path / "hostile.tex"
    notes.write_text(HOSTILE, encoding="utf-8")
    n = len(HOSTILE_LINES)
    claims = {"hostile.a": _claim("hostile.a", f"4-{3 + n}", "false-as-written", "error",
                                  statement="$\\text{<script>alert('registry')</script>}$ <i>raw</i>"),
              "hostile.b": _claim("hostile.b", "5")}
    results = {**_passed("hostile.a", "refutes", "corrects", evidence=["<script>alert('evidence')</script>"],
                         figure=["figures/ok.png"], caption=[["figures/ok.png", "<b onclick=x>caption</b> $\\text{<i>}$"]]),
               **_passed("hostile.b", "verifies")}
    ledger = build_ledger(claims, results, notes, hashes={}, environment_info=ENV)
    assert ledger["claims"][0]["notes_source"] == "\n".join(HOSTILE_LINES)  # the JSON keeps the text as it is
    report.write_reports(ledger, tmp_path / "out", notes)
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    audit = _Audit()
    audit.feed(page)
    assert set(audit.tags) <= ALLOWED_TAGS, set(audit.tags) - ALLOWED_TAGS
    assert audit.tags.count("script") == 1 and audit.scripts == [report.JS]  # only the page's own script
    assert audit.bad_attrs == []
    # Opens from disk with no network: links are fragments of the page or its own figures.
    assert audit.urls and all(u.startswith(("#", "figures/")) for u in audit.urls), audit.urls
    assert "<link" not in page and "@import" not in page
    assert "<script>alert" not in page and "</math><script>" not in page
    assert "&lt;script&gt;alert(&#x27;mtext&#x27;)&lt;/script&gt;" in page  # shown as text, in the formula
    assert "click me" in page  # \href keeps its text; its URL is never a link (bad_attrs above)
    # ledger.md: outside its code fences nothing of the notes is markup, and no fence closes early.
    md = (tmp_path / "out" / "ledger.md").read_text(encoding="utf-8")
    fence = re.search(r"^(`{3,})tex$", md, re.M).group(1)
    assert len(fence) > 3  # the notes hold ``` so the fence is longer
    outside = re.sub(rf"^{fence}tex\n.*?\n^{fence}$", "", md, flags=re.M | re.S)
    assert not re.search(r"<[A-Za-z/]", outside), re.findall(r".{20}<[A-Za-z/].{20}", outside)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00b\x00a\x00d", "not UTF-8"),
    (b"", "is empty"),
    (b"   \n\n", "is empty"),
])
def test_unusable_notes_give_a_clear_error_in_the_ledger_not_a_traceback(tmp_path, content, message):
    notes = tmp_path / "bad.tex"
    notes.write_bytes(content)
    claims = {"hostile.b": _claim("hostile.b", "5")}
    ledger = build_ledger(claims, _passed("hostile.b", "verifies"), notes, hashes={}, environment_info=ENV)
    assert message in ledger["notes_error"] and ledger["notes_file"] is None
    assert ledger["claims"][0]["status"] == "confirmed" and "notes_source" not in ledger["claims"][0]
    report.write_reports(ledger, tmp_path / "out", notes)
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert message in page and message in (tmp_path / "out" / "ledger.md").read_text()
    assert any(message in line for line in report.severity_summary_lines(ledger))


def test_notes_without_sections_or_with_a_huge_line_warn_and_still_render(tmp_path):
    notes = tmp_path / "odd.tex"
    notes.write_text("\\begin{document}\nplain $x$ line\n" + "y" * 1_100_000 + "\n\\end{document}\n", encoding="utf-8")
    claims = {"hostile.b": _claim("hostile.b", "2-3")}
    ledger = build_ledger(claims, _passed("hostile.b", "verifies"), notes, hashes={}, environment_info=ENV)
    assert any("no \\section" in w for w in ledger["notes_warnings"])
    assert any("longer than" in w and "line 3" in w for w in ledger["notes_warnings"])
    report.write_reports(ledger, tmp_path / "out", notes)
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert len(page) < 200_000 and "more characters]" in page and "no \\section" in page


# --------------------------------------------------------------------------- notes changed


def test_changed_notes_lines_are_reported_claim_by_claim(tmp_path):
    original = "\\begin{document}\n\\section{A}\none $x$\ntwo\nthree\n\\end{document}\n"
    a = tmp_path / "a.tex"
    a.write_text(original)
    claims = {"a.one": _claim("a.one", "3"), "a.two": _claim("a.two", "4-5"), "a.moved": _claim("a.moved", "5")}
    recorded = claim_hashes(read_notes(a), claims)
    claims["a.moved"] = _claim("a.moved", "4")  # the registry's lines edited after the hashes were taken
    results = {**_passed("a.one", "verifies"), **_passed("a.two", "verifies"), **_passed("a.moved", "verifies")}
    same = build_ledger(claims, results, a, hashes=recorded, environment_info=ENV)
    assert same["notes_changed"] == [] and same["notes_unrecorded"] == ["a.moved"]
    b = tmp_path / "b.tex"
    b.write_text(original.replace("three", "three, edited"))
    changed = build_ledger(claims, results, b, hashes=recorded, environment_info=ENV)
    assert changed["notes_changed"] == ["a.two"]
    by = {c["id"]: c for c in changed["claims"]}
    assert by["a.two"]["notes_changed"] is True and by["a.one"]["notes_changed"] is False
    assert any("a.two" in line for line in report.severity_summary_lines(changed))
    page = report.to_html(changed, read_notes(b), None)
    assert "differs from the one the registry" in page and "notes changed</span>" in page


def test_recorded_hashes_cover_the_current_registry():
    """spec/notes-lines.json is refreshed (python -m spec.coverage --update-hashes) after registry edits."""
    from spec.coverage import HASHES, load_hashes
    from spec.registry import load_registry

    recorded = load_hashes(HASHES)
    assert recorded, f"{HASHES} is missing: run python -m spec.coverage --update-hashes"
    claims = load_registry(Path(__file__).resolve().parent / "claims")
    stale = sorted(cid for cid, c in claims.items() if recorded["claims"].get(cid, {}).get("lines") != c.lines)
    assert stale == [], f"lines edited since the hashes were recorded: run python -m spec.coverage --update-hashes"


# --------------------------------------------------------------------------- ordering, anchors, links


def _graded_ledger(tmp_path):
    notes = tmp_path / "n.tex"
    notes.write_text("\\begin{document}\n\\section{S}\n" + "\n".join(f"line {i} $x_{i}$" for i in range(3, 12))
                     + "\n\\end{document}\n")
    claims = {"s.fine": _claim("s.fine", "3", "conditional", "fine-print"),
              "s.slip": _claim("s.slip", "4", "false-as-written", "slip"),
              "s.err2": _claim("s.err2", "9", "false-as-written", "error"),
              "s.err1": _claim("s.err1", "5, 7-8", "conditional", "error"),
              "s.none": _claim("s.none", "6", "false-as-written"),
              "s.ok": _claim("s.ok", "10", statement="holds with $\\frac{a}{b}$")}
    results = {}
    for cid, c in claims.items():
        results.update(_passed(cid, *(("verifies",) if c.verdict == "holds" else ("refutes", "corrects"))))
    return build_ledger(claims, results, notes, hashes={}, environment_info=ENV), notes


def test_findings_are_ordered_errors_slips_fine_print(tmp_path):
    ledger, notes = _graded_ledger(tmp_path)
    s = ledger["summary"]
    assert (s["error"], s["slip"], s["fine-print"]) == (2, 1, 1)
    assert [c["id"] for c in report.wrong(ledger)] == ["s.err1", "s.err2", "s.slip", "s.fine", "s.none"]
    lines = report.severity_summary_lines(ledger)
    heads = [ln.split(" ")[0] for ln in lines if not ln.startswith(" ")]
    assert heads[:4] == ["ERRORS", "Slips", "Fine", "Flagged,"]
    assert lines[1] == "  s.err1, s.err2" and "run python -m spec.coverage --update-hashes" in lines[-1]
    md = report.to_markdown(ledger)
    heads = [md.index(h) for h in ("## Errors: what to fix (2)", "## Slips (1)", "## Fine print (1)",
                                   "## Flagged, not yet graded (1)")]
    assert heads == sorted(heads) and md.index("`s.err1`") < md.index("`s.err2`") < md.index("`s.slip`")
    page = report.to_html(ledger, read_notes(notes), None)
    pos = [page.index(f'id="{i}"') for i in ("errors", "slips", "fine-print", "ungraded")]
    assert pos == sorted(pos)
    folded = re.search(r'<details class="group" id="fine-print"([^>]*)><summary><h2>Fine print \(1\)</h2>', page)
    assert folded and "open" not in folded.group(1)  # folded by default


def test_every_claim_has_one_anchor_and_two_way_line_links(tmp_path):
    ledger, notes = _graded_ledger(tmp_path)
    page = report.to_html(ledger, read_notes(notes), None)
    audit = _Audit()
    audit.feed(page)
    for c in ledger["claims"]:
        assert audit.ids.count(c["id"]) == 1, c["id"]
    assert len(audit.ids) == len(set(audit.ids))
    # s.err1 stands on lines 5, 7-8: its card links to each run, and those lines link back.
    card = page[page.index('id="s.err1"'):page.index('id="s.err2"')]
    assert '<a href="#L5">5</a>, <a href="#L7">7</a>-<a href="#L8">8</a>' in card
    for n in (5, 7, 8):
        row = re.search(rf'<div class="nl [^"]*" id="L{n}">.*?</div>', page).group(0)
        assert '<a class="cl" href="#s.err1">s.err1</a>' in row
    assert "<mfrac>" in page  # the registry's $\frac{a}{b}$ rendered


def test_a_section_run_counts_the_lines_of_its_own_sections(tmp_path):
    notes = tmp_path / "n.tex"
    notes.write_text("\\begin{document}\n\\section{A}\na one\na two\n\\section{B}\nb one\nb two\nb three\n\\end{document}\n")
    claims = {"b.x": _claim("b.x", "7-8", section="B")}
    whole = build_ledger(claims, _passed("b.x", "verifies"), notes, hashes={}, environment_info=ENV)
    assert (whole["summary"]["notes_lines"], whole["summary"]["notes_lines_covered"]) == (5, 2)
    part = build_ledger(claims, _passed("b.x", "verifies"), notes, hashes={}, environment_info=ENV, scoped=True)
    assert (part["summary"]["notes_lines"], part["summary"]["notes_lines_covered"]) == (3, 2)
    assert part["coverage"]["scope"] == {"sections": ["b"], "lines": "6-8", "notes_sections": ["B"]}
    page = report.to_html(part, read_notes(notes), None)
    assert 'id="L7"' in page and 'id="L3"' not in page


def test_evidence_numbers_are_rounded_when_rendered_only():
    assert report.round_numbers("max |err| 2.220446049250313e-16 over 25 draws") == "max |err| 2.22e-16 over 25 draws"
    assert report.round_numbers("ratio 0.123456789, 1.5, 12345.678, -3.14159e+02") == "ratio 0.1235, 1.5, 1.235e+04, -314.2"
    assert report.round_numbers("torch 2.13.0, float32, cuda:0, 1e-12, 100000, x1.234567") == \
        "torch 2.13.0, float32, cuda:0, 1e-12, 100000, x1.234567"


def test_figures_have_captions_not_file_names(tmp_path):
    ledger, notes = _graded_ledger(tmp_path)
    by = {c["id"]: c for c in ledger["claims"]}
    by["s.ok"]["figures"] = [{"path": "figures/s-plot.png", "caption": "Loss against step: the plot"}]
    by["s.err1"]["figures"] = [{"path": "figures/s-other.png", "caption": ""}]
    page = report.to_html(ledger, read_notes(notes), None)
    assert "<figcaption>Loss against step: the plot <span" in page
    assert "<figcaption>Figure of s.err1: s <span" in page and "<figcaption>s-other.png" not in page


def test_captions_recorded_by_a_test_reach_the_ledger():
    claims = {"s.ok": _claim("s.ok", "1")}
    results = _passed("s.ok", "verifies", figure=["figures/a.png", "figures/b.png"],
                      caption=[["figures/b.png", "what b shows"]])
    figs = build_ledger(claims, results, None, environment_info=ENV)["claims"][0]["figures"]
    assert figs == [{"path": "figures/a.png", "caption": ""}, {"path": "figures/b.png", "caption": "what b shows"}]


def test_benchmark_table_or_how_to_produce_it(tmp_path):
    ledger, _ = _graded_ledger(tmp_path)
    assert "bench-gate --quick" in report.to_html(ledger, None, None)
    bench = {"quick": True, "threshold": 1.0, "ratios": [
        {"group": "cnn.conv2d", "name": "test_ref", "role": "reference", "min_s": 0.002, "ratio": None},
        {"group": "cnn.conv2d", "name": "test_ours", "role": "kernel", "min_s": 0.0096, "ratio": 4.8, "baseline": 5.1}]}
    page = report.to_html(ledger, None, bench)
    assert "bench-gate --quick" not in page and "<td>4.8</td><td>5.1</td>" in page


# --------------------------------------------------------------------------- status and skips


@pytest.mark.parametrize("outcomes, status", [
    ({"verifies": ["passed", "passed"]}, "confirmed"),
    ({"verifies": ["passed", "skipped"]}, "untested"),  # a skipped backing test: not confirmed
    ({"verifies": ["passed", "failed"]}, "failing"),
    ({"verifies": ["skipped", "failed"]}, "failing"),
    ({}, "untested"),
])
def test_claim_status_rules(outcomes, status):
    tests = [{"role": r, "outcome": o} for r, os in outcomes.items() for o in os]
    assert claim_status("holds", tests) == status
    assert claim_status("false-as-written", [{"role": "refutes", "outcome": "passed"}]) == "untested"


def test_a_skipped_backing_test_leaves_its_claim_untested_with_the_reason(pytester):
    pytester.makeini("[pytest]\nclaims_registry = claims\n")
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "demo.toml").write_text(textwrap.dedent("""
        [[claim]]
        id = "demo.gym"
        section = "Demo"
        statement = "agrees with a library"
        kind = "identity"
        verdict = "holds"
        lines = "1"
    """))
    pytester.makepyfile(test_demo=textwrap.dedent("""
        import pytest

        @pytest.mark.claim("demo.gym")
        def test_own():
            assert 1 + 1 == 2

        @pytest.mark.claim("demo.gym")
        def test_against_library():
            pytest.importorskip("no_such_library_xyz", reason="the 'refs' extra is not installed")
            assert True
    """))
    result = pytester.runpytest("-p", "spec.plugin", "--ledger", "out", "--notes", "none.tex")
    result.assert_outcomes(passed=2, skipped=1)
    ledger = json.loads((pytester.path / "out" / "ledger.json").read_text())
    claim = ledger["claims"][0]
    assert claim["status"] == "untested"
    assert claim["untested_reason"] == "the 'refs' extra is not installed"
    assert {t["outcome"] for t in claim["tests"]} == {"passed", "skipped"}
    assert "the &#x27;refs&#x27; extra is not installed" in (pytester.path / "out" / "index.html").read_text()


def test_pathological_notes_cost_linear_time(tmp_path):
    """Unclosed definitions, environments and headings by the ten thousand: no quadratic scans."""
    import time

    body = ["\\def\\a{" * 20_000, "\\begin{" * 80_000, "\\section{{" * 50_000, "$a$" * 50_000, "{" * 200_000]
    notes = tmp_path / "dos.tex"
    notes.write_text("\\begin{document}\n" + "\n".join(body) + "\n\\end{document}\n")
    claims = {"dos.a": _claim("dos.a", "2-6", "false-as-written", "error")}
    start = time.perf_counter()
    ledger = build_ledger(claims, _passed("dos.a", "refutes", "corrects"), notes, hashes={}, environment_info=ENV)
    report.write_reports(ledger, tmp_path / "out", notes)
    elapsed = time.perf_counter() - start
    # Linear work takes about a second here; a quadratic scan of the "\\begin{" line alone took a minute.
    assert elapsed < 15, elapsed
    assert ledger["notes_warnings"] and (tmp_path / "out" / "index.html").stat().st_size < 2_000_000
