"""Every function and class hmix exports, every public method of the fitted models, and every
plot and dataset function has a docstring with an example (run by pytest's doctest collection).

Properties are documented as attributes, without examples of their own; the engine objects'
methods (GLMMObjective, Family, Design, OptSummary) are covered by their class examples.
"""

from __future__ import annotations

import inspect

import hmix

MODEL_CLASSES = (hmix.MixedModel, hmix.LinearMixedModel, hmix.GeneralizedLinearMixedModel)


def _public_api() -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for name in hmix.__all__:
        obj = getattr(hmix, name)
        if inspect.ismodule(obj) or name.startswith("__"):
            continue
        if inspect.isclass(obj) and issubclass(obj, (Exception, Warning)):
            continue
        out.append((name, obj))
    for cls in MODEL_CLASSES:
        for name, member in vars(cls).items():
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            if "NotImplementedError" in inspect.getsource(member):
                continue  # the base class's placeholder; the subclasses' versions carry examples
            out.append((f"{cls.__name__}.{name}", member))
    for module in (hmix.plot, hmix.datasets):
        for name in module.__all__:
            out.append((f"{module.__name__}.{name}", getattr(module, name)))
    return out


def test_every_public_function_has_an_example() -> None:
    missing = [name for name, obj in _public_api() if ">>>" not in (inspect.getdoc(obj) or "")]
    assert not missing, f"no example in the docstring of: {', '.join(missing)}"
