"""Which lines of a .tex count as content, and how claims cover them."""

from spec.coverage import content_lines, notes_coverage
from spec.registry import Claim, parse_lines

TEX = r"""\documentclass{article}
\begin{document}
\begin{multicols*}{3}
intro text % a comment
% only a comment
\section{CNN} $T$ is linear
\newpage

\subsection{Pooling}
\[
    \begin{bmatrix}
        1 & 2
    \end{bmatrix}
\]
\includesvg[width=\linewidth]{figures/x.svg}
\end{multicols*}
\end{document}
after the end
"""


def test_content_lines_skip_layout_comments_and_headings():
    c = content_lines(TEX)
    assert sorted(c) == [4, 6, 12]
    assert c[4][0] == "Front matter" and c[6][0] == "CNN" and c[12][0] == "CNN"


def test_coverage_counts_per_section(tmp_path):
    p = tmp_path / "n.tex"
    p.write_text(TEX)
    claim = Claim(id="cnn.x", section="CNN", statement="s", kind="definition", verdict="holds", lines="6-7")
    cov = notes_coverage(p, {"cnn.x": claim})
    assert (cov["notes_lines"], cov["notes_lines_covered"]) == (3, 1)
    by = {s["section"]: s for s in cov["sections"]}
    assert by["CNN"]["uncovered"] == [12] and by["Front matter"]["uncovered"] == [4]


def test_parse_lines():
    assert parse_lines("808-810, 874") == {808, 809, 810, 874}
    import pytest

    with pytest.raises(ValueError, match="lines"):
        parse_lines("12-")
    with pytest.raises(ValueError, match="backwards"):
        parse_lines("9-3")
