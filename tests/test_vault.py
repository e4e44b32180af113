"""The vault: envelope encryption of provider keys, the master key's file, rotation, and log redaction."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import stat

import pytest
from sqlalchemy import select, text, update

from engine import accounts, cli, connections, db, redaction, vault
from engine.config import get_settings
from engine.errors import Conflict
from engine.models import Base, ProviderConnection, WorkspaceKey
from engine.permissions import Actor
from engine.vault import MasterKeyError, SecretUnreadable
from providers.base import Config
from tests.factories import owner


@pytest.fixture(autouse=True)
def key_file(tmp_path, monkeypatch):
    """Each test gets its own master key file and no METERBOOK_SECRET_KEY."""
    path = tmp_path / "keys" / "secret.key"
    monkeypatch.setenv("METERBOOK_SECRET_KEY_FILE", str(path))
    monkeypatch.delenv("METERBOOK_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def use_env_key(monkeypatch, value: str) -> None:
    monkeypatch.setenv("METERBOOK_SECRET_KEY", value)
    get_settings.cache_clear()


def canary() -> str:
    return f"sk-proj-canary{secrets.token_hex(16)}"


def add_connection(actor, name: str, key: str, provider_type: str = "openai"):
    return connections.create_connection(actor, name=name, provider_type=provider_type, api_key=key)


def another_workspace(actor: Actor, name: str) -> Actor:
    """A second tenant: here, another workspace of the same person (tenancy is per workspace)."""
    return Actor(actor.user_id, accounts.create_workspace(actor.user_id, name).id)


def stored_key(actor, connection_id: int) -> str | None:
    return connections.provider_config(None, actor.workspace_id, connection_id)[1].api_key


# --- encryption -------------------------------------------------------------------------------


def test_round_trip_and_any_flipped_byte_fails(database):
    boss = owner()
    binding = vault.SecretBinding(boss.workspace_id, 1, "openai", "openai")
    key = canary()
    with db.transaction() as s:
        ciphertext, nonce = vault.encrypt_secret(s, binding, key)
    assert len(nonce) == 12 and key.encode() not in ciphertext
    with db.read_session() as s:
        assert vault.decrypt_secret(s, binding, ciphertext, nonce) == key
        for where in (0, len(ciphertext) // 2, len(ciphertext) - 1):  # body and tag
            tampered = bytearray(ciphertext)
            tampered[where] ^= 0x01
            with pytest.raises(SecretUnreadable, match="altered"):
                vault.decrypt_secret(s, binding, bytes(tampered), nonce)
        with pytest.raises(SecretUnreadable):
            vault.decrypt_secret(s, binding, ciphertext, bytes([nonce[0] ^ 1]) + nonce[1:])
    with db.transaction() as s:
        again, again_nonce = vault.encrypt_secret(s, binding, key)
    assert again_nonce != nonce and again != ciphertext  # a fresh nonce every time


def test_ciphertext_copied_to_another_row_or_workspace_does_not_decrypt(database):
    boss = owner()
    rival = another_workspace(boss, "Rival Corp")
    source = add_connection(boss, "openai", canary())
    sibling = add_connection(boss, "openai-backup", canary())
    foreign = add_connection(rival, "openai", canary())
    with db.transaction() as s:
        original = s.get(ProviderConnection, source.id)
        for target in (sibling.id, foreign.id):
            s.execute(update(ProviderConnection).where(ProviderConnection.id == target)
                      .values(secret_ciphertext=original.secret_ciphertext, secret_nonce=original.secret_nonce))
    with pytest.raises(SecretUnreadable, match="another workspace or connection"):
        stored_key(boss, sibling.id)
    with pytest.raises(SecretUnreadable, match="another workspace or connection"):
        stored_key(rival, foreign.id)
    # A wrapped data key moved to another workspace does not open either.
    with db.transaction() as s:
        mine = s.get(WorkspaceKey, boss.workspace_id)
        s.execute(update(WorkspaceKey).where(WorkspaceKey.workspace_id == rival.workspace_id)
                  .values(wrapped_key=mine.wrapped_key, nonce=mine.nonce, master_key_id=mine.master_key_id))
    with pytest.raises(MasterKeyError, match="altered or belongs to another workspace"):
        stored_key(rival, foreign.id)


def test_mask_shows_prefix_and_last_four_only():
    assert vault.mask("sk-proj-abcdefghijklmnop1234") == "sk-…1234"
    assert vault.mask("sk-ant-api03-abcdefghijklmnopWXYZ") == "sk-…WXYZ"
    assert vault.mask("AIzaSyA1234567890abcdefgh9876") == "AIz…9876"
    assert vault.mask("0123456789abcdef0123456789abcdef") == "012…cdef"
    assert vault.mask("short-key") == "…"
    assert vault.mask(None) == ""
    assert len(vault.mask("x" * 4000)) <= 16  # fits secret_hint


# --- the master key ---------------------------------------------------------------------------


def test_key_file_is_created_0600_and_reused(key_file):
    old_umask = os.umask(0)  # the mode must come from os.open, not from a friendly umask
    try:
        ring = vault.load_keyring()
    finally:
        os.umask(old_umask)
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert vault.parse_master_key(key_file.read_text()) == ring.primary
    assert list(key_file.parent.iterdir()) == [key_file]  # no temporary file left behind
    vault._ring_cache = None  # as a restarted process would
    assert vault.load_keyring().primary == ring.primary
    assert key_file.read_text().strip() == vault.format_master_key(ring.primary)


def test_environment_key_wins_over_the_file(key_file, monkeypatch):
    file_key = vault.load_keyring().primary
    env_key = vault.generate_master_key()
    use_env_key(monkeypatch, env_key.hex())
    assert vault.load_keyring().primary == env_key
    use_env_key(monkeypatch, base64.b64encode(env_key).decode())
    assert vault.load_keyring().primary == env_key
    other = vault.generate_master_key()
    use_env_key(monkeypatch, f"{vault.format_master_key(env_key)},{other.hex()}")
    ring = vault.load_keyring()
    assert ring.primary == env_key and set(ring.keys) == {vault.key_id(env_key), vault.key_id(other)}
    assert vault.parse_master_key(key_file.read_text()) == file_key  # the file was left alone


def test_env_key_means_no_key_file_is_created(key_file, monkeypatch):
    use_env_key(monkeypatch, vault.generate_master_key().hex())
    vault.load_keyring()
    assert not key_file.exists()


def test_malformed_master_keys_are_refused_clearly(monkeypatch):
    for bad in ("not a key", "abcd" * 15, base64.b64encode(b"x" * 31).decode()):
        use_env_key(monkeypatch, bad)
        with pytest.raises(MasterKeyError, match="32-byte key written as base64 or 64 hex digits"):
            vault.load_keyring()


def test_wrong_master_key_is_a_clear_error_not_garbage(database, monkeypatch):
    boss = owner()
    conn = add_connection(boss, "openai", canary())
    right_id = vault.load_keyring().primary_id
    use_env_key(monkeypatch, vault.generate_master_key().hex())
    with pytest.raises(MasterKeyError, match=f"wrapped by master key {right_id}.*Restore the master key"):
        stored_key(boss, conn.id)


# --- rotation ---------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def _stop_after_first(done: int, total: int) -> None:
    raise Interrupted


def test_rotation_rewraps_data_keys_resumes_and_retires_the_old_key(database, key_file, monkeypatch):
    first = owner()
    actors = [first, another_workspace(first, "Team 1"), another_workspace(first, "Team 2")]
    keys = {a: canary() for a in actors}
    ids = {a: add_connection(a, "openai", keys[a]).id for a in actors}
    old_key = vault.load_keyring().primary
    with db.read_session() as s:
        ciphertexts = {c.id: c.secret_ciphertext for c in s.scalars(select(ProviderConnection))}

    # Interrupted after the first workspace: the app keeps serving every secret meanwhile.
    with pytest.raises(Interrupted):
        vault.rotate(progress=_stop_after_first)
    staged = vault.staged_key_path(key_file)
    assert staged.exists() and stat.S_IMODE(staged.stat().st_mode) == 0o600
    assert vault.parse_master_key(key_file.read_text()) == old_key
    new_key = vault.parse_master_key(staged.read_text())
    assert all(stored_key(a, ids[a]) == keys[a] for a in actors)
    with db.read_session() as s:
        under = sorted(s.scalars(select(WorkspaceKey.master_key_id)))
    assert under.count(vault.key_id(new_key)) == 1 and under.count(vault.key_id(old_key)) == 2
    # A workspace that gets its first key mid-rotation is wrapped under the new key at once.
    late = another_workspace(first, "Late Team")
    keys[late] = canary()
    ids[late] = add_connection(late, "openai", keys[late]).id
    with db.read_session() as s:
        assert s.get(WorkspaceKey, late.workspace_id).master_key_id == vault.key_id(new_key)

    # Run again: it finishes with the same new key and swaps the files.
    with pytest.raises(Conflict, match="already under way"):
        vault.rotate(vault.generate_master_key())
    result = vault.rotate()
    assert (result.new_key_id, result.rewrapped, result.already_current) == (vault.key_id(new_key), 2, 2)
    assert not staged.exists() and vault.parse_master_key(key_file.read_text()) == new_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert all(stored_key(a, ids[a]) == keys[a] for a in keys)
    with db.read_session() as s:
        assert {c.id: c.secret_ciphertext for c in s.scalars(select(ProviderConnection))
                if c.id in ciphertexts} == ciphertexts  # secrets untouched
        assert set(s.scalars(select(WorkspaceKey.master_key_id))) == {vault.key_id(new_key)}

    again = vault.rotate_master_key(new_key)  # idempotent
    assert (again.rewrapped, again.already_current) == (0, 4)

    use_env_key(monkeypatch, old_key.hex())  # the old key no longer opens anything
    with pytest.raises(MasterKeyError, match="wrapped by master key"):
        stored_key(actors[0], ids[actors[0]])


def test_rotate_key_command_prints_no_key(sqlite_database, key_file, tmp_path, capsys):
    boss = owner()
    key = canary()
    conn = add_connection(boss, "openai", key)
    old_key = vault.load_keyring().primary
    new_key = vault.generate_master_key()
    supplied = tmp_path / "new.key"
    supplied.write_text(new_key.hex())

    assert cli.main(["rotate-key", "--new-key", str(supplied)]) == 0
    out = capsys.readouterr()
    assert "Re-wrapped 1 workspace data key(s)" in out.out
    assert vault.parse_master_key(key_file.read_text()) == new_key
    assert stored_key(boss, conn.id) == key

    assert cli.main(["rotate-key"]) == 0  # generates one
    out2 = capsys.readouterr()
    generated = vault.parse_master_key(key_file.read_text())
    assert generated not in (old_key, new_key) and stored_key(boss, conn.id) == key
    printed = out.out + out.err + out2.out + out2.err
    for k in (old_key, new_key, generated):
        for form in (k.hex(), vault.format_master_key(k), base64.b64encode(k).decode()):
            assert form not in printed
    assert key not in printed


def test_rotate_key_with_environment_key(sqlite_database, monkeypatch, tmp_path, capsys):
    old, new = vault.generate_master_key(), vault.generate_master_key()
    use_env_key(monkeypatch, old.hex())
    boss = owner()
    key = canary()
    conn = add_connection(boss, "openai", key)
    use_env_key(monkeypatch, f"{new.hex()},{old.hex()}")  # step 1: NEW,OLD everywhere
    assert cli.main(["rotate-key"]) == 0
    use_env_key(monkeypatch, new.hex())  # step 3: NEW alone
    assert stored_key(boss, conn.id) == key
    other = tmp_path / "other.key"
    other.write_text(vault.generate_master_key().hex())
    assert cli.main(["rotate-key", "--new-key", str(other)]) == 1
    assert "METERBOOK_SECRET_KEY=NEW,OLD" in capsys.readouterr().err


# --- the plaintext never reaches the database -------------------------------------------------


def test_plaintext_key_never_reaches_the_database(database):
    boss = owner()
    key = canary()
    conn = add_connection(boss, "openai", key)
    connections.update_connection(boss, conn.id, name="openai-main")  # re-encrypted under the new name
    second = canary()
    connections.update_connection(boss, conn.id, api_key=second)
    master = vault.load_keyring().primary
    with db.read_session() as s:
        data_key = vault._data_key(s, boss.workspace_id, create=False)
    forbidden = {}
    for label, value in (("key", key.encode()), ("second key", second.encode()),
                         ("master key", master), ("data key", data_key)):
        forbidden[label] = value
        forbidden[f"{label} (base64)"] = base64.b64encode(value)
        forbidden[f"{label} (base64url)"] = base64.urlsafe_b64encode(value)
        forbidden[f"{label} (hex)"] = value.hex().encode()

    if database.dialect.name == "sqlite":
        path = database.url.database
        raw = b"".join(open(p, "rb").read() for p in (path, f"{path}-wal", f"{path}-shm") if os.path.exists(p))
        assert len(raw) > 0
        dumps = [raw, raw.lower()]
        assert b"sk-\xe2\x80\xa6" in raw  # the hint is there, so the file really holds the row
    else:
        with database.connect() as conn_:
            dumps = [
                "\n".join(row[0] for row in conn_.execute(text(f"SELECT CAST(t AS text) FROM {table.name} AS t")))
                .encode()
                for table in Base.metadata.sorted_tables
            ]
        # The rows we care about most really are there to be searched.
        assert any(b"sk-\xe2\x80\xa6" in d for d in dumps)
    for label, value in forbidden.items():
        assert not any(value in d or value.lower() in d for d in dumps), f"the {label} is in the database"


# --- logs -------------------------------------------------------------------------------------


def test_secrets_are_scrubbed_from_logs(sqlite_database, caplog):
    boss = owner()
    shaped = canary()
    shapeless = f"local{secrets.token_hex(12)}"  # no vendor shape: known only because the vault saw it
    add_connection(boss, "openai", shaped)
    connections.create_connection(boss, name="ollama", provider_type="openai-compatible",
                                  base_url="http://127.0.0.1:11434/v1", api_key=shapeless)
    header = f"Bearer tok{secrets.token_hex(10)}"
    google = "AIza" + secrets.token_hex(16)

    captured: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(self.format(record))

    handler = ListHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    child = logging.getLogger("meterbook.tests.vendor")
    logging.getLogger().addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG):
            try:
                raise RuntimeError(f"401 from vendor: Incorrect API key provided: {shaped}; saw {shapeless}")
            except RuntimeError:
                child.exception("call failed with %s and %s", Config(api_key=shapeless), header)
            child.warning("gemini url ?key=%s", google)
            logging.getLogger().error("root logger: %s", shaped)
    finally:
        logging.getLogger().removeHandler(handler)

    outputs = [caplog.text, "\n".join(captured), *(r.getMessage() for r in caplog.records)]
    for out in outputs:
        for secret in (shaped, shapeless, header.split()[1], google):
            assert secret not in out
    assert "call failed with" in caplog.text and "RuntimeError: 401 from vendor" in caplog.text
    assert caplog.text.count(redaction.REDACTED) >= 5


def test_redaction_keeps_ordinary_text():
    assert redaction.redact("Key rotation finished for 3 workspaces") == "Key rotation finished for 3 workspaces"
    assert redaction.redact("Authorization: Key 1234abcd-ffff:0123456789") == "Authorization: Key [REDACTED]"
    assert redaction.redact("x-api-key: abcdef0123456789") == "x-api-key: [REDACTED]"
    assert redaction.redact("sk-ant-api03-Abcdefgh12345678") == "[REDACTED]"
