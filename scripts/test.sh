#!/usr/bin/env bash
# The project's test command: installs what is missing (apt packages, .venv), then runs
# the linters, the type checker, a dependency audit and the whole test suite (integration
# tests start their own broker and database through deploy/stack.sh). Extra arguments go to pytest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash deploy/stack.sh install

echo "== ruff check"
.venv/bin/ruff check .
echo "== ruff format"
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pip-audit"
# fails on a known vulnerability in the venv; an unreachable advisory service is reported, not fatal
.venv/bin/python scripts/audit_deps.py
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
