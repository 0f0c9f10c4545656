import pytest

import tinymoon.kernels as K


@pytest.fixture(autouse=True)
def _no_forced_impl(monkeypatch):
    """Every test starts with no forced implementation (env var, set_impl) and leaves none behind."""
    monkeypatch.delenv("TINYMOON_KERNELS", raising=False)
    K.set_impl(None)
    yield
    K.set_impl(None)

