"""``python -m pytest --device cuda`` runs the device-aware tests (the ``device`` fixture) on a GPU; the
default is the CPU. Tests that need a device other than the CPU are skipped where there is none."""
import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="torch device for the tests that take one: cpu (default) or cuda")


@pytest.fixture
def device(request) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda: no CUDA device here")
    return dev
