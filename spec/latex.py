"""The notes' LaTeX as HTML: their own macros expanded, formulas as MathML, everything else escaped.

The notes file comes from outside the project, so it is data, never markup (issue 18): every
character of it reaches the page through :func:`html.escape` or through :func:`mathml`, which
rebuilds latex2mathml's element tree from a whitelist of MathML tags and attributes (latex2mathml
itself copies ``\\text{<script>}`` and ``\\href{javascript:...}`` into its output verbatim).

* :func:`parse_macros` reads ``\\def``, ``\\newcommand``, ``\\renewcommand``, ``\\DeclareMathOperator``
  and ``\\let`` from the notes' source (the preamble, and the ``\\def\\ith`` at line 986).
* :func:`expand` expands them (and the few ``physics``/``bbm`` package macros the notes use, which
  latex2mathml does not know) with a budget, so a recursive definition cannot hang the report.
* :func:`render` turns a run of LaTeX (a claim's lines of the notes, or a registry statement with
  ``$...$``) into HTML: formulas as ``<math>``, text escaped, a few text commands as tags. A formula
  that does not convert is shown as its escaped source, never dropped.
"""

from __future__ import annotations

import html
import itertools
import re
from dataclasses import dataclass

__all__ = ["Macro", "LatexError", "parse_macros", "expand", "mathml", "render", "render_math_or_source", "math_spans"]


class LatexError(ValueError):
    """A fragment that cannot be expanded or converted (the caller shows its source instead)."""


@dataclass(frozen=True)
class Macro:
    nargs: int
    body: str
    default: str | None = None  # \newcommand{\x}[2][default]{...}: the optional first argument


_NAME = r"\\(?:[A-Za-z]+|.)"
_DEF = re.compile(r"\\def\s*(" + _NAME + r")\s*((?:#\d)*)\s*\{")
_NEWCOMMAND = re.compile(r"\\(?:re|provide)?newcommand\*?\s*(?:\{\s*(" + _NAME + r")\s*\}|(" + _NAME + r"))"
                         r"\s*(?:\[(\d)\])?\s*(?:\[([^\]]*)\])?\s*\{")
_OPERATOR = re.compile(r"\\DeclareMathOperator(\*?)\s*\{\s*(" + _NAME + r")\s*\}\s*\{")
_LET = re.compile(r"\\let\s*(" + _NAME + r")\s*=?\s*(" + _NAME + r")")
_BODY_LIMIT = 1000  # characters of a macro's body; the notes' longest is a few dozen
_MAX_DEFINITIONS = 500  # per kind; the notes have about 70 in all
# Conditionals and toggles cannot be expanded without a TeX engine: such macros stay as they are.
_UNEXPANDABLE = re.compile(r"\\if|\\else|\\fi\b|\\csname|\\expandafter")


def _strip_comments(text: str) -> str:
    return re.sub(r"(?<!\\)%[^\n]*", "", text)


_BRACE = re.compile(r"\\.|[{}]", re.S)


def _group(s: str, i: int, limit: int | None = None) -> tuple[str, int]:
    """The balanced ``{...}`` group whose ``{`` is at s[i]: (content, index after the ``}``).

    ``limit`` bounds the search (a definition's body): a file of unclosed ``\\def\\a{`` must not
    cost a scan to the end of the file per definition."""
    if i >= len(s) or s[i] != "{":
        raise LatexError("expected '{'")
    depth = 0
    stop = len(s) if limit is None else min(len(s), i + limit)
    for m in _BRACE.finditer(s, i, stop):
        c = m.group(0)
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1:m.start()], m.end()
    raise LatexError("unbalanced braces")


