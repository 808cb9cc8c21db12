"""Which lines of a .tex count as content, and how claims cover them."""

import json

import pytest

from spec import coverage
from spec.coverage import NotesError, content_lines, line_hash, main, notes_coverage, read_notes
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

    with pytest.raises(ValueError, match="lines"):
        parse_lines("12-")
    with pytest.raises(ValueError, match="backwards"):
        parse_lines("9-3")


# --------------------------------------------------------------------------- the notes file as input



@pytest.mark.parametrize("content, message", [
    (b"caf\xe9 in latin-1\n", "not UTF-8"),
    (b"", "is empty"),
    (b"\n \t\n", "is empty"),
    (b"\\section{A}\x00\n", "NUL"),
])
def test_unusable_notes_raise_a_clear_error(tmp_path, content, message):
    p = tmp_path / "n.tex"
    p.write_bytes(content)
    with pytest.raises(NotesError, match=message):
        read_notes(p)
    with pytest.raises(NotesError, match="does not exist"):
        read_notes(tmp_path / "missing.tex")
    with pytest.raises(NotesError, match="not a file"):
        read_notes(tmp_path)


def test_odd_notes_warn(tmp_path):
    p = tmp_path / "n.tex"
    p.write_text("\\begin{document}\nno sections\n" + "x" * 1_000_001 + "\n\\end{document}\n")
    w = read_notes(p).warnings
    assert len(w) == 2 and "no \\section" in w[0] and "line 3, 1000001 characters" in w[1]
    ok = tmp_path / "ok.tex"
    ok.write_text(TEX)
    assert read_notes(ok).warnings == []


def test_line_hash_sees_text_and_position():
    lines = ["a", "b", "c"]
    assert line_hash(lines, {2}) == line_hash(["z", "b", "y"], {2})
    assert line_hash(lines, {2}) != line_hash(["a", "b!", "c"], {2})
    assert line_hash(lines, {2}) != line_hash(["b", "x", "c"], {1})  # same text, other line
    assert line_hash(lines, {5}) == line_hash(lines + [""], {5})  # missing lines hash as empty


@pytest.mark.parametrize("argv, message", [
    (["--lines", "12-"], "--lines: lines: expected"),
    (["--lines", "9-3"], "runs backwards"),
    (["--lines", "abc"], "--lines"),
])
def test_cli_bad_lines_exit_2_with_a_message(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_missing_or_bad_notes_exit_2_without_a_traceback(tmp_path, capsys):
    assert main(["--notes", str(tmp_path / "missing.tex")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    (tmp_path / "bin.tex").write_bytes(b"\xff\xfe")
    assert main(["--notes", str(tmp_path / "bin.tex")]) == 2 and "not UTF-8" in capsys.readouterr().err


def test_cli_update_hashes_records_every_claim(tmp_path, monkeypatch, capsys):
    notes = tmp_path / "n.tex"
    notes.write_text(TEX)
    target = tmp_path / "notes-lines.json"
    monkeypatch.setattr(coverage, "HASHES", target)
    assert main(["--notes", str(notes), "--update-hashes"]) == 0
    data = json.loads(target.read_text())
    from spec.registry import load_registry

    claims = load_registry(coverage.Path(coverage.__file__).parent / "claims")
    assert set(data["claims"]) == set(claims)
    cid = next(iter(claims))
    assert data["claims"][cid] == {"lines": claims[cid].lines,
                                   "sha256": line_hash(TEX.splitlines(), claims[cid].line_numbers())}
