"""Property-based fuzzing of the HTTP API against its own OpenAPI document (schemathesis 4.x).

The document served at ``/v1/openapi.json`` is loaded from the running service; for every
operation schemathesis generates requests, valid by the document (positive) and invalid
(negative), sends them with the admin token, and checks each response:

* ``not_a_server_error``: no 5xx, ever;
* ``status_code_conformance`` / ``content_type_conformance`` / ``response_headers_conformance`` /
  ``response_schema_conformance``: the answer is one the document describes;
* ``negative_data_rejection``: what the document calls invalid is refused with a 4xx;
* ``ignored_auth``: the route really refuses a request without the token.

``positive_data_acceptance`` is left out: the document cannot say everything the API checks
(ISO 6346 check digits, the time grammar, that a container id names a registered container),
so valid-looking data is rightly refused with 422 there. ``/v1/alerts/stream`` and the WebSocket
``/v1/stream`` are left out of the generation because a successful request never ends
(tests/integration/test_api_hardening.py and test_stream.py cover their refusals).

``fuzz()`` is what the CI test runs with a few examples per operation; run this file for the
larger figures: ``python bench/api_fuzz.py [--examples 200]`` starts its own broker and database
(``deploy/stack.sh infra`` in a temporary directory), the service in-process, and writes
bench/results/api_fuzz.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis import checks as st_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err

REPO = Path(__file__).resolve().parents[1]
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
)
SKIPPED_PATHS = ("/v1/alerts/stream", "/v1/stream")
MAX_FAILURES_KEPT = 20


@dataclass
class Figures:
    """What one run saw; ``failures`` keeps the first distinct failure reports for diagnosis."""

    operations: int = 0
    examples_per_operation_and_mode: int = 0
    requests: int = 0
    server_errors: int = 0
    nonconforming: int = 0
    transport_errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    per_operation: dict[str, int] = field(default_factory=dict)
    failing_checks: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    no_negative_cases: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def fuzz(base_url: str, token: str, *, max_examples: int, seed: int = 0) -> Figures:
    """Blocking: run it in a thread when the service shares this process's event loop."""
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{base_url}/v1/openapi.json", timeout=10)
    checks = [getattr(st_checks, name) for name in CHECKS]
    headers = {"Authorization": f"Bearer {token}"}
    figures = Figures(examples_per_operation_and_mode=max_examples)
    statuses: Counter[str] = Counter()
    failing: Counter[str] = Counter()
    per_operation: Counter[str] = Counter()
    seen_failures: set[str] = set()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise RuntimeError(f"the served document has an invalid operation: {result.err()}")
            operation = result.ok()
            if operation.path in SKIPPED_PATHS:
                continue
            figures.operations += 1
            label = f"{operation.method.upper()} {operation.path}"
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @hypothesis.seed(seed)
                @hypothesis.settings(
                    max_examples=max_examples,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @hypothesis.given(operation.as_strategy(generation_mode=mode))
                def one(case: Any) -> None:
                    figures.requests += 1
                    per_operation[f"{case.method.upper()} {case.operation.path}"] += 1
                    try:
                        response = case.call(base_url=base_url, session=session, headers=headers, timeout=10)
                    except requests.RequestException as exc:
                        figures.transport_errors += 1
                        _keep(figures, seen_failures, f"{case.method} {case.formatted_path}: {exc!r}")
                        return
                    statuses[str(response.status_code)] += 1
                    if response.status_code >= 500:
                        figures.server_errors += 1
                    try:
                        case.validate_response(response, checks=checks, headers=headers)
                    except FailureGroup as group:
                        figures.nonconforming += 1
                        for failure in group.exceptions:
                            failing[type(failure).__name__] += 1
                        _keep(figures, seen_failures, str(group))

                try:
                    one()
                except hypothesis.errors.Unsatisfiable:
                    # nothing to negate (an operation without parameters or body)
                    figures.no_negative_cases.append(label)
    figures.statuses = dict(sorted(statuses.items()))
    figures.failing_checks = dict(sorted(failing.items()))
    figures.per_operation = dict(per_operation)
    figures.duration_s = round(time.monotonic() - started, 1)
    return figures


def _keep(figures: Figures, seen: set[str], text: str) -> None:
    # a report's first line is only "Schemathesis found N distinct failure(s)": the failures' own titles
    # (lines "- ...") tell two reports apart, so a second kind of failure is kept too
    lines = text.strip().splitlines()
    title = " ".join(line for line in lines if line.startswith("- ")) or (lines[0] if lines else text)
    if title not in seen and len(figures.failures) < MAX_FAILURES_KEPT:
        seen.add(title)
        figures.failures.append(text[:3000])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fuzz_env(secrets: dict[str, str], mqtt_port: int) -> dict[str, str]:
    """Service settings for a fuzz run: the auth-failure limiter is off, since ``ignored_auth`` sends
    hundreds of token-less and wrong-token requests from one address on purpose."""
    return {
        **{k: v for k, v in secrets.items() if k.startswith("TRACKER_") and "PG_" not in k},
        "TRACKER_MQTT_HOST": "127.0.0.1",
        "TRACKER_MQTT_PORT": str(mqtt_port),
        "TRACKER_HTTP_PORT": "0",
        "TRACKER_MQTT_CLIENT_ID": f"api-fuzz-{os.getpid()}",
        "TRACKER_FENCE_FILES": str(REPO / "geofences/ports/santos.geojson"),
        "TRACKER_API_AUTH_FAIL_BURST": "0",
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from tracker.config import Settings
    from tracker.service import Service

    stack_dir = Path(tempfile.mkdtemp(prefix="port-tracker-fuzz-", dir="/tmp"))
    os.chmod(stack_dir, 0o755)  # noqa: S103 - the postgres and mosquitto users must reach it when run as root
    mqtt_port, pg_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_STACK_DIR=str(stack_dir), TRACKER_MQTT_PORT=str(mqtt_port), TRACKER_PG_PORT=str(pg_port))
    stack = ["bash", str(REPO / "deploy/stack.sh")]
    await asyncio.to_thread(subprocess.run, [*stack, "infra"], env=env, check=True, capture_output=True)
    try:
        text = await asyncio.to_thread((stack_dir / "secrets.env").read_text)
        secrets = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        # the schema is the owner role's to create (the service refuses an unmigrated one), as stack.sh up does
        owner = await asyncio.to_thread((stack_dir / "owner.env").read_text)
        owner_dsn = dict(line.split("=", 1) for line in owner.splitlines() if "=" in line)["TRACKER_DB_OWNER_DSN"]
        migrate_env = {**env, "TRACKER_DB_DSN": secrets["TRACKER_DB_DSN"], "TRACKER_DB_OWNER_DSN": owner_dsn}
        migrate = [sys.executable, "-m", "tracker", "migrate"]
        await asyncio.to_thread(subprocess.run, migrate, env=migrate_env, check=True, capture_output=True)
        service = Service(Settings.from_env(fuzz_env(secrets, mqtt_port)))
        await service.start()
        try:
            base = f"http://127.0.0.1:{service.http_port}"
            figures = await asyncio.to_thread(
                fuzz, base, secrets["TRACKER_ADMIN_TOKEN"], max_examples=args.examples, seed=args.seed
            )
        finally:
            await service.stop()
    finally:
        await asyncio.to_thread(subprocess.run, [*stack, "destroy", "--yes"], env=env, capture_output=True)
        shutil.rmtree(stack_dir, ignore_errors=True)
    return {
        "schemathesis": schemathesis.__version__,
        "python": platform.python_version(),
        "seed": args.seed,
        "checks": list(CHECKS),
        "skipped_paths": list(SKIPPED_PATHS),
        **asdict(figures),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=200, help="examples per operation and generation mode")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "bench/results/api_fuzz.json"))
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=1))
    for text in result["failures"]:
        print(text, file=sys.stderr)
    return 0 if result["server_errors"] == 0 and result["nonconforming"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