def parse_macros(text: str) -> dict[str, Macro]:
    """{``\\name``: Macro} for every definition in ``text`` (later definitions win, as in TeX)."""
    text = _strip_comments(text)
    found: list[tuple[int, str, Macro]] = []
    for m in itertools.islice(_DEF.finditer(text), _MAX_DEFINITIONS):
        try:
            body, _ = _group(text, m.end() - 1, _BODY_LIMIT)
        except LatexError:
            continue
        found.append((m.start(), m.group(1), Macro(len(m.group(2)) // 2, body)))
    for m in itertools.islice(_NEWCOMMAND.finditer(text), _MAX_DEFINITIONS):
        try:
            body, _ = _group(text, m.end() - 1, _BODY_LIMIT)
        except LatexError:
            continue
        name = m.group(1) or m.group(2)
        found.append((m.start(), name, Macro(int(m.group(3) or 0), body, m.group(4))))
    for m in itertools.islice(_OPERATOR.finditer(text), _MAX_DEFINITIONS):
        try:
            body, _ = _group(text, m.end() - 1, _BODY_LIMIT)
        except LatexError:
            continue
        # \mathrm rather than \operatorname: latex2mathml turns \operatorname{arg\,max} into an empty <mo>.
        body = body.strip()
        found.append((m.start(), m.group(2), Macro(0, body if body.startswith("\\mathrm") else r"\mathrm{" + body + "}")))
    for m in itertools.islice(_LET.finditer(text), _MAX_DEFINITIONS):
        found.append((m.start(), m.group(1), Macro(0, m.group(2))))
    macros: dict[str, Macro] = {}
    for _, name, macro in sorted(found, key=lambda t: t[0]):
        if _UNEXPANDABLE.search(macro.body):
            macros.pop(name, None)
            continue
        macros[name] = macro
    return macros


# Package macros the notes use that latex2mathml does not know; the physics ones take a variable
# number of brace groups: {count of groups: replacement}.
_PACKAGE: dict[str, dict[int, str]] = {
    r"\pdv": {1: r"\frac{\partial}{\partial #1}", 2: r"\frac{\partial #1}{\partial #2}",
              3: r"\frac{\partial^2 #1}{\partial #2 \partial #3}"},
    r"\dv": {1: r"\frac{\mathrm{d}}{\mathrm{d} #1}", 2: r"\frac{\mathrm{d} #1}{\mathrm{d} #2}"},
    r"\norm": {1: r"\left\lVert #1 \right\rVert"},
    r"\abs": {1: r"\left| #1 \right|"},
    r"\qty": {0: "", 1: r"\left\{ #1 \right\}"},
    r"\mathbbm": {1: r"\mathbb{#1}"},
    r"\textsc": {1: r"\text{#1}"},
    r"\makebox": {1: "#1"},
    r"\scriptsize": {0: ""}, r"\footnotesize": {0: ""}, r"\small": {0: ""}, r"\normalsize": {0: ""},
    r"\centerdot": {0: r"\cdot"},
    r"\limits": {0: ""}, r"\nolimits": {0: ""},
    r"\tr": {0: r"\mathrm{tr}"},
}


def _arg(s: str, i: int) -> tuple[str, int]:
    """One macro argument at s[i:]: a brace group, a control sequence or one character."""
    while i < len(s) and s[i] in " \t\n":
        i += 1
    if i >= len(s):
        raise LatexError("a macro is missing its argument")
    if s[i] == "{":
        return _group(s, i)
    if s[i] == "\\":
        m = re.compile(_NAME).match(s, i)
        return m.group(0), m.end()
    return s[i], i + 1


def _substitute(body: str, args: list[str]) -> str:
    r"""``body`` with #1..#9 replaced; TeX tokenises the body first, so ``\lVert#2`` with #2 = Q must
    not become the control word ``\lVertQ``."""
    def one(m: re.Match) -> str:
        k = int(m.group(1))
        if not 0 < k <= len(args):
            return m.group(0)
        a = args[k - 1]
        glued = re.search(r"\\[A-Za-z]+$", body[:m.start()]) and a[:1].isalpha()
        return " " + a if glued else a

    return re.sub(r"#(\d)", one, body)


def expand(tex: str, macros: dict[str, Macro], *, budget: int = 5000) -> str:
    """``tex`` with every macro of ``macros`` (and of the packages above) expanded.

    Raises LatexError after ``budget`` expansions or when the text grows past 64 times its size:
    ``\\def\\a{\\a\\a}`` must not hang the report.
    """
    out = tex
    i = 0
    steps = 0
    cap = 64 * len(tex) + 4096
    name_re = re.compile(_NAME)
    while True:
        j = out.find("\\", i)
        if j < 0:
            return out
        m = name_re.match(out, j)
        if m is None:  # a trailing backslash
            return out
        name = m.group(0)
        end = m.end()
        if name in macros:
            mac = macros[name]
            args: list[str] = []
            k = end
            if mac.default is not None:
                if k < len(out) and out[k] == "[":
                    close = out.find("]", k)
                    if close < 0:
                        raise LatexError(f"{name}: unclosed optional argument")
                    args.append(out[k + 1:close])
                    k = close + 1
                else:
                    args.append(mac.default)
            while len(args) < mac.nargs:
                a, k = _arg(out, k)
                args.append(a)
            repl = _substitute(mac.body, args)
        elif name in _PACKAGE:
            forms = _PACKAGE[name]
            if name == r"\makebox":  # \makebox[width]{text}: drop the width
                k = end
                while k < len(out) and out[k] == "[":
                    close = out.find("]", k)
                    k = close + 1 if close >= 0 else len(out)
                end = k
            args = []
            ends = [end]  # ends[m]: index after the m-th brace group
            k = end
            while len(args) < max(forms):
                p = k
                while p < len(out) and out[p] in " \t\n":
                    p += 1
                if p < len(out) and out[p] == "{":
                    a, k = _group(out, p)
                    args.append(a)
                    ends.append(k)
                else:
                    break
            n = max((c for c in forms if c <= len(args)), default=None)
            if n is None:
                i = end
                continue
            k = ends[n]
            repl = _substitute(forms[n], args[:n])
        else:
            i = end
            continue
        # A control word glued to a following letter would change its name: keep a space.
        if re.search(r"\\[A-Za-z]+$", repl) and k < len(out) and out[k].isalpha():
            repl += " "
        out = out[:j] + repl + out[k:]
        i = j
        steps += 1
        if steps > budget or len(out) > cap:
            raise LatexError("macro expansion does not terminate (a recursive definition?)")


# --------------------------------------------------------------------------- MathML, sanitised

_MATHML_TAGS = frozenset("""math mrow mi mn mo ms mtext mspace msub msup msubsup munder mover munderover mfrac msqrt
mroot mstyle mtable mtr mtd mlabeledtr mpadded mphantom menclose merror mfenced mmultiscripts mprescripts none
semantics""".split())
_MATHML_ATTRS = frozenset("""display mathvariant stretchy fence form accent accentunder columnalign columnlines
rowlines rowalign width height depth lspace rspace voffset scriptlevel displaystyle mathcolor mathbackground
linethickness movablelimits separator largeop symmetric minsize maxsize rowspacing columnspacing frame
framespacing equalrows equalcolumns align notation open close separators columnspan rowspan""".split())
# Attribute values latex2mathml writes: words, numbers, lengths, colours. Anything else is dropped.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9#.+\-% ]{0,64}$")
_UNKNOWN_COMMAND = re.compile(r"^\\[A-Za-z]+$")


def _serialise(el, out: list[str], unknown: list[str]) -> None:
    tag = el.tag if isinstance(el.tag, str) else "mrow"
    tag = tag.rsplit("}", 1)[-1]
    if tag not in _MATHML_TAGS:
        tag = "mrow"  # e.g. anything a future latex2mathml adds: keep the content, not the element
    attrs = []
    for k, v in el.attrib.items():
        k = k.rsplit("}", 1)[-1]
        if k in _MATHML_ATTRS and _SAFE_VALUE.match(v):
            attrs.append(f' {k}="{html.escape(v, quote=True)}"')
    if tag == "math":
        attrs.insert(0, ' xmlns="http://www.w3.org/1998/Math/MathML"')
    out.append(f"<{tag}{''.join(attrs)}>")
    if el.text:
        # latex2mathml stores entities (&#x02254;) as text: decode them, then escape everything.
        text = html.unescape(el.text)
        if tag in ("mi", "mo") and _UNKNOWN_COMMAND.match(text):
            unknown.append(text)
        out.append(html.escape(text, quote=True))
    for child in el:
        _serialise(child, out, unknown)
        if child.tail:
            out.append(html.escape(html.unescape(child.tail), quote=True))
    out.append(f"</{tag}>")


def mathml(tex: str, macros: dict[str, Macro] | None = None, *, display: bool = False) -> str:
    """``tex`` (math mode, no delimiters) as a sanitised ``<math>`` element.

    Raises LatexError when latex2mathml fails or leaves a command it does not know (it would print
    ``\\foo`` as a variable, which looks like a formula but is not the notes' one).
    """
    from latex2mathml.converter import convert_to_element

    src = expand(tex, macros or {})
    try:
        el = convert_to_element(src, display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises many types (NoAvailableTokensError, KeyError, ...)
        raise LatexError(f"latex2mathml: {type(e).__name__} {e}") from None
    out: list[str] = []
    unknown: list[str] = []
    _serialise(el, out, unknown)
    if unknown:
        raise LatexError(f"unknown command(s) {', '.join(sorted(set(unknown)))}")
    return "".join(out)


def _source(tex: str, delim: tuple[str, str]) -> str:
    return f'<code class="tex" title="shown as source: not converted">{html.escape(delim[0] + tex + delim[1])}</code>'


def render_math_or_source(tex: str, macros: dict[str, Macro] | None, *, display: bool = False,
                          delim: tuple[str, str] = ("$", "$")) -> str:
    try:
        return mathml(tex, macros, display=display)
    except (LatexError, RecursionError):
        return _source(tex, delim)


def math_spans(lines: list[str]) -> list[tuple[int, int]]:
    """(first line, last line) of every formula that runs over several lines (1-based): ``$...$``,
    ``\\[...\\]``, ``\\(...\\)`` and the display environments. A claim's lines may start inside
    one; the report widens them to the whole formula so that it renders."""
    spans = []
    open_at: tuple[str, int] | None = None
    env_re = re.compile(r"\\(begin|end)\{(" + "|".join(re.escape(e) for e in ("align", "align*", "equation",
                        "equation*", "gather", "gather*", "multline", "multline*")) + r")\}")
    for no, raw in enumerate(lines, 1):
        line = re.sub(r"(?<!\\)%.*$", "", raw[:100_000])
        i = 0
        while i < len(line):
            c = line[i]
            if c == "\\":
                two = line[i:i + 2]
                m = env_re.match(line, i)
                if m:
                    if m.group(1) == "begin" and open_at is None:
                        open_at = ("env:" + m.group(2), no)
                    elif m.group(1) == "end" and open_at and open_at[0] == "env:" + m.group(2):
                        if no > open_at[1]:
                            spans.append((open_at[1], no))
                        open_at = None
                    i = m.end()
                    continue
                if two in ("\\[", "\\(") and open_at is None:
                    open_at = (two, no)
                elif two in ("\\]", "\\)") and open_at and open_at[0] == {"\\]": "\\[", "\\)": "\\("}[two]:
                    if no > open_at[1]:
                        spans.append((open_at[1], no))
                    open_at = None
                i += 2
                continue
            if c == "$":
                d = "$$" if line.startswith("$$", i) else "$"
                if open_at is None:
                    open_at = (d, no)
                elif open_at[0] == d:
                    if no > open_at[1]:
                        spans.append((open_at[1], no))
                    open_at = None
                i += len(d)
                continue
            i += 1
    return spans


# --------------------------------------------------------------------------- text mode

_MATH_ENVS = ("align", "align*", "equation", "equation*", "gather", "gather*", "multline", "multline*")
_TEXT_TAGS = {r"\textbf": "b", r"\textit": "i", r"\emph": "i", r"\texttt": "code", r"\underline": "u",
              r"\section": "b", r"\subsection": "b", r"\subsubsection": "b", r"\section*": "b",
              r"\subsection*": "b", r"\subsubsection*": "b"}
# Colours of \textcolor that carry meaning in the notes ("Red is intractable"); any other name is ignored.
_COLOURS = {"red": "#cf222e", "blue": "#0550ae", "orange": "#bc4c00", "purple": "#8250df", "gray": "#6e7781",
            "green": "#1a7f37", "darkgreen": "#116329", "myblue": "#0a3069", "myorange": "#bc4c00",
            "myorange2": "#cf222e", "magenta": "#bf3989", "brown": "#8a4600", "violet": "#8250df",
            "teal": "#1b7c83", "cyan": "#1b7c83", "olive": "#7d8000", "black": "#1f2328", "DarkOrchid": "#8250df"}
_DROP_WITH_ARGS = {r"\setlength": 2, r"\addtolength": 2, r"\hspace": 1, r"\vspace": 1, r"\phantom": 1,
                   r"\titleformat": 0, r"\label": 1}
_DROP = {r"\newpage", r"\columnbreak", r"\vfill", r"\hfill", r"\noindent", r"\centering", r"\medskip",
         r"\smallskip", r"\bigskip", r"\par", r"\toprule", r"\midrule", r"\bottomrule", r"\footnotesize",
         r"\scriptsize", r"\small", r"\normalsize", r"\quad", r"\qquad", r"\linewidth", r"\textwidth"}
_LITERAL = {"\\%": "%", "\\&": "&", "\\_": "_", "\\#": "#", "\\$": "$", "\\{": "{", "\\}": "}", "\\ ": " ",
            r"\LaTeX": "LaTeX", r"\TeX": "TeX", r"\textbullet": "\u2022", r"\ldots": "\u2026", r"\dots": "\u2026",
            "\\,": "\u2009", r"\\": "<br>", "~": "\u00a0", r"\item": "\u2022 "}
_ACCENT = {'\\"': {"a": "ä", "o": "ö", "u": "ü", "A": "Ä", "O": "Ö", "U": "Ü", "e": "ë", "i": "ï"},
           "\\'": {"e": "é", "a": "á", "o": "ó", "i": "í", "u": "ú", "E": "É"},
           "\\`": {"e": "è", "a": "à", "o": "ò", "u": "ù"}, "\\^": {"e": "ê", "a": "â", "o": "ô", "i": "î"}}


def _find_math_end(s: str, i: int, close: str) -> int:
    """Index of the unescaped ``close`` at or after ``i``, or -1."""
    while True:
        j = s.find(close, i)
        if j < 0:
            return -1
        if close == "$" and j > 0 and s[j - 1] == "\\" and (j < 2 or s[j - 2] != "\\"):
            i = j + 1
            continue
        return j


def render(tex: str, macros: dict[str, Macro] | None = None, *, depth: int = 0) -> str:
    """A run of LaTeX in text mode (``$...$``, ``\\[...\\]``, ``\\begin{align*}`` as math) as safe HTML."""
    macros = macros or {}
    if depth > 20:
        return html.escape(tex)
    out: list[str] = []
    i, n = 0, len(tex)
    name_re = re.compile(r"\\(?:[A-Za-z]+\*?|.)")
    while i < n:
        c = tex[i]
        if c == "%" :  # a comment runs to the end of the line
            j = tex.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "$":
            display = tex.startswith("$$", i)
            d = "$$" if display else "$"
            j = _find_math_end(tex, i + len(d), d)
            if j < 0:
                out.append(html.escape(tex[i:]))
                break
            out.append(render_math_or_source(tex[i + len(d):j], macros, display=display, delim=(d, d)))
            i = j + len(d)
            continue
        if tex.startswith("\\[", i) or tex.startswith("\\(", i):
            close = "\\]" if tex[i + 1] == "[" else "\\)"
            j = tex.find(close, i + 2)
            if j < 0:
                out.append(html.escape(tex[i:]))
                break
            out.append(render_math_or_source(tex[i + 2:j], macros, display=close == "\\]",
                                             delim=(tex[i:i + 2], close)))
            i = j + 2
            continue
        if c == "\\":
            m = name_re.match(tex, i)
            name = m.group(0)
            k = m.end()
            if name == r"\begin" or name == r"\end":
                try:
                    env, k2 = _group(tex, k, 200)
                except LatexError:
                    out.append(html.escape(name))
                    i = k
                    continue
                if name == r"\begin" and env in _MATH_ENVS:
                    close = f"\\end{{{env}}}"
                    j = tex.find(close, k2)
                    if j >= 0:
                        out.append(render_math_or_source(tex[i:j + len(close)], macros, display=True, delim=("", "")))
                        i = j + len(close)
                        continue
                # other environments: layout only; skip their [options] and {arguments}
                while k2 < n and tex[k2] in "[{":
                    if tex[k2] == "{":
                        try:
                            _, k2 = _group(tex, k2)
                        except LatexError:
                            break
                    else:
                        close_b = tex.find("]", k2)
                        if close_b < 0:
                            break
                        k2 = close_b + 1
                i = k2
                continue
            if name in (r"\def", r"\newcommand", r"\renewcommand", r"\providecommand", r"\DeclareMathOperator"):
                # A definition prints nothing: skip the name, any #1/[n] parameters and the body.
                mm = re.compile(r"\*?\s*(?:\{\s*\\[A-Za-z]+\s*\}|\\(?:[A-Za-z]+|.))\s*(?:#\d|\[[^\]]{0,20}\])*\s*").match(tex, k)
                if mm and mm.end() < n and tex[mm.end()] == "{":
                    try:
                        _, k2 = _group(tex, mm.end(), _BODY_LIMIT)
                        i = k2
                        continue
                    except LatexError:
                        pass
            if name in _ACCENT and k < n and tex[k] in _ACCENT[name]:
                out.append(_ACCENT[name][tex[k]])
                i = k + 1
                continue
            if name in _LITERAL:
                out.append(_LITERAL[name] if name == r"\\" else html.escape(_LITERAL[name]))
                i = k
                continue
            if name in _DROP:
                i = k
                continue
            if name in _DROP_WITH_ARGS:
                try:
                    for _ in range(_DROP_WITH_ARGS[name]):
                        _, k = _arg(tex, k)
                except LatexError:
                    pass
                i = k
                continue
            if name in (r"\includesvg", r"\includegraphics"):
                if k < n and tex[k] == "[":
                    close_b = tex.find("]", k)
                    k = close_b + 1 if close_b >= 0 else k
                try:
                    path, k = _arg(tex, k)
                except LatexError:
                    path = ""
                out.append(f'<span class="fig-ref">[figure {html.escape(path)}]</span>')
                i = k
                continue
            if name in _TEXT_TAGS or name in (r"\textcolor", r"\href", r"\mbox", r"\text", r"\textsc", r"\textrm"):
                try:
                    if name == r"\textcolor":
                        colour, k = _arg(tex, k)
                        body, k = _arg(tex, k)
                        css = _COLOURS.get(colour.strip())
                        inner = render(body, macros, depth=depth + 1)
                        out.append(f'<span style="color:{css}">{inner}</span>' if css else inner)
                    elif name == r"\href":
                        # The URL is never written into the page (a javascript: link would be live).
                        _, k = _arg(tex, k)
                        body, k = _arg(tex, k)
                        out.append(render(body, macros, depth=depth + 1))
                    else:
                        body, k = _arg(tex, k)
                        tag = _TEXT_TAGS.get(name)
                        inner = render(body, macros, depth=depth + 1)
                        out.append(f"<{tag}>{inner}</{tag}>" if tag else inner)
                    i = k
                    continue
                except LatexError:
                    pass
            # Anything else (an unknown command, a text-mode macro of the notes): shown as written.
            out.append(html.escape(name))
            i = k
            continue
        if c in "{}":
            i += 1
            continue
        j = i
        while j < n and tex[j] not in "\\$%{}~":
            j += 1
        if j == i:  # '~'
            out.append("\u00a0")
            i += 1
            continue
        out.append(html.escape(tex[i:j]))
        i = j
    return "".join(out)
