"""One sandboxed interpreter for one python-node job: how it is started, fed, watched and killed.

``python_sandbox`` decides which mode to use and turns what happened into a result or an error;
this module only runs processes. See ``python_sandbox``'s docstring for the design.
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
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
from dataclasses import dataclass
from pathlib import Path

from engine.workflows import python_seccomp

UID_BASE = 1_970_000_000  # far above any account a distribution or an admin creates
UID_SPAN = 10_000  # a uid returns to use only after 10,000 later jobs: long after its processes are gone
SPARES = 2  # interpreters kept started ahead of need: two boot at once on two cores
RUNNER = (Path(__file__).with_name("python_runner.py")).read_text()
# Compiling the runner costs the child 1.5-3 ms of a tiny job's start; a child on this same interpreter
# gets it compiled (marshal's format is tied to the interpreter version, so any other one gets source).
RUNNER_COMPILED = marshal.dumps(compile(RUNNER, "python_runner", "exec")).hex()
LOAD_COMPILED = "import marshal, sys; exec(marshal.loads(bytes.fromhex(sys.argv.pop(1))))"
KB = 1024
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass(frozen=True)
class Finished:
    """What one job's process did: its framed answer (None if it gave none), why watching stopped."""

    answer: bytes | None
    why: str  # answered | exited | timeout | too_big
    returncode: int
    logs: str  # capped, with a note when cut
    ms: float


_uids = itertools.count()
_uid_lock = threading.Lock()


def _lock_dir() -> Path:
    base = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
    path = base / "meterbook-python-uids"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.geteuid() or path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} belongs to someone else or is open to others; remove it")
    return path


