"""Fixtures of the ganeval tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def tiny_inception(monkeypatch, tmp_path):
    """The Inception stand-in (TinyExtractor: 24-d features, taken as the 2048-d network's) for every loading of
    the network by ganeval, and a feature cache in the test's own folder (never the user's)."""
    import ganeval.features
    from toolkit_testing.extractors import TinyExtractor

    monkeypatch.setenv("GANEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ganeval.features, "load_inception",
                        lambda path=None, device=None, resize="tf", **kwargs: TinyExtractor(resize))
