"""`mpsl run --netns topologies/two_hop.yaml` runs end to end: every node in a namespace of its
own at a 10.213.X.Y address, links shaped by the kernel, the same weights as in the process,
and nothing of the network left after the run or after SIGTERM. Skipped, with the probe's
one-line reason, where namespaces or tc are not allowed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpsl.cli import main
from nodes.netns import NETNS_DIR, probe, sh

ROOT = Path(__file__).resolve().parents[2]
TWO_HOP = str(ROOT / "topologies" / "two_hop.yaml")
SMALL = ["--set", "training.epochs=1", "--set", "dataset.samples_per_owner=64",
         "--set", "dataset.test_samples=64"]
SLOW = os.environ.get("MPSL_SLOW") == "1"
pytestmark = pytest.mark.skipif(not probe().allowed, reason=str(probe().reason))


def left_of(tag: str) -> list[str]:
    """The namespaces and links of run `tag` that still exist."""
    spaces = [p.name for p in NETNS_DIR.glob(f"mpsl-{tag}-*")] if NETNS_DIR.is_dir() else []
    links = [ln for ln in sh(["ip", "-o", "link", "show"]).splitlines() if f"mpsl{tag}" in ln]
    return spaces + links


def test_two_hop_runs_end_to_end_in_namespaces(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["run", TWO_HOP, "--netns", "--quiet", "--format", "json", "--out", str(out),
                 *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert len(data["epochs"]) == 1 and data["epochs"][0]["test_accuracy"] > 0.1
    assert data["links"]["owner0->server"]["bytes"] > 0
    assert "netns: 6 namespaces" in captured.err
    record = json.loads((out / "netns.json").read_text())
    host = record["host"].rsplit(".", 1)[0]
    for name, ip in record["addresses"].items():
        assert ip.startswith(host + ".")
        log = (out / "logs" / f"{name}.log").read_text()
        assert f"listening at tcp://{ip}:" in log, log[-500:]
    assert any(" tbf rate 10455801bit " in c for c in record["commands"])  # 10 Mbps uplinks
    assert left_of(record["tag"]) == []


@pytest.mark.skipif(not SLOW, reason="slow (15-20 s, a cold `mpsl run`): MPSL_SLOW=1")
def test_sigterm_removes_the_network(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mpsl.cli", "run", TWO_HOP, "--netns",
                             "--quiet", "--out", str(out), *SMALL], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "netns.json").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no network within 60 s"
            time.sleep(0.05)
        tag = json.loads((out / "netns.json").read_text())["tag"]
        assert left_of(tag) != []
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert left_of(tag) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
