"""The python node's sandbox: a user's ``def main(data):`` run in a fresh, unprivileged, limited process.

Every job gets its own process, started for it and killed after it; nothing is reused. How:

* **Isolated** (the default, where it works): Debian's bubblewrap, started by root, makes new
  PID, network, IPC, UTS and cgroup namespaces (``--unshare-all`` minus the user namespace: a
  user namespace would keep the child root, mapped, where we want it to be a plain uid on the
  host). The file system is an empty tmpfs, read-only, with read-only binds of only what the
  interpreter loads (its prefix and the shared-library directory), a fresh ``/proc`` and
  ``/dev``, and a size-capped tmpfs at ``/work`` as the working directory. ``setpriv`` then
  drops to a uid of its own (one per job, from ``UID_BASE``), clears groups, capabilities and
  the bounding set; ``--die-with-parent`` and the PID namespace take every process down with it.
* **Unisolated** (only with ``METERBOOK_PYTHON_NODE_UNISOLATED=true``, for hosts where
  namespaces do not work): the same uid switch, limits, empty environment and empty temporary
  working directory, but the network and the host's world-readable files are reachable. Leftover
  processes are swept by a ``kill -9 -1`` run as the job's uid.

Inside, ``python_runner`` waits for the job on stdin, sets the rlimits (CPU time, address space,
file size, processes) and runs the code; the result comes back on its own pipe, length-framed,
and prints on another, capped. The parent enforces the wall clock and kills the process group.
A warm spare (an interpreter started in advance, waiting for its one job) hides start-up time.
"""

from __future__ import annotations

import atexit
import itertools
import json
import marshal
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import MeterbookError

UID_BASE = 1_970_000_000  # far above any account a distribution or an admin creates
UID_SPAN = 10_000  # a uid returns to use only after 10,000 later jobs: long after its processes are gone
SCRATCH_FILES = 4  # /work holds up to this many files of the largest allowed size
RUNNER = (Path(__file__).with_name("python_runner.py")).read_text()
KB = 1024


@dataclass(frozen=True)
class Limits:
    cpu_s: float = 10.0
    memory_mb: int = 256  # address space of each process
    file_mb: int = 16  # largest file the code may write
    processes: int = 32  # processes and threads of the job's uid
    wall_s: float = 30.0
    output_kb: int = 1024  # cap for the printed logs, and for the returned JSON


@dataclass(frozen=True)
class PythonResult:
    output: Any
    logs: str
    duration_ms: float


class PythonFailed(MeterbookError):
    """The code failed, ran out of a limit, or returned something that is not JSON. ``logs``: what it printed."""

    def __init__(self, message: str, *, kind: str, logs: str = ""):
        super().__init__(message)
        self.kind = kind
        self.logs = logs


class SandboxUnavailable(MeterbookError):
    pass


_uids = itertools.count()
_uid_lock = threading.Lock()


def _next_uid() -> int:
    with _uid_lock:
        return UID_BASE + next(_uids) % UID_SPAN


def _interpreter() -> tuple[str, str]:
    """The app's own interpreter (executable, prefix), bound read-only into the sandbox."""
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return exe, os.path.realpath(sys.base_prefix)


def _reachable_interpreter() -> str | None:
    """For unisolated mode: a python3 that a uid with no rights of its own can execute."""
    for candidate in (_interpreter()[0], "/usr/bin/python3", "/usr/local/bin/python3"):
        path = Path(os.path.realpath(candidate))
        if path.is_file() and all(p.stat().st_mode & 0o001 for p in [path, *path.parents]):
            return str(path)
    return None


def _bwrap_args(uid: int, scratch_mb: int) -> list[str]:
    exe, prefix = _interpreter()
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    libdirs = [d for d in (f"/usr/lib/{multiarch}" if multiarch else "", "/usr/lib64") if d and os.path.isdir(d)]
    if not libdirs:
        libdirs = ["/usr/lib"]
    binds = [prefix] if prefix != "/usr" else [exe, f"/usr/lib/python{sys.version_info[0]}.{sys.version_info[1]}"]
    args = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv"]
    for path in [*libdirs, *binds, "/usr/bin/setpriv"]:
        args += ["--ro-bind", path, path]
    args += ["--ro-bind-try", "/usr/share/zoneinfo", "/usr/share/zoneinfo"]
    for link in ("/lib", "/lib64"):
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
    # bwrap makes the parents of mount points 0700; the job's uid must be able to walk through them.
    parents = sorted({str(p) for path in [*libdirs, *binds, "/usr/bin/setpriv", "/usr/share/zoneinfo"]
                      for p in Path(path).parents if str(p) != "/"})
    for parent in parents:
        args += ["--chmod", "0755", parent]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(scratch_mb * KB * KB), "--tmpfs", "/work",
             "--chmod", "0777", "/work", "--chdir", "/work", "--remount-ro", "/dev", "--remount-ro", "/",
             "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
             "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
             "--bounding-set=-all", "--no-new-privs", "--", exe]
    return args