def _claim_uid() -> tuple[int, int]:
    """A uid no other job holds, in this process or another Meterbook process (the UI and the sidecar
    both run jobs): an flock on a file named for it, held until the job's processes are gone."""
    directory = _lock_dir()
    for _ in range(UID_SPAN):
        with _uid_lock:
            uid = UID_BASE + next(_uids) % UID_SPAN
        fd = os.open(directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return uid, fd
    raise OSError(f"all {UID_SPAN} sandbox uids are in use")


def interpreter() -> tuple[str, str]:
    """The app's own interpreter (executable, prefix), bound read-only into the sandbox."""
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return exe, os.path.realpath(sys.base_prefix)


def reachable_interpreter() -> str | None:
    """For unisolated mode: a python3 that a uid with no rights of its own can execute."""
    for candidate in (interpreter()[0], "/usr/bin/python3", "/usr/local/bin/python3"):
        path = Path(os.path.realpath(candidate))
        if path.is_file() and all(p.stat().st_mode & 0o001 for p in [path, *path.parents]):
            return str(path)
    return None


def bwrap_args(uid: int, scratch_mb: int, seccomp_fd: int | None) -> list[str]:
    exe, prefix = interpreter()
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    libdirs = [d for d in (f"/usr/lib/{multiarch}" if multiarch else "", "/usr/lib64") if d and os.path.isdir(d)]
    if not libdirs:
        libdirs = ["/usr/lib"]
    binds = [prefix] if prefix != "/usr" else [exe, f"/usr/lib/python{sys.version_info[0]}.{sys.version_info[1]}"]
    args = [shutil.which("bwrap") or "bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
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
             "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args += ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
             "--bounding-set=-all", "--no-new-privs", "--", exe]
    return args


def _runner_args(exe: str) -> list[str]:
    if exe == interpreter()[0]:
        return ["-I", "-S", "-c", LOAD_COMPILED, RUNNER_COMPILED]
    return ["-I", "-S", "-c", RUNNER]


def _seccomp_fd() -> int | None:
    """A pipe holding the filter, for bwrap to read once at start-up (it fits the pipe's buffer)."""
    filter_bytes = python_seccomp.program()
    if filter_bytes is None:
        return None
    read_fd, write_fd = os.pipe()
    os.write(write_fd, filter_bytes)
    os.close(write_fd)
    return read_fd


class Sandbox:
    """One started interpreter, waiting for its one job (or running it)."""

    def __init__(self, isolated: bool, scratch_mb: int):
        self.isolated, self.scratch_mb = isolated, scratch_mb
        self.uid, self.uid_lock = _claim_uid()
        self.workdir: str | None = None
        job_r, self.job_w = os.pipe()
        self.result_r, result_w = os.pipe()
        self.log_r, log_w = os.pipe()
        extra_fds = [result_w]
        try:
            if isolated:
                filter_fd = _seccomp_fd()
                if filter_fd is not None:
                    extra_fds.append(filter_fd)
                argv = [*bwrap_args(self.uid, scratch_mb, filter_fd), *_runner_args(interpreter()[0]), str(result_w)]
                kwargs: dict = {"cwd": "/"}
            else:
                exe = reachable_interpreter()
                if exe is None:
                    raise FileNotFoundError("no python3 here can be run by an unprivileged user")
                self.workdir = tempfile.mkdtemp(prefix="meterbook-python-")
                os.chown(self.workdir, self.uid, self.uid)
                argv = [exe, *_runner_args(exe), str(result_w)]
                kwargs = {"cwd": self.workdir, "user": self.uid, "group": self.uid, "extra_groups": []}
            self.proc = subprocess.Popen(argv, stdin=job_r, stdout=log_w, stderr=log_w, pass_fds=extra_fds,
                                         env={}, start_new_session=True, close_fds=True, **kwargs)
        except BaseException:
            for fd in (self.job_w, self.result_r, self.log_r, self.uid_lock):
                os.close(fd)
            self._remove_workdir()
            raise
        finally:
            for fd in (job_r, log_w, *extra_fds):
                os.close(fd)
        self.pidfd = os.pidfd_open(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, code: str, data, limits: dict) -> Finished:
        """Feed the job, watch it to its end, kill what is left. ``data``: plain JSON values (marshal carries it)."""
        started = time.perf_counter()
        try:
            self._send(marshal.dumps({"code": code, "data": data, "limits": limits}))
            logs, truncated, answer, why = self._collect(limits["wall_s"], limits["output_kb"] * KB, started)
        finally:
            self.destroy()
        ms = (time.perf_counter() - started) * 1000
        text = logs.decode("utf-8", "replace") + (f"\n… output cut at {limits['output_kb']} KB" if truncated else "")
        return Finished(answer, why, self.proc.returncode, text, ms)

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

    def _collect(self, wall_s: float, cap: int, started: float) -> tuple[bytes, bool, bytes | None, str]:
        logs, truncated, result = bytearray(), False, bytearray()
        deadline = started + wall_s
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
            _remove_files_of(self.uid)
        for name in ("job_w", "result_r", "log_r", "pidfd", "uid_lock"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        self._remove_workdir()

    def _remove_workdir(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _remove_files_of(uid: int) -> None:
    """Unisolated code shares the host's world-writable directories; what it left there goes with it."""
    for directory in SHARED_WRITABLE:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


_spare_lock = threading.Lock()
_spares: list[Sandbox] = []  # started, waiting for a job; all for the same (isolated, scratch_mb)
_requests: queue.SimpleQueue | None = None


def take(isolated: bool, scratch_mb: int, *, warm: bool = True) -> Sandbox:
    """A warm spare if one fits this job (else a fresh interpreter); the spares are topped up meanwhile."""
    job = None
    if warm:
        with _spare_lock:
            while _spares and job is None:
                spare = _spares.pop(0)
                if (spare.isolated, spare.scratch_mb) == (isolated, scratch_mb) and spare.alive():
                    job = spare
                else:
                    _spares.append(spare)
                    break
        _spawner().put((isolated, scratch_mb))
    return job or Sandbox(isolated, scratch_mb)


def prepare(isolated: bool, scratch_mb: int) -> None:
    """Have spares for this kind of job started in the background."""
    _spawner().put((isolated, scratch_mb))


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
    while True:
        key = requests.get()
        while not requests.empty():  # a burst of jobs: fill for the latest
            key = requests.get()
        with _spare_lock:
            stale = [s for s in _spares if (s.isolated, s.scratch_mb) != key or not s.alive()]
            _spares[:] = [s for s in _spares if s not in stale]
            missing = SPARES - len(_spares)
        for spare in stale:
            spare.destroy()
        for _ in range(missing):
            try:
                fresh = Sandbox(*key)
            except OSError:
                break
            with _spare_lock:
                _spares.append(fresh)


@atexit.register
def stop_spares() -> None:
    with _spare_lock:
        old = list(_spares)
        _spares.clear()
    for spare in old:
        spare.destroy()


