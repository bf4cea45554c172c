"""Audit the installed packages (the venv this runs in) with pip-audit; tell three outcomes apart.

* exit 0, "audit: ok": packages were looked up and none has a known vulnerability;
* exit 0, "audit: UNAVAILABLE": the advisory service could not be used (no network, a proxy,
  a mirror without the advisory API, a 5xx); CI must not fail for that, but says so plainly;
* exit 1, "audit: VULNERABLE": pip-audit reported at least one known vulnerability;
* exit 2, "audit: ERROR": pip-audit failed in a way that is not the network (a bug to fix).

A vulnerability is only ever concluded from pip-audit's own JSON report, never guessed from its
messages, so an unreachable service can never pass for a clean audit or a failed one.

``python scripts/audit_deps.py [--osv-url URL] [pip-audit args...]``: the OSV service is used
(``--osv-url`` points it elsewhere, e.g. a mirror, or the test's local advisory server).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

OK, VULNERABLE, ERROR = 0, 1, 2
NETWORK_SIGNS = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|Could not connect|Max retries exceeded|ProxyError|SSLError"
    r"|Name or service not known|Temporary failure in name resolution|Connection refused|timed out"
    r"|ServiceError|HTTPError|network may be blocking"
)


def pip_audit_command(osv_url: str | None, output: Path, cache: Path, extra: list[str]) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pip_audit",
        "--skip-editable",
        "--progress-spinner",
        "off",
        "--format",
        "json",
        "--output",
        str(output),
        "--cache-dir",
        str(cache),
        "--timeout",
        "20",
        "--vulnerability-service",
        "osv",
    ]
    if osv_url:
        cmd += ["--osv-url", osv_url]
    return cmd + extra


def classify(returncode: int, report: dict[str, Any] | None, stderr: str) -> tuple[int, str]:
    """(exit code, one-line verdict) from what pip-audit left behind."""
    if report is not None:
        deps = report.get("dependencies", [])
        vulnerable = [d for d in deps if d.get("vulns")]
        if vulnerable:
            listed = ", ".join(
                f"{d['name']} {d.get('version', '?')} ({', '.join(v['id'] for v in d['vulns'])})" for d in vulnerable
            )
            return VULNERABLE, f"audit: VULNERABLE: {listed}"
        audited = [d for d in deps if "skip_reason" not in d]
        if returncode == 0 and audited:
            skipped = len(deps) - len(audited)
            return OK, f"audit: ok: {len(audited)} packages, no known vulnerability ({skipped} skipped)"
        if returncode == 0:
            return OK, f"audit: UNAVAILABLE: none of {len(deps)} packages could be looked up"
    elif returncode == 0:
        # pip-audit writes no JSON report when nothing was skipped and nothing found
        return OK, "audit: ok: no known vulnerability"
    if returncode != 0 and NETWORK_SIGNS.search(stderr):
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
        return OK, f"audit: UNAVAILABLE: advisory service unreachable ({last.strip()[:200]})"
    return ERROR, f"audit: ERROR: pip-audit exited {returncode}: {stderr.strip()[-500:]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--osv-url", default=None)
    args, extra = p.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="pip-audit-") as tmp:
        output = Path(tmp) / "report.json"
        cmd = pip_audit_command(args.osv_url, output, Path(tmp) / "cache", extra)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        report = None
        if output.exists() and output.stat().st_size:
            try:
                report = json.loads(output.read_text())
            except ValueError:
                report = None
    code, verdict = classify(proc.returncode, report, proc.stderr)
    print(verdict)
    return code


if __name__ == "__main__":
    sys.exit(main())
