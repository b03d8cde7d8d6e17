"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from nubes.images.tiny import TinyImage, build_tiny, default_cache_dir


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> TinyImage:
    """The tiny test guest, built once per session (the .deb cache persists across runs)."""
    return build_tiny(tmp_path_factory.mktemp("tiny"), cache_dir=default_cache_dir())
