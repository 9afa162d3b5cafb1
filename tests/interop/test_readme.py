"""The README's quick start works as written (against a test node instead of 127.0.0.1:9092)."""

import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, unique_topic

README = (REPO / "README.md").read_text()


def test_readme_python_quick_start(node):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "README has no python quick start"
    topic = unique_topic("orders")
    assert len(blocks) >= 2, "README lost its consumer-group example"
    # The group example runs after the quick start, in the same interpreter (it reuses
    # `bootstrap` and the records produced there).
    code = "\n".join(blocks[:2])
    code = code.replace("127.0.0.1:9092", node.bootstrap).replace('"orders"', repr(topic))
    code = code.replace('["orders"]', f"[{topic!r}]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 20, proc.stdout
    assert all("source" in line for line in lines[:10])
    # The group member was assigned all six partitions and read the same ten records.
    read_by_group = sorted(tuple(line.split()[:2]) for line in lines[10:])
    read_by_assign = sorted(tuple(line.split()[:2]) for line in lines[:10])
    assert read_by_group == read_by_assign, proc.stdout


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")
def test_readme_kcat_quick_start(node):
    commands = [line.strip() for line in README.splitlines() if "kcat -b" in line]
    assert len(commands) == 2, commands
    topic = unique_topic("greetings")
    out = ""
    for cmd in commands:
        cmd = cmd.replace("127.0.0.1:9092", node.bootstrap).replace("greetings", topic)
        proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        out += proc.stdout
    assert "k1 => hello" in out and "k2 => world" in out, out
