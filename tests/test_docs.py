"""The documentation is built and its examples run.

- `mkdocs build --strict` passes (broken links, anchors and API references fail it);
- every ```python block of README.md and docs/**/*.md runs, page by page in one namespace (like a
  notebook); a block whose first line is `# not run by the tests: <reason>` is skipped, and the
  reason is visible on the page. When a ```text block follows a python block, what the block
  printed must match it: numbers to the digits the page shows, the rest as text (`...` on the
  page stands for any text);
- every example script runs in its --quick mode, prints what its tutorial page shows as the
  quick output, and its page shows the script, its output and its quick output;
- no page, config or example refers to a document outside the repository.
The slowest parts are the examples (see OWN_PROCESS) and the build (about 5 s).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
OUTPUT = DOCS / "tutorials" / "output"
SKIP = "# not run by the tests:"
INCLUDE = "--8<--"
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "MPLBACKEND": "Agg"}


# ---- the comparator -----------------------------------------------------------------------------
NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"(\.\.\.)|({NUMBER})|(\s+)|([^\s.\d+-]+|.)")


def _pattern(expected: str) -> tuple[re.Pattern, list[str]]:
    """A regex for the page's text (numbers captured, whitespace runs flexible, `...` any text)
    and the numbers the page shows, in order."""
    parts, shown = [], []
    for dots, number, space, other in _TOKEN.findall(expected.strip()):
        if dots:
            parts.append(r".*?")
        elif number:
            parts.append(rf"({NUMBER})")
            shown.append(number)
        elif space:
            parts.append(r"\s+")
        else:
            parts.append(re.escape(other))
    return re.compile("".join(parts), re.DOTALL), shown


def _tolerance(shown: str) -> float:
    """Half a unit in the last digit the page shows (an integer must match exactly)."""
    mantissa, _, exponent = shown.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals) * (1 + 1e-9)


def mismatch(expected: str, actual: str) -> str | None:
    """None when `actual` prints what the page shows (numbers to the shown digits), else a reason."""
    pattern, shown = _pattern(expected)
    found = pattern.fullmatch(actual.strip())
    if found is None:
        return f"the text differs:\n--- page\n{expected.strip()}\n--- printed\n{actual.strip()}"
    for page, printed in zip(shown, found.groups(), strict=True):
        if abs(float(printed) - float(page)) > _tolerance(page):
            return f"page shows {page}, the code printed {printed}\n--- printed\n{actual.strip()}"
    return None


def test_comparator_reads_numbers_at_the_shown_precision():
    assert mismatch("accuracy 0.9778", "accuracy 0.977777") is None
    assert mismatch("accuracy 0.9778", "accuracy 0.9771") is not None
    assert mismatch("gap 1e-08", "gap 9.99305e-09") is None
    assert mismatch("gap 1e-08", "gap 2e-08") is not None
    assert mismatch("n = 64", "n = 65") is not None  # integers exactly
    assert mismatch("97.8%", "97.84%") is None
    assert mismatch("a   1\nb 2", "a 1\nb    2") is None  # alignment is free
    assert mismatch("certified 0.5", "falsified 0.5") is not None  # text must match
    assert mismatch("took ... s, got 3", "took 12.7 s, got 3") is None
    assert mismatch("x 1", "x 1 extra") is not None  # nothing unprinted may hide
    assert mismatch("64-32 net", "64-32 net") is None


# ---- code blocks of the pages ---------------------------------------------------------------------
def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, line) of every fenced block, in order (fences at the line start)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, lang, start = opening.group(1), opening.group(2).lower(), i + 1
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            i += 1
        blocks.append((lang, "\n".join(lines[start:i]), start))
        i += 1
    return blocks


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _runnable(code: str) -> bool:
    return not code.lstrip().startswith((SKIP, INCLUDE))


def pages_with_code() -> list[Path]:
    return [p for p in pages()
            if any(lang == "python" and _runnable(code) for lang, code, _ in fenced_blocks(p.read_text()))]


@pytest.mark.parametrize("page", pages_with_code(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run_and_print_what_the_page_shows(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    blocks = fenced_blocks(page.read_text())
    namespace = {"__name__": "__docs__"}
    for k, (lang, code, line) in enumerate(blocks):
        if lang != "python" or code.lstrip().startswith(INCLUDE):
            continue
        if code.lstrip().startswith(SKIP):
            reason = code.lstrip()[len(SKIP):].splitlines()[0].strip()
            assert reason, f"{page.name}:{line}: a skipped block must say why"
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102
        following = blocks[k + 1] if k + 1 < len(blocks) else None
        if following is not None and following[0] == "text":
            problem = mismatch(following[1], out.getvalue())
            assert problem is None, f"{page.relative_to(ROOT)}:{line}: {problem}"


# ---- the example scripts ----------------------------------------------------------------------------
def example_scripts() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.py") if p.name != "regenerate_outputs.py")


def _page_of(script: Path) -> Path:
    return DOCS / "tutorials" / f"{script.stem}.md"


# Examples run in this process (no import cost per script), except the one that starts worker
# processes of its own, which re-import the main module: it runs as a script. The slowest is
# dask_rows (a LocalCluster starts, about 10 s), then resume_run (two fits and a killed one).
OWN_PROCESS = {"dask_rows"}


def _run_example(script: Path, tmp_path: Path, capfd, monkeypatch) -> str:
    args = [str(script), "--quick", "--out", str(tmp_path)]
    if script.stem in OWN_PROCESS:
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=ENV, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", args)
    capfd.readouterr()
    runpy.run_path(str(script), run_name="__main__")
    return capfd.readouterr().out


@pytest.mark.parametrize("script", example_scripts(), ids=lambda p: p.name)
def test_example_quick_mode_prints_what_its_page_shows(script, tmp_path, capfd, monkeypatch):
    page = _page_of(script).read_text()
    for shown in (f"examples/{script.name}", f"docs/tutorials/output/{script.stem}.txt",
                  f"docs/tutorials/output/{script.stem}.quick.txt"):
        assert f'{INCLUDE} "{shown}"' in page, f"{_page_of(script).name} does not include {shown}"
    printed = _run_example(script, tmp_path, capfd, monkeypatch)
    expected = (OUTPUT / f"{script.stem}.quick.txt").read_text()
    problem = mismatch(expected, printed)
    assert problem is None, f"{script.name} --quick: {problem}"


def test_every_tutorial_page_has_its_script():
    pages_ = {p.stem for p in (DOCS / "tutorials").glob("*.md")} - {"index"}
    assert pages_ == {s.stem for s in example_scripts()}


# ---- the build and the references -----------------------------------------------------------------
def test_mkdocs_strict_build(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    assert (tmp_path / "site" / "api" / "robust.html").exists()
    # objects documented at import time (docs/griffe_fit.py): the generated fit functions and the
    # estimators' assembled docstrings are rendered with their parameters
    train = (tmp_path / "site" / "api" / "train.html").read_text()
    assert 'id="implicit_cvx.train.adjoint.fit_adjoint"' in train and "Seed of the one random" in train
    assert "method_params" in (tmp_path / "site" / "api" / "estimators.html").read_text()


OUTSIDE = re.compile(r"DESIGN|shared/|\.\./shared")


def test_nothing_refers_to_a_document_outside_the_repository():
    files = [ROOT / "README.md", ROOT / "mkdocs.yml", *DOCS.rglob("*.md"), *EXAMPLES.rglob("*.py"),
             *(ROOT / "configs").glob("*.yaml"), *OUTPUT.glob("*.txt")]
    hits = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}" for f in files
            for n, line in enumerate(f.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)
