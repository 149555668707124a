"""Fixtures shared by the test modules; their helpers live in helpers.py (on sys.path here)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from helpers import write_data


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory):
    """Tiny learnable 8x8 images of 4 classes in a .pt file (sweeps and launchers)."""
    path = tmp_path_factory.mktemp("data") / "tiny.pt"
    write_data(path)
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    """Two easy classes (bright and dark 8x8 RGB images) x 16 examples in a .npz file."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 16)
    images = rng.integers(0, 100, size=(32, 8, 8, 3)) + 120 * labels[:, None, None, None]
    path = tmp_path_factory.mktemp("data") / "two.npz"
    np.savez(path, images=images.astype(np.uint8), labels=labels)
    return str(path)


@pytest.fixture()
def model_spec(tmp_path, monkeypatch) -> str:
    """``module:function`` of a user's model file (conv, BatchNorm, ReLU, pool, linear to 2
    classes), importable for this test only."""
    (tmp_path / "tiny_user_models.py").write_text(textwrap.dedent("""
        from torch import nn

        def tiny():
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tiny_user_models", None)
    return "tiny_user_models:tiny"
