"""Step payloads with a size cap: small ones inline in the database, large outputs as files, logs trimmed.

An output over ``INLINE_BYTES`` is written as JSON under ``<data dir>/workflow_runs/<run>/`` and the
step row keeps only its path, so the database does not grow with what nodes return. Inputs are
kept for display only, so a large one is stored as a preview; logs keep their head and tail.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from engine.config import get_settings

INLINE_BYTES = 64 * 1024
MAX_FILE_BYTES = 50 * 1024 * 1024
INPUT_PREVIEW_CHARS = 4_000
LOG_CHARS = 16_000


def root() -> Path:
    return Path(get_settings().data_dir) / "workflow_runs"


def _encode(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def jsonable(value: Any) -> Any:
    """The value as JSON would carry it (Decimals and dates as text)."""
    return json.loads(_encode(value))


def store_output(run_id: int, node_id: str, value: Any) -> tuple[Any, str | None]:
    """(inline value, None) or (None, file path relative to the data dir)."""
    text = _encode(value)
    if len(text.encode()) <= INLINE_BYTES:
        return json.loads(text), None
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ValueError(f"the output is {len(text.encode()):,} bytes; the limit is {MAX_FILE_BYTES:,}")
    folder = root() / str(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in node_id)
    path = folder / f"{safe}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return None, str(path.relative_to(Path(get_settings().data_dir)))


def load_output(inline: Any, file: str | None) -> Any:
    if file is None:
        return inline
    path = Path(get_settings().data_dir) / file
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"the stored output {file} is gone (pruned?)") from None


def preview(value: Any) -> Any:
    text = _encode(value)
    if len(text) <= INPUT_PREVIEW_CHARS:
        return json.loads(text)
    return {"truncated": True, "bytes": len(text.encode()), "preview": text[:INPUT_PREVIEW_CHARS]}


def cap_logs(text: str | None) -> str | None:
    if not text or len(text) <= LOG_CHARS:
        return text
    half = LOG_CHARS // 2
    return f"{text[:half]}\n… {len(text) - LOG_CHARS:,} characters left out …\n{text[-half:]}"


def remove_run_files(run_id: int) -> None:
    shutil.rmtree(root() / str(run_id), ignore_errors=True)
