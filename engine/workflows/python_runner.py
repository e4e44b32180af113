"""The child side of the python node: runs one job's ``main(data)`` and exits. Standard library only.

``python_sandbox`` hands this file's source to an isolated interpreter (``python -I -S -c``)
already running as the job's unprivileged uid, so it imports nothing from Meterbook and can
start before a job exists (the warm spare). Start-up time is most of a tiny job's cost, so it
imports only C modules: the job comes from the (trusted) parent as a marshal dump, and the
answer is written by the small JSON encoder below (``json`` pulls in ``re`` and ``enum``: 6 ms).
The parent parses the answer with ``json`` and trusts nothing in it. It waits for one job on
stdin (code, data, limits), lowers its own resource limits (they cannot be raised again without privilege),
then runs the code. The answer goes to the result fd named in ``argv[1]`` as an 8-byte length
and a JSON document; the code's prints go to stdout/stderr, so printing can never pass for a
result. The code runs in this same process, so it could write to the result fd itself: that
only garbles its own answer, which the parent then reports as a bad result.
"""

import _signal
import marshal
import os
import resource
import sys

FILENAME = "<python node>"
MB = 1024 * 1024


class _Raw(str):
    """Already JSON: written as it is."""


class CpuLimit(BaseException):
    """Raised on SIGXCPU: a BaseException, so the code's own ``except Exception`` does not swallow it."""


def _on_sigxcpu(signum, frame):
    raise CpuLimit()


def _limit(limits: dict) -> None:
    cpu = max(1, int(-(-limits["cpu_s"] // 1)))
    # Soft limit: SIGXCPU, which reports cleanly; hard limit a second later: the kernel's SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = limits["memory_mb"] * MB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = limits["file_mb"] * MB
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _signal.signal(_signal.SIGXCPU, _on_sigxcpu)


_ESCAPES = {i: "\\u%04x" % i for i in [*range(32), *range(0xD800, 0xE000)]}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})
MAX_DEPTH = 200


def to_json(value, out: list, depth: int = 0) -> None:
    """What ``json.dumps(value, allow_nan=False)`` accepts, written as JSON (str keys only)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"it is nested more than {MAX_DEPTH} levels deep")
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{float.__repr__(value)} is not a JSON number")
        out.append(float.__repr__(value))
    elif isinstance(value, str):
        out.append('"' + str.translate(value, _ESCAPES) + '"')
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            to_json(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"a dict key is {type(key).__name__} {key!r}; JSON keys are strings")
            out.append(',"' if i else '"')
            out.append(str.translate(key, _ESCAPES) + '":')
            to_json(item, out, depth + 1)
        out.append("}")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value) -> str:
    out: list = []
    to_json(value, out)
    return "".join(out)


def _trimmed_traceback(error: BaseException, code: str, limit: int = 4000) -> str:
    """The traceback through the user's own code only: our frames are noise to them."""
    import linecache
    import traceback

    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)  # so it shows their lines

    te = traceback.TracebackException.from_exception(error)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename == FILENAME])
    text = "".join(te.format()).replace(f'File "{FILENAME}", ', "")
    return text if len(text) <= limit else "…" + text[-limit:]


def _exception(error: BaseException, code: str) -> dict:
    name = type(error).__name__
    try:
        return {"status": "exception", "message": f"{name}: {error}", "traceback": _trimmed_traceback(error, code)}
    except CpuLimit:
        raise
    except BaseException:  # noqa: BLE001 - its __str__ (or its traceback) failed too: say what we can
        return {"status": "exception", "message": f"{name} (its message could not be shown)"}


def _run(job: dict) -> dict:
    code = job["code"]
    try:
        compiled = compile(code, FILENAME, "exec")
    except SyntaxError as e:
        where = f"line {e.lineno}" + (f", column {e.offset}" if e.offset else "")
        shown = (e.text or "").rstrip("\n")
        return {"status": "syntax", "message": f"{e.msg} ({where})" + (f"\n    {shown}" if shown.strip() else "")}
    namespace = {"__name__": "__node__", "__builtins__": __builtins__}
    try:
        exec(compiled, namespace)
        main = namespace.get("main")
        if not callable(main):
            return {"status": "no_main"}
        value = main(job["data"])
    except CpuLimit:
        return {"status": "cpu"}
    except MemoryError:
        return {"status": "memory"}
    except SystemExit as e:
        return {"status": "exit", "message": str(e.code)}
    except BaseException as e:  # noqa: BLE001 - whatever the user's code raised is reported, not re-raised
        return _exception(e, code)
    try:
        return {"status": "ok", "output": _Raw(dumps(value))}
    except (TypeError, ValueError, RecursionError) as e:
        return {"status": "bad_output", "message": f"{type(value).__name__}: {e}"}
    except MemoryError:
        return {"status": "memory"}


def _reply_json(reply: dict) -> str:
    parts = [f'"{key}":' + (value if isinstance(value, _Raw) else dumps(value)) for key, value in reply.items()]
    return "{" + ",".join(parts) + "}"


def main() -> None:
    result_fd = int(sys.argv[1])
    os.set_inheritable(result_fd, False)
    raw = sys.stdin.buffer.read()
    if not raw:
        os._exit(0)  # the parent went away before giving us a job
    job = marshal.loads(raw)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.environ.clear()
    _limit(job["limits"])
    try:
        reply = _run(job)
    except CpuLimit:
        reply = {"status": "cpu"}
    except MemoryError:
        reply = {"status": "memory"}
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - the code may have replaced or broken them; the answer matters more
        pass
    _signal.signal(_signal.SIGXCPU, _signal.SIG_DFL)
    try:
        body = _reply_json(reply).encode()
    except MemoryError:
        body = b'{"status": "memory"}'
    data = len(body).to_bytes(8, "big") + body
    view = memoryview(data)
    while view:
        view = view[os.write(result_fd, view):]
    os._exit(0)


main()
