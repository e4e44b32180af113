"""The python node's sandbox: a user's ``def main(data):`` run in a fresh, unprivileged, limited process.

Every job gets its own process, started for it and killed after it; nothing is reused. How:

* **Isolated** (the default, where it works): Debian's bubblewrap, started by root, makes new
  PID, network, IPC, UTS and cgroup namespaces (``--unshare-all`` minus the user namespace: a
  user namespace would keep the child root, mapped, where we want it to be a plain uid on the
  host). The file system is an empty tmpfs, read-only, with read-only binds of only what the
  interpreter loads (its prefix and the shared-library directory), a fresh ``/proc`` and
  ``/dev``, and a size-capped tmpfs at ``/work`` as the working directory. ``setpriv`` then
  drops to a uid of its own (one per job, from ``UID_BASE``), clears groups, capabilities and
  the bounding set; a seccomp filter (``python_seccomp``) refuses new namespaces and the
  root-only kernel interfaces; ``--die-with-parent`` and the PID namespace take every process
  down with it.
* **Unisolated** (only with ``METERBOOK_PYTHON_NODE_UNISOLATED=true``, for hosts where
  namespaces do not work): the same uid switch, limits, empty environment and empty temporary
  working directory, but the network and the host's world-readable files are reachable. Leftover
  processes are swept by a ``kill -9 -1`` run as the job's uid, its files in /tmp removed.

Inside, ``python_runner`` waits for the job on stdin, sets the rlimits (CPU time, address space,
file size, processes) and runs the code; the result comes back on its own pipe, length-framed,
and prints on another, capped. The parent enforces the wall clock and kills the process group.
Warm spares (interpreters started in advance, each waiting for its one job) hide start-up time.
Failures raise ``PythonFailed`` with a message fit to show, ``kind`` (input, syntax, no_main,
exception, exit, bad_output, output, cpu, memory, killed, timeout, no_result) and ``logs``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import MeterbookError
from engine.workflows import python_process as process

SCRATCH_FILES = 4  # /work holds up to this many files of the largest allowed size
INPUT_SHARE = 4  # the input's JSON may take up to this fraction of the memory limit (it is held twice inside)


@dataclass(frozen=True)
class Limits:
    cpu_s: float = 10.0
    memory_mb: int = 256  # address space of each process
    file_mb: int = 16  # largest file the code may write
    processes: int = 32  # processes and threads of the job's uid
    wall_s: float = 30.0
    output_kb: int = 1024  # cap for the printed logs, and for the returned JSON


# However a workflow sets its limits, they stay within these: a limit that can be set to anything is no limit.
CEILINGS = {"cpu_s": 600, "memory_mb": 4096, "file_mb": 1024, "processes": 256, "wall_s": 3600, "output_kb": 16384}


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


_probe: tuple[bool, str] | None = None
_probe_lock = threading.Lock()


def _outcome(done: process.Finished, limits: Limits) -> PythonResult:
    result, why, returncode, logs = done.answer, done.why, done.returncode, done.logs

    def fail(kind: str, message: str) -> PythonFailed:
        return PythonFailed(message, kind=kind, logs=logs)

    if why == "timeout" and result is None:
        raise fail("timeout", f"The code ran longer than its {limits.wall_s:g} s time limit and was stopped.")
    if why == "too_big":
        raise fail("output", f"main() returned more than {limits.output_kb} KB of JSON; return less, or a summary.")
    if result is None:
        if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            raise fail("cpu", f"The code used more than its {limits.cpu_s:g} s of CPU time and was stopped.")
        if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
            raise fail("killed", "The code's process was killed: by the hard CPU time limit "
                                 f"({limits.cpu_s:g} s and one more), by running out of memory, or by the code itself.")
        raise fail("no_result", "The code ended without returning from main() (it exited the process or "
                                f"closed the result channel; exit status {returncode}).")
    try:
        reply = json.loads(result)
        status = reply["status"]
    except (ValueError, KeyError, TypeError):
        raise fail("bad_output", "The code's result could not be read: it wrote over the result channel.") from None
    if status == "ok":
        return PythonResult(output=reply.get("output"), logs=logs, duration_ms=round(done.ms, 2))
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
        result = _outcome(process.Sandbox(True, 1).run("def main(data):\n    return data", "ok",
                                                       asdict(Limits(wall_s=10))), Limits())
    except PythonFailed as e:  # bwrap's own complaint is in what the process printed
        said = (e.logs.strip() or str(e)).splitlines()[0][:300]
        return False, f"bubblewrap could not start a sandbox here ({said})"
    except OSError as e:
        return False, f"bubblewrap could not start a sandbox here ({e})"
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
    if os.geteuid() != 0 or process.reachable_interpreter() is None:
        raise SandboxUnavailable(
            "The python node is off on this server: even unisolated it needs Meterbook to run as root (to switch "
            "the code to an unprivileged user) and a python3 that user can run.")
    return False


def run_python(code: str, data: Any, *, limits: Limits = Limits()) -> PythonResult:
    """Run ``code``'s ``main(data)`` in a fresh sandboxed process and return its JSON result."""
    return _run(code, data, limits, isolated=_mode())


def warm_up(limits: Limits = Limits()) -> None:
    """Start the spares now (e.g. when a run worker starts), so the first python node does not wait for them."""
    ok, _ = available()
    if ok:
        process.prepare(True, limits.file_mb * SCRATCH_FILES)


def _run(code: str, data: Any, limits: Limits, *, isolated: bool, warm: bool = True) -> PythonResult:
    if not isinstance(code, str) or not code.strip():
        raise PythonFailed("Write the code first: a function main(data) that returns the node's output.", kind="input")
    values = asdict(limits)
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= CEILINGS[k] for k, v in values.items()):
        allowed = ", ".join(f"{k} ≤ {v:g}" for k, v in CEILINGS.items())
        raise PythonFailed(f"Each python node limit must be a number above zero and at most its ceiling ({allowed}); "
                           f"got {values}.", kind="input")
    try:
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise PythonFailed(f"The python node's input is not JSON: {e}", kind="input") from None
    if len(text) > limits.memory_mb * 1024 * 1024 // INPUT_SHARE:
        raise PythonFailed(f"The python node's input is {len(text) / 1e6:.1f} MB of JSON; with {limits.memory_mb} MB "
                           f"of memory it may be at most {limits.memory_mb // INPUT_SHARE} MB. Pass less, or a "
                           "reference to it.", kind="input")
    plain = json.loads(text)
    sandbox = process.take(isolated, limits.file_mb * SCRATCH_FILES, warm=warm)
    return _outcome(sandbox.run(code, plain, asdict(limits)), limits)


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
    """Per-run latency p50 and ``n`` runs in a row, cold (no spare) and warm, for the workflows bench."""
    isolated = _mode()
    figures: dict[str, Any] = {"mode": "isolated" if isolated else "unisolated"}
    for label, warm in (("cold", False), ("warm", True)):
        _run(TINY, {"n": 0}, Limits(), isolated=isolated, warm=warm)
        times = []
        for i in range(n):
            t = time.perf_counter()
            _run(TINY, {"n": i}, Limits(), isolated=isolated, warm=warm)
            times.append((time.perf_counter() - t) * 1000)
        figures[f"{label}_p50_ms"] = round(sorted(times)[len(times) // 2], 2)
        figures[f"{label}_{n}_in_a_row_s"] = round(sum(times) / 1000, 3)
    return figures
