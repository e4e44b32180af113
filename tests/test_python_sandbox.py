"""The python node's sandbox: each limit holds, in the isolated mode (bubblewrap) and where it applies unisolated.

Every limit test would pass the code through if that limit were gone: the code tries the thing
for real and the test checks it was stopped by that limit (not by another one, or the wall clock).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest

from engine.config import PROJECT_ROOT, get_settings
from engine.workflows import python_process as process
from engine.workflows import python_sandbox as ps
from engine.workflows.python_sandbox import Limits, PythonFailed, SandboxUnavailable

ISOLATED_OK, WHY = ps.available()
needs_isolated = pytest.mark.skipif(not ISOLATED_OK, reason=f"isolated mode unavailable: {WHY}")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged uid needs root")


@pytest.fixture(params=["isolated", "unisolated"])
def run(request):
    """Run code in one mode: ``run(code, data, **limits)``."""
    isolated = request.param == "isolated"
    if isolated and not ISOLATED_OK:
        pytest.skip(f"isolated mode unavailable: {WHY}")
    if not isolated and (os.geteuid() != 0 or process.reachable_interpreter() is None):
        pytest.skip("unisolated mode needs root and a python3 an unprivileged uid can run")

    def _run(code: str, data=None, *, warm: bool = True, **limits):
        return ps._run(code, data, Limits(**limits), isolated=isolated, warm=warm)

    _run.isolated = isolated
    return _run


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            if int(line.split()[1]) == uid:
                found.append(int(entry.name))
    return found


def test_main_output_comes_back_and_prints_go_to_the_logs(run):
    result = run('def main(data):\n    print("hello", data["name"])\n    return {"n": data["n"] * 2, "ok": True}',
                 {"name": "ada", "n": 21})
    assert result.output == {"n": 42, "ok": True}
    assert result.logs == "hello ada\n"
    assert result.duration_ms > 0


def test_printing_something_that_looks_like_a_result_does_not_replace_it(run):
    code = ('import sys\n'
            'def main(data):\n'
            '    print(\'{"status": "ok", "output": "spoofed"}\')\n'
            '    sys.stderr.write(\'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x05"spoof"\')\n'
            '    return "real"')
    result = run(code)
    assert result.output == "real"
    assert "spoofed" in result.logs


def test_runs_as_an_unprivileged_uid_with_an_empty_environment_and_working_directory(run, monkeypatch):
    monkeypatch.setenv("METERBOOK_TEST_SECRET", "sk-live-do-not-leak")
    code = ('import os\n'
            'def main(data):\n'
            '    initial = open("/proc/self/environ", "rb").read().split(b"\\0")\n'
            '    return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "env": dict(os.environ),\n'
            '            "initial": [v.decode() for v in initial if v], "cwd": os.getcwd(), "files": os.listdir(".")}')
    out = run(code).output
    assert out["uid"] >= process.UID_BASE and out["gid"] >= process.UID_BASE and out["groups"] == []
    assert out["env"] == {}
    # What the process started with: nothing of ours (Python itself sets LC_CTYPE when no locale is set).
    assert not [v for v in out["initial"] if not v.startswith(("LC_CTYPE=", "PWD="))], out["initial"]
    assert "sk-live-do-not-leak" not in str(out)
    assert out["files"] == []
    assert out["cwd"] != os.getcwd()


def test_cpu_loop_is_stopped_by_the_cpu_limit(run):
    with pytest.raises(PythonFailed) as caught:
        run("def main(data):\n    while True:\n        pass", cpu_s=1, wall_s=20)
    assert caught.value.kind == "cpu", caught.value
    assert "1 s of CPU time" in str(caught.value)


def test_memory_bomb_is_stopped_by_the_memory_limit(run):
    with pytest.raises(PythonFailed) as caught:
        run("def main(data):\n    hog = bytearray(1024 * 1024 * 1024)\n    return len(hog)", memory_mb=128)
    assert caught.value.kind == "memory", caught.value
    assert "128 MB of memory" in str(caught.value)


def test_a_huge_write_is_cut_at_the_file_size_limit(run):
    code = ('def main(data):\n'
            '    written = 0\n'
            '    try:\n'
            '        with open("big.bin", "wb", buffering=0) as f:\n'
            '            for _ in range(8):\n'
            '                written += f.write(b"x" * 1024 * 1024)\n'
            '    except OSError as e:\n'
            '        return {"written": written, "errno": e.errno}\n'
            '    return {"written": written, "errno": None}')
    out = run(code, file_mb=1).output
    assert out == {"written": 1024 * 1024, "errno": errno.EFBIG}


@needs_isolated
def test_the_scratch_space_holds_only_a_few_files_of_the_largest_size():
    code = ('def main(data):\n'
            '    for i in range(20):\n'
            '        try:\n'
            '            with open(f"part{i}", "wb") as f:\n'
            '                f.write(b"x" * 1024 * 1024)\n'
            '        except OSError as e:\n'
            '            return {"files": i, "errno": e.errno}\n'
            '    return {"files": 20, "errno": None}')
    out = ps._run(code, None, Limits(file_mb=1), isolated=True).output
    assert out["errno"] == errno.ENOSPC and out["files"] <= ps.SCRATCH_FILES


def test_fork_bomb_is_held_by_the_process_limit_and_leaves_nothing_behind(run):
    code = ('import os, time\n'
            'def main(data):\n'
            '    started = 0\n'
            '    for _ in range(200):\n'
            '        try:\n'
            '            pid = os.fork()\n'
            '        except OSError:\n'
            '            break\n'
            '        if pid == 0:\n'
            '            os.setsid()\n'  # out of the process group: killing the group alone would miss it
            '            time.sleep(120)\n'
            '            os._exit(0)\n'
            '        started += 1\n'
            '    return {"started": started, "uid": os.getuid()}')
    out = run(code, processes=8).output
    assert out["started"] < 8
    deadline = time.monotonic() + 5
    while processes_of(out["uid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of(out["uid"]) == []


@pytest.fixture
def listener():
    """A TCP listener of our own on 127.0.0.1 that records every connection it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()
    for conn in accepted:
        conn.close()


