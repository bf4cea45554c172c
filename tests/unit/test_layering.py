"""The hub's seams, checked on the syntax tree so they cannot erode one convenient import at a time.

* The HTTP layer depends on ``tracker.adapters.ports``, never on the composition root: no import of
  ``tracker.service`` (or its ``service_*`` parts) from ``tracker/adapters/api.py`` or any ``api_*.py``
  route module beside it, not even one guarded by ``TYPE_CHECKING``.
* Every SQL statement is in ``tracker/adapters/store.py`` or an area's ``store_<area>.py`` beside it:
  elsewhere in ``tracker/`` no call of the
  asyncpg query methods (``fetch``, ``fetchrow``, ``fetchval``, ``execute``, ``executemany``,
  ``copy_*``) on anything, so a grant the service role lacks shows up in one module's review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRACKER = Path(__file__).resolve().parents[2] / "tracker"
QUERY_METHODS = frozenset({"fetch", "fetchrow", "fetchval", "execute", "executemany"})


def imported_modules(source: str) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def query_calls(source: str) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and (node.func.attr in QUERY_METHODS or node.func.attr.startswith("copy_"))
    ]


API_MODULES = sorted((TRACKER / "adapters").glob("api*.py"))


def _service_imports(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[:2] == ["tracker", "service"] or m.startswith("tracker.service_")}


def test_the_api_does_not_import_the_service() -> None:
    modules = imported_modules((TRACKER / "adapters" / "api.py").read_text(encoding="utf-8"))
    assert not _service_imports(modules)
    assert "tracker.adapters.ports" in modules


@pytest.mark.parametrize("path", API_MODULES, ids=lambda p: p.name)
def test_no_route_module_imports_the_service(path: Path) -> None:
    assert len(API_MODULES) > 10  # the glob found the route modules
    assert not _service_imports(imported_modules(path.read_text(encoding="utf-8")))


def test_the_service_check_sees_a_service_part() -> None:
    assert _service_imports({"tracker.service_commands", "tracker.service.Service"}) == {
        "tracker.service_commands",
        "tracker.service.Service",
    }
    assert not _service_imports({"tracker.adapters.ports", "tracker.servicing"})


def test_the_import_check_sees_a_guarded_import() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tracker.service import Service\n"
    assert "tracker.service" in imported_modules(source)


OUTSIDE_STORE = sorted(
    p
    for p in TRACKER.rglob("*.py")
    if not (p.parent == TRACKER / "adapters" and (p.name == "store.py" or p.name.startswith("store_")))
)


def test_there_are_modules_outside_the_store() -> None:
    assert len(OUTSIDE_STORE) > 20


@pytest.mark.parametrize("path", OUTSIDE_STORE, ids=lambda p: str(p.relative_to(TRACKER)))
def test_no_sql_outside_the_store(path: Path) -> None:
    assert query_calls(path.read_text(encoding="utf-8")) == []


def test_the_sql_check_sees_a_query() -> None:
    assert query_calls("async def f(store):\n    await store.pool.fetchrow('SELECT 1')\n") == [2]
