"""Waiting in tests for something another thread or process does: poll, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T], timeout: float = 30.0, poll: float = 0.05) -> T:
    """``check()``'s first truthy value; AssertionError once ``timeout`` seconds pass without one."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out waiting")
