"""Run the ``Example:`` sections of every facelab module's docstrings as tests."""

import doctest
import importlib
import pkgutil

import pytest

import facelab

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(facelab.__path__, "facelab.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"
