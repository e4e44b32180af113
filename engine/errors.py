"""Errors the engine raises on purpose. Each message says what went wrong and what to do.

    MeterbookError
    ├── InvalidInput          bad form/file/API input; nothing was stored
    ├── NotFound              the object does not exist (or is not in this workspace)
    ├── Conflict              it would duplicate or contradict what is stored
    ├── PermissionDenied      the actor's role does not allow the action
    └── AuthenticationError   sign-in failed
        ├── InvalidCredentials
        ├── AccountLocked     too many failures; carries the unlock time
        └── SessionExpired    the browser's session ended or was revoked

Pages catch ``MeterbookError`` and show its message; anything else is a bug.
"""

from __future__ import annotations

from datetime import datetime


class MeterbookError(Exception):
    """Base of every error the engine raises deliberately."""


class InvalidInput(MeterbookError):
    pass


class NotFound(MeterbookError):
    pass


class Conflict(MeterbookError):
    pass


class PermissionDenied(MeterbookError):
    pass


class AuthenticationError(MeterbookError):
    pass


class InvalidCredentials(AuthenticationError):
    pass


class AccountLocked(AuthenticationError):
    def __init__(self, message: str, until: datetime):
        super().__init__(message)
        self.until = until


class SessionExpired(AuthenticationError):
    pass
