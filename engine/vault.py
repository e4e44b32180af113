"""Provider credentials encrypted at rest (envelope encryption), masked for display, kept out of logs.

Three layers of keys:

- the **master key** (32 bytes) lives outside the database: ``METERBOOK_SECRET_KEY`` if set,
  otherwise the key file (``METERBOOK_SECRET_KEY_FILE``, default ``data/secret.key``), which
  is created with mode 0600 on first use. Both hold the key as one line of base64 (standard or
  URL-safe alphabet, padding optional) or of 64 hex digits. ``METERBOOK_SECRET_KEY`` may list
  several keys separated by commas: the first wraps new data keys, the others are only read
  (that is how a rotation runs without downtime when the key comes from the environment).
  A key is known by its id, a one-way fingerprint (``key_id``), which is safe to show and store.
- each workspace's **data key** (32 random bytes) is made on first use and stored in
  ``workspace_keys`` only wrapped by the master key (AES-256-GCM, associated data naming the
  workspace, so a wrapped key moved to another workspace does not open). The row records
  which master key wrapped it.
- each **secret** is AES-256-GCM under its workspace's data key with a random 12-byte nonce and
  associated data naming the workspace, the connection row (the key's id), its name and its
  type, so a ciphertext copied to another tenant or another row fails with ``SecretUnreadable``.

Rotating the master key (``python -m engine rotate-key``) re-wraps the data keys and never
touches the secrets. With the key file, it runs while the app keeps serving:

1. the new key is written next to the current one as ``secret.key.new`` (0600); every process
   checks for that file on each use, so from then on all of them read data keys wrapped by
   either key and wrap new ones with the new key;
2. every data key still under another master key is re-wrapped, one row per transaction;
   interrupted, the command can simply be run again and carries on where it stopped;
3. ``secret.key.new`` replaces ``secret.key`` (an atomic rename). The old key is gone: database
   backups taken before the rotation need a copy of it kept elsewhere.

With ``METERBOOK_SECRET_KEY``: set it to ``NEW,OLD`` on every process, run ``rotate-key``
(which re-wraps under the first key), then set it to ``NEW`` alone.

Keys must never reach a log: every key encrypted or decrypted here is registered with
``engine.redaction``, whose ``install_redaction`` (run when ``engine`` is imported) scrubs
every log record of those values and of anything shaped like a vendor key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import db
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.errors import Conflict, MeterbookError
from engine.models import WorkspaceKey
from engine.redaction import install_redaction as install_redaction  # re-exported: part of the vault's face
from engine.redaction import register_secret

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
STAGED_SUFFIX = ".new"


class VaultError(MeterbookError):
    """A key or a secret cannot be used; the message says which and what to do."""


class MasterKeyError(VaultError):
    """The master key is missing, malformed, or not the one that wrapped a data key."""


class SecretUnreadable(VaultError):
    """A stored secret does not decrypt: altered, or copied from another workspace or connection."""


# --- master keys ------------------------------------------------------------------------------


def generate_master_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def format_master_key(key: bytes) -> str:
    """The text form written to key files: URL-safe base64 of the 32 bytes."""
    return base64.urlsafe_b64encode(key).decode()


def parse_master_key(text: str, *, source: str = "the master key") -> bytes:
    """Read one key written as 64 hex digits or base64 (either alphabet, padding optional)."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        padded = text + "=" * (-len(text) % 4)
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise MasterKeyError(
            f"{source} is not a 32-byte key written as base64 or 64 hex digits. Generate one with: "
            "python -c \"import base64,secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())\""
        )
    return key


