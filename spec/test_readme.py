"""Every ```python block of README.md runs, so the README's examples never rot.

Each block runs on its own, in a fresh namespace, in an empty temporary working directory, with
torch seeded and a time limit; a failure names the block's line in README.md (the traceback's line
numbers are README.md's own). A block opened with ```python no-run is shown to readers but not run
(for code that needs a GPU, a download or a long time); say why next to it."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIME_LIMIT_S = 60  # a README example takes seconds; this only stops one that hangs
_OPEN = re.compile(r"^```python(?:[ \t]+(?P<info>.*?))?[ \t]*$")
_CLOSE = re.compile(r"^```[ \t]*$")


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """[(line of the block's first code line, code, runs)] for every ```python fence."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        i += 1
        if not m:
            continue
        start, body = i + 1, []
        while i < len(lines) and not _CLOSE.match(lines[i]):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"README.md:{start - 1}: ```python block is never closed")
        i += 1
        out.append((start, "\n".join(body) + "\n", "no-run" not in (m.group("info") or "").split()))
    return out


def run_block(code: str, line: int, filename: str = "README.md") -> dict:
    """Execute one block in a fresh namespace; line numbers in a traceback are the file's own."""
    import torch

    torch.manual_seed(0)
    compiled = compile("\n" * (line - 1) + code, filename, "exec")
    namespace = {"__name__": "__readme__"}
    timed = threading.current_thread() is threading.main_thread()
    if timed:
        def stop(signum, frame):
            raise TimeoutError(f"{filename}:{line}: the block ran past {TIME_LIMIT_S} s")
        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    try:
        exec(compiled, namespace)
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return namespace


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


@pytest.mark.parametrize("line, code", [(ln, c) for ln, c, runs in BLOCKS if runs],
                         ids=[f"README.md:{ln}" for ln, _, runs in BLOCKS if runs])
def test_readme_block_runs(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        run_block(code, line)
    except Exception as e:
        pytest.fail(f"README.md:{line}: the ```python block starting here fails: {type(e).__name__}: {e}")


def test_blocks_are_found_with_their_lines_and_no_run_ones_are_skipped(tmp_path, monkeypatch):
    text = "# t\n```bash\nls\n```\n```python\nx = 1\ny = x + 1\n```\ntext\n```python no-run\nboom()\n```\n"
    assert python_blocks(text) == [(6, "x = 1\ny = x + 1\n", True), (11, "boom()\n", False)]
    with pytest.raises(ValueError, match="README.md:2: ```python block is never closed"):
        python_blocks("a\n```python\nx = 1\n")
    monkeypatch.chdir(tmp_path)
    assert run_block("x = 1\ny = x + 1\n", 6)["y"] == 2
    with pytest.raises(ZeroDivisionError) as e:  # the traceback points at the README's own line
        run_block("a = 1\nb = a / 0\n", 40)
    assert e.traceback[-1].lineno + 1 == 41 and str(e.traceback[-1].path) == "README.md"


def test_the_library_section_shows_the_six_tasks():
    text = README.read_text(encoding="utf-8")
    start = text.index("## impl/ as a library")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    first = text[:start].count("\n") + 1
    runnable = [code for line, code, runs in BLOCKS if runs and first <= line < first + section.count("\n")]
    modules = {m for code in runnable for m in re.findall(r"^from impl import (\w+)", code, re.M)}
    assert modules >= {"diffusion", "flows", "nerf", "splatting", "rl", "body"} and len(runnable) >= 6
