"""benchmarks/scale.py runs end to end on a handful of nodes (the harness, not its figures)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.broker
@pytest.mark.slow
def test_scale_harness_with_real_agents_and_light_nodes():
    require_tool("mosquitto")
    out = subprocess.run([sys.executable, "benchmarks/scale.py", "--sizes", "4", "--light-sizes", "4",
                          "--min-lead", "6", "--per-process", "2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=280)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "N=4  real agents" in text and "N=4  light protocol nodes" in text
    assert len(re.findall(r"schedule fan-out, commit → ack: p50 \d+ ms, p99 \d+ ms, max \d+ ms, missing 0", text)) == 2
    assert len(re.findall(r"plays: 4/4 finished; \d+ events .* \(events lost\): 0", text)) == 2
    assert len(re.findall(r"bare paho publish → ack: p50 \d+ ms, p99 \d+ ms, missing 0", text)) == 2
    assert len(re.findall(r"station: CPU \d+ % of a core, RSS \d+ MB", text)) == 2


def test_per_process_limit_is_refused():
    out = subprocess.run([sys.executable, "benchmarks/scale.py", "--per-process", "250"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "1024" in out.stderr