@needs_isolated
def test_no_network_a_listener_on_the_host_is_never_reached(listener):
    port, accepted = listener
    with socket.create_connection(("127.0.0.1", port)):  # the listener works from outside the sandbox
        pass
    deadline = time.monotonic() + 2
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(accepted) == 1
    code = ('import socket\n'
            'def main(port):\n'
            '    try:\n'
            '        socket.create_connection(("127.0.0.1", port), timeout=2).close()\n'
            '        return "connected"\n'
            '    except OSError as e:\n'
            '        return f"{type(e).__name__}: {e}"')
    out = ps._run(code, port, Limits(), isolated=True).output
    time.sleep(0.3)
    assert out != "connected" and len(accepted) == 1, out


@needs_root
def test_a_secret_in_roots_home_cannot_be_read(run):
    secret = Path("/root") / f"meterbook-test-secret-{secrets.token_hex(4)}"
    secret.write_text("sk-live-hidden")
    secret.chmod(0o600)
    try:
        code = ('def main(path):\n'
                '    try:\n'
                '        return open(path).read()\n'
                '    except OSError as e:\n'
                '        return type(e).__name__')
        out = run(code, str(secret)).output
    finally:
        secret.unlink()
    assert out in ("PermissionError", "FileNotFoundError")


@needs_isolated
def test_the_host_file_system_is_hidden_even_where_it_is_world_readable():
    shown = PROJECT_ROOT / "data" / f"test-visible-{secrets.token_hex(4)}.txt"
    shown.write_text("world-readable, but not for the sandbox")
    shown.chmod(0o644)
    try:
        code = ('import os\n'
                'def main(path):\n'
                '    try:\n'
                '        return {"read": open(path).read(), "top": sorted(os.listdir("/"))}\n'
                '    except OSError as e:\n'
                '        return {"read": type(e).__name__, "top": sorted(os.listdir("/"))}')
        out = ps._run(code, str(shown), Limits(), isolated=True).output
    finally:
        shown.unlink()
    assert out["read"] == "FileNotFoundError"
    assert "etc" not in out["top"] and "work" in out["top"]


def test_a_sleeping_job_is_stopped_by_the_wall_clock(run):
    with pytest.raises(PythonFailed) as caught:
        run("import time\ndef main(data):\n    time.sleep(60)", wall_s=1)
    assert caught.value.kind == "timeout"
    assert "1 s time limit" in str(caught.value)


