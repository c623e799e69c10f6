"""Projections in tmp_path: empty, or having applied the story of `storyline`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storyline import story

from blackboard.projection import Projection


@pytest.fixture
def projection(tmp_path: Path) -> Iterator[Projection]:
    with Projection(tmp_path / "board.duckdb") as p:
        yield p


@pytest.fixture
def told(projection: Projection) -> Projection:
    """A projection that has applied the whole story."""
    projection.apply_many(story().events)
    return projection
