"""The API reference's docstrings: numpydoc sections present and complete, Examples that run.

Every public object of the API reference (`implicit_cvx.__all__`, `implicit_cvx.robust.__all__`,
the public methods of ImplicitModel and of the estimators, the generated `fit_<name>` functions, `solve_rows`,
`solve_certified`, `load_dataset`, `partition`) has a numpydoc docstring: a one-line summary,
a Parameters section naming every parameter of its signature (classes: of the constructor; a
record dataclass may list its fields under Attributes instead), and an Examples section whose
doctests run here (ELLIPSIS | NORMALIZE_WHITESPACE, tiny data, printed values rounded).
Data constants (`robust.METHODS`) are not callables and carry no sections.
"""

from __future__ import annotations

import dataclasses
import doctest
import inspect
import re

import pytest

import implicit_cvx
from implicit_cvx import robust
from implicit_cvx.convex.rows import solve_rows
from implicit_cvx.convex.solvers import solve_certified
from implicit_cvx.data import load_dataset
from implicit_cvx.model import ImplicitModel
from implicit_cvx.partitions import partition
from implicit_cvx.train import adjoint, fenchel, gradient, sim

NEEDS_EXTRA: dict[str, str] = {}  # public names whose optional extra (torch) is not installed


def _public(module, name: str):
    """module.name, or None (recorded in NEEDS_EXTRA) when it needs an extra not installed here."""
    try:
        return getattr(module, name)
    except ImportError as exc:  # e.g. from_torch / to_torch without PyTorch
        NEEDS_EXTRA[f"{module.__name__}.{name}"] = str(exc)
        return None


def public_objects() -> dict[str, object]:
    """Qualified name → object, for every object the API reference must document fully."""
    objects = {f"implicit_cvx.{n}": _public(implicit_cvx, n) for n in implicit_cvx.__all__}
    objects.update({f"implicit_cvx.robust.{n}": getattr(robust, n) for n in robust.__all__})
    objects.update({f"ImplicitModel.{n}": getattr(ImplicitModel, n) for n, v in vars(ImplicitModel).items()
                    if not n.startswith("_") and callable(getattr(ImplicitModel, n))})
    for estimator in (implicit_cvx.ImplicitClassifier, implicit_cvx.ImplicitRegressor):
        objects.update({f"{estimator.__name__}.{n}": getattr(estimator, n)
                        for n in ("fit", "predict", "predict_proba", "decision_function")
                        if n in vars(estimator)})
    for module in (sim, adjoint, fenchel, gradient):  # generated in train.driver, one per method
        fit = getattr(module, f"fit_{module.__name__.rsplit('.', 1)[1]}")
        objects[f"{module.__name__}.{fit.__name__}"] = fit
    for function in (solve_rows, solve_certified, load_dataset, partition):
        objects[f"{function.__module__}.{function.__name__}"] = function
    return {name: obj for name, obj in objects.items() if callable(obj)}


OBJECTS = public_objects()


@pytest.mark.parametrize("name", sorted(NEEDS_EXTRA))
def test_objects_needing_a_missing_extra_are_skipped(name):
    pytest.skip(f"{name}: {NEEDS_EXTRA[name]}")
SECTION = re.compile(r"^(\w[\w ]*)\n-{3,}$", re.MULTILINE)
ITEM = re.compile(r"^(\*{0,2}\w[\w, *]*?)(?: : .*)?$")


def sections(doc: str) -> dict[str, str]:
    """numpydoc sections of a docstring: title → body (the text before the first title is
    under "")."""
    titles = list(SECTION.finditer(doc))
    out = {"": doc[: titles[0].start()] if titles else doc}
    for k, title in enumerate(titles):
        end = titles[k + 1].start() if k + 1 < len(titles) else len(doc)
        out[title.group(1)] = doc[title.end():end]
    return out


def documented_names(body: str) -> set[str]:
    """Names of a Parameters / Attributes section: its unindented lines, `a, b : type`."""
    names = set()
    for line in body.splitlines():
        if line and not line[0].isspace():
            found = ITEM.match(line)
            if found:
                names.update(n.strip().lstrip("*") for n in found.group(1).split(","))
    return names


def signature_names(obj) -> list[str]:
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.name not in ("self", "cls") and not p.name.startswith("_")]


def test_the_sections_parser_reads_numpydoc():
    doc = "Summary.\n\nParameters\n----------\nU, Y : ndarray\n    rows.\n**options\n    more.\n\nReturns\n-------\nint\n"
    found = sections(doc)
    assert set(found) == {"", "Parameters", "Returns"}
    assert documented_names(found["Parameters"]) == {"U", "Y", "options"}


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_docstring_has_summary_parameters_and_examples(name):
    obj = OBJECTS[name]
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    found = sections(doc)
    summary = found[""].strip().split("\n\n")[0]
    assert summary and "\n" not in summary and summary.endswith((".", ")")), \
        f"{name}: no one-line summary"
    assert "Examples" in found and ">>> " in found["Examples"], f"{name}: no Examples section"
    wanted = signature_names(obj)
    if not wanted:
        return
    listed = documented_names(found.get("Parameters", ""))
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and "Parameters" not in found:
        listed = documented_names(found.get("Attributes", ""))
    missing = [p for p in wanted if p not in listed]
    assert not missing, f"{name}: parameters not documented: {missing}"
    if not inspect.isclass(obj):
        returns_none = inspect.signature(obj).return_annotation in (None, "None")
        assert "Returns" in found or "Yields" in found or returns_none, f"{name}: no Returns section"


def _examples(name: str, obj) -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(recurse=False)  # methods are listed on their own
    module = inspect.getmodule(obj)
    tests = finder.find(obj, name, module=module, globs={})
    return [t for t in tests if t.examples]


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_examples_run(name):
    tests = _examples(name, OBJECTS[name])
    assert tests, f"{name}: no doctest examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
