"""`./dev up`'s demo and the README's walkthrough, as written, end to end (issue 20).

The demo runs as `./dev up` runs it (`firegrid demo`, its defaults, in a directory of its
own with `.venv` beside it, so `.local/` is that directory's), with a real private Mosquitto
and PostgreSQL of its own. The README's walkthrough block is read from README.md and run in
bash exactly as written, in that directory: `. .local/demo.env`, mosquitto_sub for the first
page, the fire scenario, psql. Then Ctrl-C, as a terminal sends it (to the demo's process
group), and a second `firegrid demo` on the same directory.

Every wait is on something happening (a line printed, a process ending), bounded so that a
broken demo fails instead of hanging."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import psycopg

from runtime.localsvc import make_state_dir, reachable

REPO = Path(__file__).resolve().parent.parent
FIREGRID = str(REPO / ".venv" / "bin" / "firegrid")


def readme_walkthrough(name: str = "README.md",
                       heading: str = "## Watch a simulated fire arrive") -> str:
    """The first ```sh block under the README's walkthrough heading."""
    text = (REPO / name).read_text(encoding="utf-8")
    section = text[text.index(heading):]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"{name}: no sh block in the walkthrough"
    return match.group(1)


def _commands(block: str) -> list[str]:
    return [re.sub(r"\s+#\s.*$", "", line).rstrip() for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_chinese_walkthrough_is_the_one_this_test_runs():
    # README.zh-CN.md mirrors the walkthrough with Chinese comments: the same commands, so
    # the test below covers both.
    chinese = readme_walkthrough("README.zh-CN.md", "## 第一个小时")
    assert _commands(chinese) == _commands(readme_walkthrough())
    first = (REPO / "README.zh-CN.md").read_text(encoding="utf-8").split("```")[1]
    assert _commands(first) == ["sh", "./dev up", "./dev test"]


def test_the_chinese_docs_links_lead_somewhere():
    pages = [REPO / "README.md", REPO / "README.zh-CN.md", *(REPO / "docs" / "zh").glob("*.md")]
    assert len(pages) >= 6
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text("utf-8")):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def _env() -> dict[str, str]:
    # The shell of a newcomer: nothing of this test run's settings or libpq variables.
    return {k: v for k, v in os.environ.items() if not k.startswith(("FIREGRID_", "PG"))}


class Demo:
    """`firegrid demo` in `cwd`, in its own process group as a terminal's foreground job
    is, its output (stdout and stderr) read line by line by a thread."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen([FIREGRID, "demo", *args], cwd=cwd, env=_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, marker: str, timeout: float = 120) -> str:
        """Every line up to the one holding `marker`; fails if the demo ends first."""
        while True:
            line = self._queue.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"demo ended before {marker!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if marker in line:
                return "\n".join(self.lines)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the whole process group, as the terminal does."""
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(120)
        while (line := self._queue.get(timeout=30)) is not None:
            self.lines.append(line)
        return code


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_readme_walkthrough_runs_as_written_against_the_demo():
    home = make_state_dir("fg-demo-")
    try:
        (home / ".venv").symlink_to(REPO / ".venv")
        demo = Demo(home)
        started = demo.until("Ctrl-C stops")
        # Private: its own broker and database, never the ones on the default ports.
        assert "private broker and database under .local/" in started
        state = json.loads((home / ".local" / "demo.json").read_text())
        fire = re.search(r"the README's fire \(seed 7\) burns (B\d+) in grid (\S+);", started)
        assert fire, started
        building, grid = fire.groups()
        worker = re.search(r"grid_worker (\S+) \(on duty now\): http://\S+#token=fg_", started)
        officer = re.search(r"community_duty (\S+) \(on duty now\): http://\S+#token=fg_",
                            started)
        assert worker and officer, started
        assert worker.group(1).startswith(f"{grid}-")

        walk = subprocess.run(["bash", "-e", "-c", readme_walkthrough()], cwd=home, env=_env(),
                              capture_output=True, text=True, timeout=180)
        assert walk.returncode == 0, walk.stdout + walk.stderr
        out = walk.stdout
        # The first page, on the topic, to somebody of the burning building's grid.
        page = re.search(r"^firegrid/v1/workers/(\S+)/pages (\{.*\})$", out, re.M)
        assert page, out
        assert page.group(1).startswith(f"{grid}-")
        assert json.loads(page.group(2))["building"]["id"] == building
        # The incident opened on that building; the events are in the database.
        assert re.search(rf"\|\s*{building}\s*\|", out), out
        assert re.search(r"\|\s*alarm\s*$", out, re.M), out
        # What simulate burnt is what the demo said it would.
        truth = [json.loads(line) for line in (home / "truth.jsonl").read_text().splitlines()]
        fires = [t for t in truth if t["kind"] == "incident" and t["what"] == "fire"]
        assert fires and fires[0]["building"] == building, fires[:1]
        with psycopg.connect(state["database_url"], autocommit=True) as conn:
            paged = {r[0] for r in conn.execute("SELECT worker_id FROM pages")}
        assert worker.group(1) in paged and officer.group(1) in paged, paged

        assert demo.interrupt() == 0, "\n".join(demo.lines)
        stopped = "\n".join(demo.lines)
        assert "lost broker" not in stopped and "Traceback" not in stopped, stopped
        assert not _alive(state["mosquitto_pid"])
        assert not reachable("127.0.0.1", state["pg_port"])

        # A second ./dev up on the same clone: the same street, ports and people, fresh links.
        again = Demo(home, "--devices", "0", "--seconds", "1")
        second = again.until("Ctrl-C stops")
        assert f"Mosquitto on port {state['mqtt_port']}" in second, second
        assert f"grid_worker {worker.group(1)} (on duty now)" in second, second
        assert again.proc.wait(120) == 0, "\n".join(again.lines)
    finally:
        for pid in _demo_pids(home):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def _demo_pids(home: Path) -> list[int]:
    """What a failed run may leave behind, in sessions of their own: the broker, by its pid
    in the state file, and PostgreSQL, by its postmaster.pid."""
    pids = []
    try:
        state = json.loads((home / ".local" / "demo.json").read_text())
        if isinstance(state.get("mosquitto_pid"), int) and _alive(state["mosquitto_pid"]):
            pids.append(state["mosquitto_pid"])
    except (OSError, ValueError):
        pass
    pidfile = home / ".local" / "postgres" / "data" / "postmaster.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().split()[0])
        if _alive(pid):
            pids.append(pid)
    return pids
