"""Generated files: bytes under the assets directory, one ``assets`` row each.

``LocalStore`` is the only store today; anything with ``put``/``read``/``delete`` over a
relative key (an S3-compatible bucket, say) can take its place.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from pathlib import Path

from sqlalchemy.orm import Session

from engine.config import get_settings
from engine.dbtypes import utcnow
from engine.models import Asset

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
