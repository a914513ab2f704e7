"""./dev on a machine where another apt run holds the lock: it waits instead of failing.

The script runs from a copy in a temporary directory, with a PATH on which python3 is
missing (so it must install packages) and apt-get is a stand-in that records its
arguments: nothing is installed and the repository's .venv is not touched."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_apt_get_waits_for_the_lock(tmp_path):
    shutil.copy(REPO / "dev", tmp_path / "dev")
    (tmp_path / "pyproject.toml").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for stub in ("apt-get", "sudo"):
        (bin_dir / stub).chmod(0o755)
    for tool in ("dirname", "id", "ls"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    done = subprocess.run([shutil.which("bash") or "/bin/bash", str(tmp_path / "dev"), "up"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0          # python3 is still missing after the stand-in
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and all(c.startswith("-o DPkg::Lock::Timeout=600 ")
                                   for c in calls), calls
    assert [c.split()[2] for c in calls] == ["update", "install"]
    assert "python3" in calls[1].split()
