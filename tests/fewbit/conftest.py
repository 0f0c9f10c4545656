import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every few-bit test gets its own empty table cache; nothing touches ~/.cache."""
    monkeypatch.setenv("TINYMOON_CACHE_DIR", str(tmp_path / "cache"))
    yield tmp_path / "cache" / "fewbit"