def test_printed_output_is_capped(run):
    result = run('def main(data):\n    print("x" * 100_000)\n    return "done"', output_kb=4)
    assert result.output == "done"
    assert result.logs.startswith("x" * 4096) and len(result.logs) < 4096 + 100
    assert "cut at 4 KB" in result.logs


def test_a_returned_value_over_the_output_cap_is_refused(run):
    with pytest.raises(PythonFailed) as caught:
        run('def main(data):\n    return "y" * 100_000', output_kb=4)
    assert caught.value.kind == "output" and "4 KB" in str(caught.value)


@pytest.mark.parametrize("value, shown", [
    ("{1, 2}", "set"), ("float('nan')", "nan"), ("object()", "object"), ("{1: 'a'}", "key"), ("b'raw'", "bytes"),
])
def test_a_return_value_that_is_not_json_is_refused(run, value, shown):
    with pytest.raises(PythonFailed) as caught:
        run(f"def main(data):\n    return {value}")
    assert caught.value.kind == "bad_output"
    assert "must return JSON" in str(caught.value) and shown in str(caught.value)


def test_json_values_come_back_exactly(run):
    value = {"text": 'quote " backslash \\ newline \n tab \t nul \x00 é ☃ \ud83d', "big": 2**70, "neg": -1.5e-7,
             "list": [None, True, False, [], {}], "tuple": (1, 2)}
    out = run("def main(data):\n    return data['value']", {"value": value}).output
    assert out == {**value, "tuple": [1, 2]}


def test_a_syntax_error_says_where(run):
    with pytest.raises(PythonFailed) as caught:
        run("def main(data):\n    return (1 +\n")
    assert caught.value.kind == "syntax"
    assert "syntax error" in str(caught.value) and "line 2" in str(caught.value)


@pytest.mark.parametrize("code", ["x = 1", "main = 3", "def helper(data):\n    return 1"])
def test_code_without_a_main_function_is_refused(run, code):
    with pytest.raises(PythonFailed) as caught:
        run(code)
    assert caught.value.kind == "no_main"
    assert "def" in str(caught.value) and "main(data)" in str(caught.value)


def test_an_exception_shows_only_the_users_own_frames(run):
    code = "def helper(x):\n    return 1 / x\n\ndef main(data):\n    print('before')\n    return helper(0)\n"
    with pytest.raises(PythonFailed) as caught:
        run(code)
    message = str(caught.value)
    assert caught.value.kind == "exception"
    assert "ZeroDivisionError: division by zero" in message
    assert "line 6, in main" in message and "line 2, in helper" in message and "return 1 / x" in message
    assert "python_runner" not in message and "<string>" not in message
    assert caught.value.logs == "before\n"


def test_each_job_gets_a_fresh_process(run):
    first = run('import json\ndef main(data):\n    open("left.txt", "w").write("x")\n    json.left = 1\n'
                '    import os\n    return os.getuid()')
    second = run('import json, os\ndef main(data):\n    return {"files": os.listdir("."), '
                 '"left": hasattr(json, "left"), "uid": os.getuid()}')
    assert second.output["files"] == [] and second.output["left"] is False
    assert second.output["uid"] != first.output


def test_input_that_is_not_json_is_refused_before_anything_runs():
    with pytest.raises(PythonFailed) as caught:
        ps._run("def main(data):\n    return data", {"when": object()}, Limits(), isolated=ISOLATED_OK)
    assert caught.value.kind == "input" and "not JSON" in str(caught.value)
    with pytest.raises(PythonFailed):
        ps._run("  ", None, Limits(), isolated=ISOLATED_OK)
    with pytest.raises(PythonFailed) as caught:
        ps._run("def main(data):\n    return 1", "x" * (20 * 1024 * 1024), Limits(memory_mb=64), isolated=ISOLATED_OK)
    assert caught.value.kind == "input" and "at most 16 MB" in str(caught.value)


