"""Fixtures of the fault scenarios: a broker and a database of their own, and the size to run at.

``FAULTS_FULL=1`` runs the sizes the project's issue names (50,000 pings, 10,000 poison messages
among 100,000 good ones, 60 s of overload); the default is the CI size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultStack
from tests.faults.scenarios import CI, FULL, Sizes

FAULTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(FAULTS_DIR):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    with FaultStack.started() as stack:
        yield stack


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return FULL if os.environ.get("FAULTS_FULL") == "1" else CI


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
