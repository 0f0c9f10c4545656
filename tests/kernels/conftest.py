import numpy as np
import pytest
from hypothesis import settings

import tinymoon.kernels as K

settings.register_profile("kernels", deadline=None, max_examples=30, derandomize=True, database=None)
settings.load_profile("kernels")


@pytest.fixture(autouse=True)
def _no_forced_impl(monkeypatch):
    """Every test starts with no forced implementation (env var, set_impl) and leaves none behind."""
    monkeypatch.delenv("TINYMOON_KERNELS", raising=False)
    K.set_impl(None)
    yield
    K.set_impl(None)

