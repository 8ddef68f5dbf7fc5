"""Rerun every example and store what it prints, for the tutorial pages.

Each example runs twice: in its default mode (its output goes to
docs/tutorials/output/<name>.txt, its figure to docs/tutorials/img/) and with --quick (output to
<name>.quick.txt; figures to a scratch directory). The pages include these files; the tests rerun
the quick mode and compare what it prints with <name>.quick.txt.

With --pages, it instead reruns the ```python blocks of the given Markdown pages (in one namespace
per page, in a scratch directory) and rewrites the ```text block that follows each one with what
it printed; text blocks that contain `...` (hand-written patterns) are left alone.

    python examples/regenerate_outputs.py [NAME ...]
    python examples/regenerate_outputs.py --pages README.md docs/guide/model.md
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "tutorials" / "output"
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def run(script: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{script.name} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def main(names: list[str]) -> None:
    scripts = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != Path(__file__).name)
    for script in scripts:
        if names and script.stem not in names:
            continue
        (OUTPUT / f"{script.stem}.txt").write_text(run(script))
        with tempfile.TemporaryDirectory() as scratch:
            (OUTPUT / f"{script.stem}.quick.txt").write_text(run(script, "--quick", "--out", scratch))
        print(f"{script.name}: outputs written")


def refresh_page(page: Path) -> None:
    """Rewrite the ```text block after each ```python block of `page` with what the block prints."""
    lines = page.read_text().splitlines(keepends=True)
    namespace, out, i, last_output = {"__name__": "__docs__"}, [], 0, None
    while i < len(lines):
        opening = re.match(r"^(`{3,})\s*([\w+-]*)", lines[i])
        if not opening:
            out.append(lines[i])
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2).lower()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence))
        body = "".join(lines[i + 1:end])
        if lang == "text" and last_output is not None and "..." not in body:
            out += [lines[i], last_output if last_output.endswith("\n") else last_output + "\n", lines[end]]
        else:
            out += lines[i:end + 1]
        last_output = None
        if lang == "python" and not body.lstrip().startswith(("# not run by the tests:", "--8<--")):
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(body, f"{page.name}:{i + 2}", "exec"), namespace)  # noqa: S102
            last_output = printed.getvalue()
        i = end + 1
    page.write_text("".join(out))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pages"]:
        pages = [Path(p).resolve() for p in sys.argv[2:]]
        os.environ.setdefault("MPLBACKEND", "Agg")
        with tempfile.TemporaryDirectory() as scratch:
            os.chdir(scratch)
            for page in pages:
                refresh_page(page)
                print(f"{page.name}: outputs refreshed")
    else:
        main(sys.argv[1:])
