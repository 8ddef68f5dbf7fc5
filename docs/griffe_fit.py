"""Griffe extension: objects documented at import time appear in the API reference.

- `fit_sim = fit_function(SimMethod)` is an assignment to static analysis; the function, its
  signature (one keyword per option) and its numpydoc docstring exist only at runtime
  (`implicit_cvx.train.driver.fit_function`). Each such module attribute is replaced by a
  function built from the runtime object.
- The estimators assemble their class docstrings (`__doc__ = ...`, with the `method_params` of
  every registered method) when their module is imported; they get the runtime docstring.
"""

from __future__ import annotations

import importlib
import inspect

import griffe

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _parameters(function) -> griffe.Parameters:
    return griffe.Parameters(*(
        griffe.Parameter(p.name, kind=_KINDS[p.kind],
                         default=None if p.default is inspect.Parameter.empty else repr(p.default))
        for p in inspect.signature(function).parameters.values()))


def _runtime(obj: griffe.Object):
    return getattr(importlib.import_module(obj.parent.path), obj.name)


class RuntimeDocstrings(griffe.Extension):
    """Document generated functions and assembled class docstrings from their runtime objects."""

    def on_class_members(self, *, node, cls, agent, **kwargs) -> None:
        if "__doc__" in cls.members:
            cls.docstring = griffe.Docstring(inspect.getdoc(_runtime(cls)), parent=cls, parser="numpy")
            del cls.members["__doc__"]

    def on_attribute_instance(self, *, node, attr, agent, **kwargs) -> None:
        if not str(attr.value or "").startswith("fit_function("):
            return
        runtime = _runtime(attr)
        function = griffe.Function(attr.name, parameters=_parameters(runtime), returns="FitResult",
                                   lineno=attr.lineno, endlineno=attr.endlineno)
        function.docstring = griffe.Docstring(inspect.getdoc(runtime), parent=function, parser="numpy")
        attr.parent.set_member(attr.name, function)
