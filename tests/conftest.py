"""Fixtures shared by the test modules; their helpers live in helpers.py (on sys.path here)."""

from __future__ import annotations

import pytest
from helpers import write_data


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory):
    """Tiny learnable 8x8 images of 4 classes in a .pt file (sweeps and launchers)."""
    path = tmp_path_factory.mktemp("data") / "tiny.pt"
    write_data(path)
    return path