@pytest.fixture
def isolation_broken(monkeypatch):
    """This host as if bubblewrap did not work here."""
    monkeypatch.setattr(ps, "_probe", (False, "bubblewrap (bwrap) is not installed"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_without_isolation_the_node_is_off_and_says_how_to_turn_it_on(isolation_broken):
    isolation_broken.delenv("METERBOOK_PYTHON_NODE_UNISOLATED", raising=False)
    assert ps.available() == (False, "bubblewrap (bwrap) is not installed")
    with pytest.raises(SandboxUnavailable) as caught:
        ps.run_python("def main(data):\n    return 1", None)
    message = str(caught.value)
    assert "bubblewrap (bwrap) is not installed" in message
    assert "apt-get install bubblewrap" in message and "METERBOOK_PYTHON_NODE_UNISOLATED=true" in message


@needs_root
def test_an_admin_can_knowingly_run_it_unisolated(isolation_broken):
    isolation_broken.setenv("METERBOOK_PYTHON_NODE_UNISOLATED", "true")
    if process.reachable_interpreter() is None:
        pytest.skip("no python3 an unprivileged uid can run")
    result = ps.run_python("import os\ndef main(data):\n    return [os.getuid(), os.getcwd()]", None)
    assert result.output[0] >= process.UID_BASE
    assert result.output[1].startswith("/tmp/meterbook-python-") or "meterbook-python-" in result.output[1]
    assert not Path(result.output[1]).exists()  # the working directory is removed afterwards


@needs_isolated
def test_time_sequential_runs_the_tiny_nodes():
    assert ps.time_sequential(3) > 0


@needs_isolated
def test_new_namespaces_are_refused_but_threads_fork_and_subprocess_work():
    code = ('import ctypes, os, subprocess, threading\n'
            'def main(data):\n'
            '    libc = ctypes.CDLL(None, use_errno=True)\n'
            '    out = {}\n'
            '    for name, flag in (("user", 0x10000000), ("net", 0x40000000), ("mount", 0x00020000)):\n'
            '        out[name] = [libc.unshare(flag), ctypes.get_errno()]\n'
            '    out["sub"] = subprocess.run(["/proc/self/exe", "-c", "print(7)"], capture_output=True, text=True).stdout\n'
            '    seen = []\n'
            '    t = threading.Thread(target=seen.append, args=(1,))\n'
            '    t.start()\n'
            '    t.join()\n'
            '    out["thread"] = seen\n'
            '    return out')
    out = ps._run(code, None, Limits(), isolated=True).output
    assert out["user"] == [-1, errno.EPERM] and out["net"] == [-1, errno.EPERM] and out["mount"] == [-1, errno.EPERM]
    assert out["sub"] == "7\n" and out["thread"] == [1]


def test_without_bwrap_on_the_path_the_isolated_mode_reports_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    ok, why = ps._try_isolated()
    assert ok is False
    assert "bwrap" in why or "root" in why


@needs_root
def test_a_bwrap_that_cannot_make_namespaces_turns_the_isolated_mode_off_with_its_reason(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    ok, why = ps._try_isolated()
    assert ok is False
    assert "No permissions to creating new namespace" in why


def test_jobs_run_side_by_side_each_in_its_own_sandbox(run):
    results, errors = [], []

    def one(i):
        try:
            results.append(run("import os, time\ndef main(i):\n    time.sleep(0.2)\n    return [i, os.getuid()]", i).output)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(i for i, _ in results) == [0, 1, 2, 3]
    assert len({uid for _, uid in results}) == 4


@needs_root
def test_two_meterbook_processes_never_hand_out_the_same_uid():
    import subprocess
    import sys

    script = ("import json, sys\nfrom engine.workflows import python_process as p\n"
              "print(json.dumps([p._claim_uid()[0] for _ in range(5)]), flush=True)\nsys.stdin.read()")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=PROJECT_ROOT) for _ in range(2)]
    try:
        claimed = [set(json.loads(proc.stdout.readline())) for proc in procs]
    finally:
        for proc in procs:
            proc.communicate("")
    assert len(claimed[0]) == len(claimed[1]) == 5
    assert not claimed[0] & claimed[1]


def test_code_that_ignores_the_cpu_warning_is_killed_at_the_hard_limit(run):
    with pytest.raises(PythonFailed) as caught:
        run("import signal\ndef main(data):\n    signal.signal(signal.SIGXCPU, signal.SIG_IGN)\n    while True:\n"
            "        pass", cpu_s=1, wall_s=20)
    assert caught.value.kind == "killed" and "CPU time" in str(caught.value)


def test_an_exception_whose_message_fails_is_still_reported(run):
    with pytest.raises(PythonFailed) as caught:
        run("class Odd(Exception):\n    def __str__(self):\n        raise ValueError('no')\n"
            "def main(data):\n    raise Odd()")
    assert caught.value.kind == "exception" and "Odd" in str(caught.value)


def test_the_standard_library_works_inside(run):
    code = ('import datetime, hashlib, json, re, sqlite3, statistics, tempfile, zoneinfo\n'
            'def main(data):\n'
            '    paris = datetime.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")).isoformat()\n'
            '    with open(tempfile.gettempdir() + "/f.json", "w") as f:\n'
            '        json.dump(data, f)\n'
            '    return {"paris": paris, "sha": hashlib.sha256(b"x").hexdigest()[:8],\n'
            '            "sql": sqlite3.connect(":memory:").execute("select 40 + 2").fetchone()[0],\n'
            '            "mean": statistics.mean(data), "words": re.findall(r"\\w+", "a b")}')
    out = run(code, [1, 2, 3]).output
    assert out == {"paris": "2026-01-01T00:00:00+01:00", "sha": "2d711642", "sql": 42, "mean": 2, "words": ["a", "b"]}


def test_no_file_descriptor_of_the_app_is_inherited(run, tmp_path):
    secret = tmp_path / "open-secret"
    secret.write_text("sk-live-in-an-open-file")
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)  # even a descriptor the app marked inheritable stays behind
    try:
        code = ('import os\n'
                'def main(data):\n'
                '    found = {}\n'
                '    for name in os.listdir("/proc/self/fd"):\n'
                '        try:\n'
                '            found[name] = os.readlink("/proc/self/fd/" + name)\n'
                '        except OSError:\n'
                '            pass\n'  # the listing's own descriptor, closed by now
                '    return found')
        found = run(code, warm=False).output
    finally:
        os.close(fd)
    assert found.pop("0") == "/dev/null"
    assert found.pop("1") == found.pop("2") and len(found) == 1  # stdout/stderr share the log pipe; the answer pipe
    assert list(found.values())[0].startswith("pipe:")


