import copy

import pytest

from helpers import TINY


@pytest.fixture
def tiny_raw():
    """The tiny test experiment, before validation (a fresh copy per test)."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_cfg(tiny_raw):
    from distdyn.config import load_config

    return load_config(tiny_raw)
