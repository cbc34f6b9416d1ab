"""Run a Python script under torchrun (several processes) or alone, with this process's import path, and return
its standard output (asserting it succeeded)."""

from __future__ import annotations

import os
import subprocess
import sys


def torchrun(args: list[str], processes: int = 2) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                             "--standalone", *args], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def single(args: list[str]) -> str:
    result = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
