"""The core stays pure: a newcomer can change a detector without meeting the network, the disk or the loop.

The rule, checked on the syntax tree of every module under ``tracker/core`` (imports inside functions
count as much as those at the top), so it holds whether or not a path is exercised:

* no import of a module that does I/O or concurrency: ``FORBIDDEN_MODULES`` (matched on the top-level
  package, so ``os.path`` is ``os`` and ``paho.mqtt.client`` is ``paho``);
* no import from ``tracker`` outside ``tracker.core`` (adapters, service, config, audit all do I/O);
* from the ``geofences`` library only its geometry: not the loaders that read files or package data
  (``FORBIDDEN_GEOFENCES_NAMES``);
* no call of the built-ins that reach files, the terminal or the import machinery (``FORBIDDEN_CALLS``),
  nor of ``.open()``/``.read_text()``-style methods (``FORBIDDEN_METHODS``) on anything.

Time and randomness are not covered here: the core takes ``now`` as an argument by convention, and
``uuid`` ids for alerts are accepted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "tracker" / "core"

FORBIDDEN_MODULES = frozenset(
    {
        "asyncio",
        "asyncpg",
        "aiohttp",
        "paho",
        "socket",
        "ssl",
        "select",
        "selectors",
        "subprocess",
        "os",
        "pathlib",
        "io",
        "shutil",
        "tempfile",
        "glob",
        "fileinput",
        "mmap",
        "urllib",
        "http",
        "requests",
        "threading",
        "multiprocessing",
        "concurrent",
        "importlib",
        "logging",
        "sqlite3",
        "pickle",
        "shelve",
    }
)
FORBIDDEN_GEOFENCES_NAMES = frozenset({"load_fence_set", "load_port", "fence"})
FORBIDDEN_CALLS = frozenset({"open", "input", "print", "exec", "eval", "compile", "__import__", "breakpoint"})
FORBIDDEN_METHODS = frozenset({"open", "read_text", "read_bytes", "write_text", "write_bytes", "unlink", "mkdir"})


def violations(source: str) -> list[str]:
    """Every breach of the rule in one module's source, as ``line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.extend(_module_problem(alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: inside tracker.core by construction
                continue
            module = node.module or ""
            found.extend(_module_problem(module, node.lineno))
            if module.split(".")[0] == "geofences":
                for alias in node.names:
                    if alias.name in FORBIDDEN_GEOFENCES_NAMES or module != "geofences":
                        found.append(f"{node.lineno}: from {module} import {alias.name} (file loading)")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{node.lineno}: call of {func.id}()")
            elif isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_METHODS:
                found.append(f"{node.lineno}: call of .{func.attr}()")
    return found


def _module_problem(module: str, line: int) -> list[str]:
    top = module.split(".")[0]
    if top in FORBIDDEN_MODULES:
        return [f"{line}: import of {module}"]
    if top == "tracker" and not (module == "tracker.core" or module.startswith("tracker.core.")):
        return [f"{line}: import of {module} (outside the core)"]
    return []


MODULES = sorted(CORE.glob("*.py"))


def test_the_core_has_modules() -> None:
    assert len(MODULES) > 10  # a moved directory must not make the check below pass on nothing


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import os.path",
        "from paho.mqtt import client",
        "def f():\n    import socket",
        "from tracker.adapters.store import Store",
        "from tracker import config",
        "from geofences import load_fence_set",
        "from geofences.fence import Fence",
        "def f(p):\n    return open(p).read()",
        "def f(p):\n    return p.read_text()",
        "import subprocess as sp",
    ],
)
def test_the_rule_catches(source: str) -> None:
    assert violations(source) != []


def test_the_rule_allows_the_core_s_own_imports() -> None:
    source = (
        "from __future__ import annotations\nimport math\nfrom datetime import datetime\n"
        "from geofences import FenceIndex, haversine_m\nfrom tracker.core.model import Ping\n"
        "from tracker.core import motion\nfrom . import state\n"
    )
    assert violations(source) == []