def key_id(key: bytes) -> str:
    """A 16-hex-digit fingerprint that names a master key without revealing it."""
    return hmac.new(key, b"meterbook master key id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Keyring:
    """The master keys this process can use: ``primary`` wraps, all of ``keys`` unwrap."""

    primary: bytes = field(repr=False)
    keys: dict[str, bytes] = field(repr=False)
    source: str  # where the primary key came from, for messages

    @property
    def primary_id(self) -> str:
        return key_id(self.primary)

    def with_key(self, key: bytes) -> Keyring:
        return Keyring(key, {**self.keys, key_id(key): key}, self.source)


def staged_key_path(path: Path) -> Path:
    return path.with_name(path.name + STAGED_SUFFIX)


_ring_lock = threading.Lock()
_ring_cache: tuple[tuple, Keyring] | None = None


def load_keyring() -> Keyring:
    """The master keys now in force, re-read when the environment or the key files change."""
    global _ring_cache
    settings = get_settings()
    with _ring_lock:
        if settings.secret_key is not None and settings.secret_key.get_secret_value().strip():
            signature: tuple = ("env", settings.secret_key.get_secret_value())
        else:
            path = Path(settings.secret_key_file)
            if not path.exists():
                _create_key_file(path, generate_master_key())
                log.info("Created a new master key file at %s (mode 0600).", path)
            signature = ("file", str(path), _file_signature(path), _file_signature(staged_key_path(path)))
        if _ring_cache is not None and _ring_cache[0] == signature:
            return _ring_cache[1]
        ring = _ring_from_env(signature[1]) if signature[0] == "env" else _ring_from_files(Path(signature[1]))
        _ring_cache = (signature, ring)
        return ring


def _file_signature(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _ring_from_env(value: str) -> Keyring:
    parts = [p for p in value.split(",") if p.strip()]
    keys = [parse_master_key(p, source=f"Key {i + 1} of METERBOOK_SECRET_KEY") for i, p in enumerate(parts)]
    return Keyring(keys[0], {key_id(k): k for k in keys}, "METERBOOK_SECRET_KEY")


def _ring_from_files(path: Path) -> Keyring:
    # The staged key first: a finishing rotation renames it onto ``path``, and read in this
    # order a process sees either both keys or the new one alone, never only the old one.
    staged_path = staged_key_path(path)
    staged = _read_key_file(staged_path, missing_ok=True)
    current = _read_key_file(path)
    if staged is None or staged == current:
        return Keyring(current, {key_id(current): current}, str(path))
    # A rotation is under way: the new key wraps from now on, both unwrap.
    return Keyring(staged, {key_id(current): current, key_id(staged): staged}, str(staged_path))


def _read_key_file(path: Path, *, missing_ok: bool = False) -> bytes | None:
    try:
        text = path.read_text()
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise MasterKeyError(f"The master key file {path} is missing.") from None
    except OSError as exc:
        raise MasterKeyError(f"Cannot read the master key file {path}: {exc.strerror}.") from None
    if mode & 0o077:
        log.warning("The master key file %s is readable by other users; run: chmod 600 %s", path, path)
    return parse_master_key(text, source=f"The master key file {path}")


def _create_key_file(path: Path, key: bytes) -> bool:
    """Write a key file that is 0600 from its first byte and never half-written to a reader.

    The key goes to a private temporary file that is then hard-linked into place: a link
    fails if the name exists, so two processes starting together agree on one key. Returns
    whether this call wrote it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(format_master_key(key) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False  # another process made it first; its key is the key
        return True
    finally:
        tmp.unlink(missing_ok=True)


# --- data keys --------------------------------------------------------------------------------


def _wrap_aad(workspace_id: int) -> bytes:
    return f"meterbook/workspace-key/v1/{workspace_id}".encode()


def _unwrap(row: WorkspaceKey, ring: Keyring) -> bytes:
    master = ring.keys.get(row.master_key_id)
    if master is None:
        raise MasterKeyError(
            f"Workspace {row.workspace_id}'s data key was wrapped by master key {row.master_key_id}, "
            f"but the key loaded from {ring.source} is {ring.primary_id}. Restore the master key that "
            "was in use (METERBOOK_SECRET_KEY or the key file); stored provider keys cannot be read without it."
        )
    try:
        return AESGCM(master).decrypt(row.nonce, row.wrapped_key, _wrap_aad(row.workspace_id))
    except InvalidTag:
        raise MasterKeyError(
            f"Workspace {row.workspace_id}'s data key does not open with master key {row.master_key_id}: "
            "the stored wrapped key was altered or belongs to another workspace. Re-enter this "
            "workspace's provider keys after removing its row from workspace_keys."
        ) from None


def _wrap(master: bytes, data_key: bytes, workspace_id: int) -> tuple[bytes, bytes]:
    nonce = os.urandom(NONCE_BYTES)
    return AESGCM(master).encrypt(nonce, data_key, _wrap_aad(workspace_id)), nonce


def _data_key(session: Session, workspace_id: int, *, create: bool) -> bytes | None:
    ring = load_keyring()
    row = session.get(WorkspaceKey, workspace_id)
    if row is not None:
        return _unwrap(row, ring)
    if not create:
        return None
    data_key = os.urandom(KEY_BYTES)
    wrapped, nonce = _wrap(ring.primary, data_key, workspace_id)
    try:
        with session.begin_nested():
            session.add(WorkspaceKey(workspace_id=workspace_id, wrapped_key=wrapped, nonce=nonce,
                                     master_key_id=ring.primary_id))
    except IntegrityError:  # another transaction created it first: use theirs
        return _unwrap(session.get(WorkspaceKey, workspace_id, populate_existing=True), ring)
    return data_key


# --- secrets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretBinding:
    """What a secret belongs to; all of it is authenticated with the ciphertext."""

    workspace_id: int
    connection_id: int
    name: str
    provider_type: str

    def aad(self) -> bytes:
        fields = ["meterbook/secret/v1", self.workspace_id, self.connection_id, self.name, self.provider_type]
        return json.dumps(fields, separators=(",", ":")).encode()


def encrypt_secret(session: Session, binding: SecretBinding, plaintext: str) -> tuple[bytes, bytes]:
    """``(ciphertext, nonce)`` for a secret, making the workspace's data key if it has none yet."""
    register_secret(plaintext)
    data_key = _data_key(session, binding.workspace_id, create=True)
    nonce = os.urandom(NONCE_BYTES)
    return AESGCM(data_key).encrypt(nonce, plaintext.encode(), binding.aad()), nonce


def decrypt_secret(session: Session, binding: SecretBinding, ciphertext: bytes, nonce: bytes) -> str:
    data_key = _data_key(session, binding.workspace_id, create=False)
    try:
        if data_key is None:
            raise InvalidTag
        plaintext = AESGCM(data_key).decrypt(nonce, ciphertext, binding.aad()).decode()
    except InvalidTag:
        raise SecretUnreadable(
            f"The stored key of connection {binding.name!r} cannot be decrypted: it was altered, or it "
            "was encrypted for another workspace or connection. Enter the key again under Providers."
        ) from None
    register_secret(plaintext)
    return plaintext


def mask(secret: str | None) -> str:
    """What may be shown of a key: its vendor prefix and last four characters, ``sk-…abcd``."""
    if not secret:
        return ""
    if len(secret) < 12:
        return "…"  # too short to show any of it safely
    dash = secret.find("-")
    prefix = secret[: dash + 1] if 0 < dash <= 3 else secret[:3]
    return f"{prefix}…{secret[-4:]}"


# --- rotation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    """What a rotation did. Holds key ids only, never keys."""

    new_key_id: str
    rewrapped: int
    already_current: int
    key_file: Path | None = None  # set when the key file was replaced

    def describe(self) -> str:
        lines = [
            f"Re-wrapped {self.rewrapped} workspace data key(s) under master key {self.new_key_id}"
            f" ({self.already_current} already under it). Stored secrets were not touched."
        ]
        if self.key_file is not None:
            lines.append(f"{self.key_file} now holds the new master key; the old key file was replaced.")
        return "\n".join(lines)


def rotate_master_key(new_key: bytes, *, progress: Callable[[int, int], None] | None = None) -> Rotation:
    """Re-wrap every data key under ``new_key``, opening them with the keys now loaded.

    One row per transaction, and a row is only rewritten if it is still as read, so this can
    run beside the app, be interrupted, and be run again: rows already under ``new_key`` are
    skipped. It repeats until no row is left under another key (new ones may appear meanwhile).
    """
    ring = load_keyring().with_key(new_key)
    new_id = key_id(new_key)
    rewrapped = 0
    with db.read_session() as s:
        already = s.scalar(select(func.count()).select_from(WorkspaceKey).where(WorkspaceKey.master_key_id == new_id))
    while True:
        with db.read_session() as s:
            todo = list(s.scalars(select(WorkspaceKey.workspace_id)
                                     .where(WorkspaceKey.master_key_id != new_id).order_by(WorkspaceKey.workspace_id)))
        if not todo:
            break
        settled = 0  # rows now under the new key, whoever put them there
        for i, workspace_id in enumerate(todo, 1):
            with db.transaction() as s:
                row = s.get(WorkspaceKey, workspace_id)
                if row is None or row.master_key_id == new_id:
                    settled += 1
                else:
                    wrapped, nonce = _wrap(new_key, _unwrap(row, ring), workspace_id)
                    done = s.execute(
                        update(WorkspaceKey)
                        .where(WorkspaceKey.workspace_id == workspace_id,
                               WorkspaceKey.master_key_id == row.master_key_id,
                               WorkspaceKey.nonce == row.nonce)
                        .values(wrapped_key=wrapped, nonce=nonce, master_key_id=new_id, rotated_at=utcnow())
                    ).rowcount
                    rewrapped += done
                    settled += done
            if progress is not None:
                progress(i, len(todo))
        if not settled:
            raise Conflict("Another process keeps re-wrapping the same data keys under a different master "
                           "key: let one rotation finish before starting another.")
    return Rotation(new_id, rewrapped, already or 0)


def rotate(new_key: bytes | None = None, *, progress: Callable[[int, int], None] | None = None) -> Rotation:
    """The whole rotation procedure of the module docstring, for the key file or the environment."""
    settings = get_settings()
    ring = load_keyring()
    if ring.source == "METERBOOK_SECRET_KEY":
        if new_key is not None and new_key != ring.primary:
            raise MasterKeyError(
                "METERBOOK_SECRET_KEY is set, so a new key must reach every process through it: set "
                "METERBOOK_SECRET_KEY=NEW,OLD everywhere, run rotate-key without a key file, then set "
                "METERBOOK_SECRET_KEY=NEW."
            )
        return rotate_master_key(ring.primary, progress=progress)

    path = Path(settings.secret_key_file)
    staged_path = staged_key_path(path)
    if staged_path.exists():  # resuming an interrupted rotation
        staged = _read_key_file(staged_path)
        if new_key is not None and new_key != staged:
            raise Conflict(
                f"A rotation to another key is already under way ({staged_path} exists). Run rotate-key "
                "without a key file to finish it first."
            )
    else:
        staged = new_key if new_key is not None else generate_master_key()
        if staged == _read_key_file(path):
            raise MasterKeyError("That key is already the master key; there is nothing to rotate.")
        if not _create_key_file(staged_path, staged):
            raise Conflict(f"Another rotation started at the same moment ({staged_path}); let it finish.")
    result = rotate_master_key(staged, progress=progress)
    os.replace(staged_path, path)
    return Rotation(result.new_key_id, result.rewrapped, result.already_current, key_file=path)
