"""Run the ``Example:`` sections of facelab's docstrings as tests (modules without examples are not listed)."""

import doctest
import importlib
import pkgutil

import pytest

import facelab

_FINDER = doctest.DocTestFinder(exclude_empty=True)


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(facelab.__path__, "facelab."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if any(not ex.options.get(doctest.SKIP) for test in _FINDER.find(module, info.name) for ex in test.examples):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules_with_examples())
def test_module_doctests(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _FINDER.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"
