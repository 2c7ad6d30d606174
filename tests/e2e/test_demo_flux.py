"""`conveyor demo --agent flux`: dev and qa on Flux v2's source- and kustomize-controller (their events
sent to Conveyor's events endpoint), prod on Conveyor's agent. CD waits for the statuses Flux's events
become: 1.1.0 is verified in dev and qa, 1.2.0 fails Flux's health check in dev and is rolled back.
Measured here: 1087 s (the controllers already built; building them adds about 12 minutes once)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(4800)]


def test_demo_with_flux_promotes_verifies_and_rolls_back() -> None:
    data = Path(tempfile.mkdtemp(prefix="cvy-fx-", dir="/tmp"))  # short: kubelet socket paths
    report = data.parent / f"{data.name}-report.json"
    out = Path("test-output")
    out.mkdir(exist_ok=True)
    try:
        with open(out / "demo-flux.log", "w") as log:
            # The base-image refresh is shown by the other demo test, with Conveyor's agent verifying signatures.
            p = subprocess.run([sys.executable, "-m", "conveyor", "demo", "--agent", "flux", "--no-base-refresh",
                                "--keep", "--data-dir", str(data), "--report", str(report)], stdout=log,
                               stderr=subprocess.STDOUT,
                               timeout=4500)
        result = json.loads(report.read_text())
        assert p.returncode == 0 and result["ok"], "conveyor demo --agent flux failed; see test-output/demo-flux.log"
        assert result["verified"] == {"dev": True, "qa": True, "prod": True} and result["rolled_back"]
        assert result["dev_after_rollback"].startswith("1.1.0")
        token = (data / "admin.token").read_text().strip()
        api = httpx.Client(base_url=result["url"], headers={"Authorization": f"Bearer {token}"}, timeout=30)
        clusters = {c["name"]: c["agent"] for c in api.get("/api/v1/clusters").json()}
        assert clusters == {"nonprod": "flux", "prod": "conveyor"}
        reports = api.get("/api/v1/clusters/nonprod/flux/reports").json()
        assert {r["name"] for r in reports if r["kind"] == "Kustomization"} >= {"gitops-dev", "gitops-qa"}
        dev = next(r for r in api.get("/api/v1/promotions", params={"env": "dev"}).json()
                   if r["version"].startswith("1.2.0") and not r["is_rollback"])
        detail = api.get(f"/api/v1/promotions/{dev['id']}").json()
        assert dev["state"] == "rolled_back" and "Flux failed" in (detail.get("failure_reason") or ""), detail
    finally:
        subprocess.run([sys.executable, "-m", "conveyor", "demo", "--stop", "--data-dir", str(data)],
                       capture_output=True, timeout=600)
        if (data / "logs").exists():
            shutil.copytree(data / "logs", out / "demo-flux-logs", dirs_exist_ok=True)
        shutil.rmtree(data, ignore_errors=True)
        report.unlink(missing_ok=True)
