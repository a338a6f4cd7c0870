"""Two Ray nodes on this machine: a task placed on the other node, then that node lost;
the job restarts from its checkpoint on the node left and commits the failure-free
output. The cluster runs in a process of its own (``ray_two_nodes.py``), apart from the
session's Ray instance."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ray_two_nodes.py")


def test_a_task_placed_on_a_node_then_that_node_lost_keeps_the_output(tmp_path):
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "chk")],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["spread_over"] == 2  # one worker on each node
    assert report["placed"] == "done" and report["placed_on_second"]
    assert report["restarts"] >= 1
    assert report["same_output"] and report["rows"] > 1000
