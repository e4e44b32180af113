"""Generated files: bytes under the assets directory, one ``assets`` row each.

``LocalStore`` is the only store today; anything with ``put``/``read``/``delete`` over a
relative key (an S3-compatible bucket, say) can take its place.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import db
from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, NotFound
from engine.models import Asset, LedgerEntry
from engine.permissions import Actor, authorize

EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "audio/mpeg": ".mp3",
              "audio/wav": ".wav", "video/mp4": ".mp4", "text/plain": ".txt"}


class LocalStore:
    def __init__(self, root: Path | None = None):
        self.root = root or get_settings().data_dir / "assets"

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a reader never sees half a file

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


def store() -> LocalStore:
    return LocalStore()


def save(session: Session, *, workspace_id: int, data: bytes, mime: str, kind: str, provider: str, model: str,
         prompt: str | None, ledger_id: int | None, project_id: int | None, user_id: int | None) -> Asset:
    """Write the bytes (content-addressed, so a retry writes the same file) and their row."""
    digest = hashlib.sha256(data).hexdigest()
    now = utcnow()
    ext = EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ".bin"
    key = f"{workspace_id}/{now:%Y/%m}/{digest[:32]}{ext}"
    store().put(key, data)
    asset = Asset(workspace_id=workspace_id, ledger_id=ledger_id, project_id=project_id, created_by=user_id,
                  kind=kind, mime=mime, path=key, size_bytes=len(data), sha256=digest, provider=provider,
                  model=model, prompt=prompt, created_at=now)
    session.add(asset)
    session.flush()
    return asset


def save_text(actor: Actor, ledger_id: int, text: str, prompt: str | None) -> int:
    """Keep a text answer as an asset of the call that made it (media calls save theirs themselves).

    Saving the same call again returns the asset already saved.
    """
    with db.transaction() as s:
        authorize(s, actor, "generate")
        entry = s.get(LedgerEntry, ledger_id)
        if entry is None or entry.workspace_id != actor.workspace_id or entry.user_id != actor.user_id:
            raise NotFound("That call is not one of yours in this workspace.")
        if entry.kind != "text" or entry.status != "ok" or not text:
            raise InvalidInput("Only a finished text answer can be saved as a text asset.")
        existing = s.scalar(select(Asset.id).where(Asset.workspace_id == actor.workspace_id,
                                                   Asset.ledger_id == ledger_id))
        if existing is not None:
            return existing
        return save(s, workspace_id=actor.workspace_id, data=text.encode(), mime="text/plain", kind="text",
                    provider=entry.provider, model=entry.model, prompt=prompt, ledger_id=ledger_id,
                    project_id=entry.project_id, user_id=actor.user_id).id
