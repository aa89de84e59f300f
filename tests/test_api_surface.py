"""The public API does not shrink by accident, and importing it stays cheap.

``api_surface.json`` lists, per public module, the names of its ``__all__`` at the time of
writing. A listed name that disappears from ``__all__`` or no longer imports fails here; new names
are welcome (add them to the JSON when they are meant to stay). Removing a name on purpose means
editing the JSON in the same change, which makes the break visible in review.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

_SURFACE = json.loads((Path(__file__).with_name("api_surface.json")).read_text(encoding="utf-8"))

#: Modules that ``import facelab`` (and reaching ``facelab.FaceAnalyzer``) must not load.
_HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "fastapi", "starlette", "uvicorn", "flask", "av")


def test_surface_file_lists_the_public_modules() -> None:
    assert {"facelab", "facelab.zoo", "facelab.recognition", "facelab.detection", "facelab.alignment"} <= set(_SURFACE)
    for module, names in _SURFACE.items():
        assert names == sorted(set(names)), f"{module}: keep the names sorted and unique"


@pytest.mark.parametrize("module_name", sorted(_SURFACE))
def test_listed_names_are_exported_and_importable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, (list, tuple)), f"{module_name} has no __all__"
    gone = [name for name in _SURFACE[module_name] if name not in exported]
    assert not gone, f"{module_name}.__all__ lost {gone} (update tests/api_surface.json if on purpose)"
    broken = []
    for name in _SURFACE[module_name]:
        try:
            if getattr(module, name) is None:
                broken.append(f"{name} is None")
        except (AttributeError, ImportError) as exc:
            broken.append(f"{name}: {exc!r}")
    assert not broken, f"{module_name}: names that do not import: {broken}"


def test_every_top_level_name_resolves() -> None:
    import facelab

    assert len(facelab.__all__) == len(set(facelab.__all__))
    for name in facelab.__all__:
        assert getattr(facelab, name) is not None, name
    assert set(facelab.__all__) <= set(dir(facelab))
    with pytest.raises(AttributeError, match="no_such_name"):
        facelab.no_such_name  # noqa: B018
    namespace: dict[str, object] = {}
    exec("from facelab import *", namespace)  # noqa: S102  the star import follows __all__
    assert set(facelab.__all__) <= set(namespace)


def test_lazy_names_are_the_real_objects() -> None:
    import facelab
    from facelab.pipeline import FaceAnalyzer
    from facelab.recognition.compare import compare

    assert facelab.FaceAnalyzer is FaceAnalyzer and facelab.compare is compare
    assert facelab.ModelCard is importlib.import_module("facelab.zoo").ModelCard


def test_import_stays_light() -> None:
    """A fresh interpreter: ``import facelab``, ``facelab.FaceAnalyzer`` and the CLI parser load nothing heavy."""
    code = (
        "import sys, json\n"
        "heavy = " + repr(_HEAVY) + "\n"
        "def loaded(): return sorted(m for m in heavy if m in sys.modules)\n"
        "import facelab\n"
        "after_import = loaded()\n"
        "facelab.FaceAnalyzer, facelab.load_image, facelab.get_card\n"
        "after_analyzer = loaded()\n"
        "import facelab.cli\n"
        "facelab.cli.build_parser()\n"
        "after_cli = loaded()\n"
        "print(json.dumps([after_import, after_analyzer, after_cli]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    after_import, after_analyzer, after_cli = json.loads(proc.stdout)
    assert after_import == [], f"import facelab loaded {after_import}"
    assert after_analyzer == [], f"facelab.FaceAnalyzer loaded {after_analyzer}"
    assert after_cli == [], f"building the CLI parser loaded {after_cli}"