def test_a_large_input_reaches_the_code_whole(run):
    data = {"rows": [{"id": i, "text": "é" * 50} for i in range(40_000)]}  # about 4 MB of JSON
    out = run("def main(data):\n    return [len(data['rows']), sum(r['id'] for r in data['rows'])]", data).output
    assert out == [40_000, sum(range(40_000))]


@needs_isolated
def test_warm_up_starts_spares_that_the_next_job_uses():
    process.stop_spares()
    ps.warm_up()
    deadline = time.monotonic() + 10
    while len(process._spares) < process.SPARES and time.monotonic() < deadline:
        time.sleep(0.01)
    spare_uids = {spare.uid for spare in process._spares}
    assert len(spare_uids) >= process.SPARES
    uid = ps.run_python("import os\ndef main(data):\n    return os.getuid()", None).output
    assert uid in spare_uids


@pytest.mark.parametrize("limits", [{"cpu_s": 0}, {"memory_mb": -1}, {"processes": 10_000}, {"wall_s": 86_400},
                                    {"output_kb": "1024"}, {"file_mb": True}])
def test_limits_out_of_range_are_refused_before_anything_runs(limits):
    with pytest.raises(PythonFailed) as caught:
        ps._run("def main(data):\n    return 1", None, Limits(**limits), isolated=ISOLATED_OK)
    assert caught.value.kind == "input" and "ceiling" in str(caught.value)


def test_files_left_in_tmp_go_with_the_job(run):
    name = f"meterbook-test-left-{secrets.token_hex(4)}"
    code = ('def main(name):\n'
            '    for d in ("/tmp", "/dev/shm"):\n'
            '        try:\n'
            '            open(f"{d}/{name}", "w").write("left behind")\n'
            '        except OSError:\n'
            '            pass\n'
            '    return 1')
    run(code, name)
    assert not Path("/tmp", name).exists() and not Path("/dev/shm", name).exists()
