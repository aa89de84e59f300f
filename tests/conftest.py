import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _single_torch_thread():
    """One torch intra-op thread while the fixture lives (steady timings and results on a shared machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: per test; a module uses it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``
one_torch_thread = pytest.fixture(_single_torch_thread, name="one_torch_thread")
#: for a whole module, its module-scoped fixtures (e.g. a training run) included
one_torch_thread_per_module = pytest.fixture(_single_torch_thread, scope="module", name="one_torch_thread_per_module")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty facelab home for one test (downloads allowed), and an empty InsightFace root so that
    ``~/.insightface`` is never consulted. A module that needs one home for all its tests defines its
    own module-scoped ``home``."""
    monkeypatch.delenv("FACELAB_OFFLINE", raising=False)
    monkeypatch.setenv("FACELAB_HOME", str(tmp_path / "facelab_home"))
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "insightface_home"))
    return tmp_path / "facelab_home"