class _Job:
    """One started interpreter, waiting for its one job (or running it)."""

    def __init__(self, isolated: bool, scratch_mb: int):
        self.isolated, self.scratch_mb = isolated, scratch_mb
        self.uid = _next_uid()
        self.workdir: str | None = None
        job_r, self.job_w = os.pipe()
        self.result_r, result_w = os.pipe()
        self.log_r, log_w = os.pipe()
        try:
            if isolated:
                argv = [*_bwrap_args(self.uid, scratch_mb), "-I", "-S", "-c", RUNNER, str(result_w)]
                kwargs: dict = {"cwd": "/"}
            else:
                exe = _reachable_interpreter()
                if exe is None:
                    raise SandboxUnavailable("No Python interpreter here can be run by an unprivileged user.")
                self.workdir = tempfile.mkdtemp(prefix="meterbook-python-")
                os.chown(self.workdir, self.uid, self.uid)
                argv = [exe, "-I", "-S", "-c", RUNNER, str(result_w)]
                kwargs = {"cwd": self.workdir, "user": self.uid, "group": self.uid, "extra_groups": []}
            self.proc = subprocess.Popen(argv, stdin=job_r, stdout=log_w, stderr=log_w, pass_fds=(result_w,),
                                         env={}, start_new_session=True, close_fds=True, **kwargs)
        except BaseException:
            for fd in (self.job_w, self.result_r, self.log_r):
                os.close(fd)
            self._remove_workdir()
            raise
        finally:
            for fd in (job_r, result_w, log_w):
                os.close(fd)
        self.pidfd = os.pidfd_open(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, code: str, data: Any, limits: Limits) -> PythonResult:
        """``data`` must be plain JSON values (``json.loads`` output): marshal carries it to the child."""
        started = time.perf_counter()
        try:
            self._send(marshal.dumps({"code": code, "data": data, "limits": asdict(limits)}))
            logs, truncated, result, why = self._collect(limits, started)
        finally:
            self.destroy()
        duration_ms = (time.perf_counter() - started) * 1000
        text = logs.decode("utf-8", "replace") + (f"\n… output cut at {limits.output_kb} KB" if truncated else "")
        return _outcome(result, why, self.proc.returncode, text, limits, duration_ms)

    def _send(self, body: bytes) -> None:
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(self.job_w, view):]
        except BrokenPipeError:
            pass  # it died before reading its job; _collect sees it exit
        finally:
            os.close(self.job_w)
            self.job_w = -1

    def _collect(self, limits: Limits, started: float) -> tuple[bytes, bool, bytes | None, str]:
        cap = limits.output_kb * KB
        logs, truncated, result = bytearray(), False, bytearray()
        deadline = started + limits.wall_s
        watching = [self.log_r, self.result_r, self.pidfd]
        why = ""
        while not why:
            left = deadline - time.perf_counter()
            if left <= 0:
                why = "timeout"
                break
            ready, _, _ = select.select(watching, [], [], left)
            for fd in ready:
                if fd == self.pidfd:
                    why = "exited"
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    watching.remove(fd)
                elif fd == self.log_r:
                    keep = max(0, cap - len(logs))
                    logs += chunk[:keep]
                    truncated = truncated or len(chunk) > keep
                else:
                    result += chunk
                    if len(result) >= 8 and int.from_bytes(result[:8], "big") > cap:
                        why = "too_big"
                    elif len(result) >= 8 and len(result) >= 8 + int.from_bytes(result[:8], "big"):
                        why = "answered"
        # Whatever was written before the end is in the pipes already; take it without waiting.
        for fd, buf, limit in ((self.log_r, logs, cap), (self.result_r, result, cap + 8)):
            os.set_blocking(fd, False)
            try:
                while len(buf) < limit and (chunk := os.read(fd, 65536)):
                    buf += chunk[: limit - len(buf)]
            except BlockingIOError:
                pass
        size = int.from_bytes(result[:8], "big") if len(result) >= 8 else -1
        complete = why != "too_big" and 0 <= size <= cap and len(result) >= 8 + size
        return bytes(logs), truncated, bytes(result[8 : 8 + size]) if complete else None, why

    def destroy(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        if not self.isolated:
            # The code may have left processes in a session of their own; kill whatever runs as its uid.
            subprocess.run(["/bin/sh", "-c", "kill -9 -1"], user=self.uid, group=self.uid, extra_groups=[],
                           env={}, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        for name in ("job_w", "result_r", "log_r", "pidfd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        self._remove_workdir()

    def _remove_workdir(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _outcome(result: bytes | None, why: str, returncode: int, logs: str, limits: Limits, ms: float) -> PythonResult:
    def fail(kind: str, message: str) -> PythonFailed:
        return PythonFailed(message, kind=kind, logs=logs)

    if why == "timeout" and result is None:
        raise fail("timeout", f"The code ran longer than its {limits.wall_s:g} s time limit and was stopped.")
    if why == "too_big":
        raise fail("output", f"main() returned more than {limits.output_kb} KB of JSON; return less, or a summary.")
    if result is None:
        if returncode in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL):
            raise fail("killed", f"The code was stopped by a limit: {limits.cpu_s:g} s of CPU time or "
                                 f"{limits.memory_mb} MB of memory.")
        raise fail("no_result", "The code ended without returning from main() (it exited the process or "
                                f"closed the result channel; exit status {returncode}).")
    try:
        reply = json.loads(result)
        status = reply["status"]
    except (ValueError, KeyError, TypeError):
        raise fail("bad_output", "The code's result could not be read: it wrote over the result channel.") from None
    if status == "ok":
        return PythonResult(output=reply.get("output"), logs=logs, duration_ms=round(ms, 2))
    detail = str(reply.get("message", ""))[:4000]
    messages = {
        "syntax": ("The code has a syntax error: " + detail),
        "no_main": "The code must define a function main(data) that returns the node's output.",
        "cpu": f"The code used more than its {limits.cpu_s:g} s of CPU time and was stopped.",
        "memory": f"The code needed more than its {limits.memory_mb} MB of memory and was stopped.",
        "exit": f"The code called exit() ({detail}) instead of returning from main().",
        "exception": f"The code raised {detail}\n{reply.get('traceback', '')}".rstrip(),
        "bad_output": ("main() must return JSON (dicts, lists, strings, numbers, booleans or None); "
                       f"it returned {detail}"),
    }
    raise fail(status if status in messages else "bad_output", messages.get(status, "The code's result was not understood."))


_spare_lock = threading.Lock()
_spare: _Job | None = None
_probe: tuple[bool, str] | None = None
_requests: queue.SimpleQueue | None = None
_probe_lock = threading.Lock()


def _take(isolated: bool, scratch_mb: int, *, warm: bool = True) -> _Job:
    """The warm spare if it fits this job (else a fresh interpreter); a new spare starts warming meanwhile."""
    global _spare
    job = None
    if warm:
        with _spare_lock:
            if _spare is not None and (_spare.isolated, _spare.scratch_mb) == (isolated, scratch_mb) and _spare.alive():
                job, _spare = _spare, None
        _spawner().put((isolated, scratch_mb))
    return job or _Job(isolated, scratch_mb)


def _spawner() -> queue.SimpleQueue:
    """The one thread that starts spares. It lives as long as the process: bwrap's --die-with-parent
    (PR_SET_PDEATHSIG) fires when the *thread* that started it ends, which would kill a spare
    started by a short-lived thread."""
    global _requests
    with _spare_lock:
        if _requests is None:
            _requests = queue.SimpleQueue()
            threading.Thread(target=_refill_forever, args=(_requests,), name="python-node-spares", daemon=True).start()
        return _requests


def _refill_forever(requests: queue.SimpleQueue) -> None:
    global _spare
    while True:
        isolated, scratch_mb = requests.get()
        while not requests.empty():  # several jobs at once: one spare is enough
            isolated, scratch_mb = requests.get()
        with _spare_lock:
            if _spare is not None and (_spare.isolated, _spare.scratch_mb) == (isolated, scratch_mb) and _spare.alive():
                continue
        try:
            fresh = _Job(isolated, scratch_mb)
        except (OSError, MeterbookError):
            continue
        with _spare_lock:
            old, _spare = _spare, fresh
        if old is not None:
            old.destroy()


@atexit.register
def _stop_spare() -> None:
    global _spare
    with _spare_lock:
        old, _spare = _spare, None
    if old is not None:
        old.destroy()


def available() -> tuple[bool, str]:
    """Whether the isolated mode works on this host (tried once, for real), and if not, why."""
    global _probe
    with _probe_lock:
        if _probe is None:
            _probe = _try_isolated()
        return _probe


def _try_isolated() -> tuple[bool, str]:
    if sys.platform != "linux":
        return False, "the isolated mode needs Linux namespaces"
    if os.geteuid() != 0:
        return False, "Meterbook is not running as root, so it cannot switch the code to an unprivileged user"
    if shutil.which("bwrap") is None:
        return False, "bubblewrap (bwrap) is not installed"
    if not os.path.exists("/usr/bin/setpriv"):
        return False, "setpriv (util-linux) is not installed"
    try:
        result = _Job(True, 1).run("def main(data):\n    return data", "ok", Limits(wall_s=10))
    except (OSError, MeterbookError) as e:
        return False, f"bubblewrap could not start a sandbox here ({str(e).splitlines()[0][:300]})"
    if result.output != "ok":
        return False, f"bubblewrap started but the sandbox did not answer ({result.logs[:300]})"
    return True, "bubblewrap: no network, hidden file system, unprivileged uid"


def _mode() -> bool:
    """True: isolated; False: unisolated (allowed by an admin). Raises when the node is off here."""
    ok, why = available()
    if ok:
        return True
    from engine.config import get_settings

    if not get_settings().python_node_unisolated:
        raise SandboxUnavailable(
            f"The python node is off on this server: {why}. An admin can install bubblewrap "
            "(apt-get install bubblewrap) and run Meterbook as root so code runs without network and with a "
            "hidden file system, or knowingly allow it without that isolation with "
            "METERBOOK_PYTHON_NODE_UNISOLATED=true.")
    if os.geteuid() != 0 or _reachable_interpreter() is None:
        raise SandboxUnavailable(
            "The python node is off on this server: even unisolated it needs Meterbook to run as root (to switch "
            "the code to an unprivileged user) and a python3 that user can run.")
    return False


def run_python(code: str, data: Any, *, limits: Limits = Limits()) -> PythonResult:
    """Run ``code``'s ``main(data)`` in a fresh sandboxed process and return its JSON result."""
    return _run(code, data, limits, isolated=_mode())


def _run(code: str, data: Any, limits: Limits, *, isolated: bool, warm: bool = True) -> PythonResult:
    if not isinstance(code, str) or not code.strip():
        raise PythonFailed("Write the code first: a function main(data) that returns the node's output.", kind="input")
    if min(limits.cpu_s, limits.memory_mb, limits.file_mb, limits.processes, limits.wall_s, limits.output_kb) <= 0:
        raise PythonFailed("Every python node limit must be above zero.", kind="input")
    try:
        plain = json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as e:
        raise PythonFailed(f"The python node's input is not JSON: {e}", kind="input") from None
    job = _take(isolated, limits.file_mb * SCRATCH_FILES, warm=warm)
    return job.run(code, plain, limits)


TINY = "def main(data):\n    return {'n': data['n'] + 1}\n"


def time_sequential(n: int, *, warm: bool = True) -> float:
    """Seconds for ``n`` tiny python nodes run one after another (the workflows bench's python40)."""
    isolated = _mode()
    _run(TINY, {"n": 0}, Limits(), isolated=isolated, warm=warm)  # starts the spare, imports are cached
    started = time.perf_counter()
    for i in range(n):
        _run(TINY, {"n": i}, Limits(), isolated=isolated, warm=warm)
    return time.perf_counter() - started


def bench(n: int = 40) -> dict:
    """Per-run latency p50 cold and warm, and ``n`` in a row warm, for the workflows bench."""
    isolated = _mode()
    figures: dict[str, Any] = {"mode": "isolated" if isolated else "unisolated"}
    for warm in (False, True):
        times = []
        _run(TINY, {"n": 0}, Limits(), isolated=isolated, warm=warm)
        for i in range(n):
            t = time.perf_counter()
            _run(TINY, {"n": i}, Limits(), isolated=isolated, warm=warm)
            times.append((time.perf_counter() - t) * 1000)
        figures[f"{'warm' if warm else 'cold'}_p50_ms"] = round(sorted(times)[len(times) // 2], 2)
        figures[f"{'warm' if warm else 'cold'}_{n}_s"] = round(sum(times) / 1000, 3)
    return figures
