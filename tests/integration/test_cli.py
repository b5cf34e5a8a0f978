"""The commands as users meet them: versions, and the operator's JSON logs."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

from conftest import Operator

BIN = pathlib.Path(sys.executable).parent


def test_both_commands_say_their_version():
    from peon import __version__
    for exe in ("peon", "peon-operator"):
        out = subprocess.run([str(BIN / exe), "--version"], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.split() == [exe, __version__]


def test_the_operator_logs_one_json_object_a_line(kubeconfig, crds, tmp_path):
    op = Operator(kubeconfig, tmp_path / "op.log", ["--log-format", "json", "--namespace",
                                                     "peon-json-logs", "-v"])
    try:
        time.sleep(4)
    finally:
        op.stop()
    lines = [l for l in op.log().splitlines() if l.strip()]
    assert lines, "the operator logged nothing"
    records = [json.loads(l) for l in lines]  # every line parses
    assert all("message" in r for r in records)
