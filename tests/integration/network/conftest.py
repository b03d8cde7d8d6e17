"""The lab fixture: a fresh set of namespaces per test, removed whatever happens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.network.lab import Lab, missing


@pytest.fixture
def lab() -> Iterator[Lab]:
    why = missing()
    if why:
        pytest.skip(why)
    made = Lab()
    try:
        yield made
    finally:
        made.close()
