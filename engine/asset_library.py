"""The asset library: finding, naming, tagging, archiving, deleting and downloading generated files.

``engine.assets`` writes the files (through the generation path); this is what people do with
them afterwards. Lists are filtered in SQL (kind, project, tag, favourite, date, search over
title, description and prompt) and paged, so a grid of thousands loads a page at a time. Files
are content-addressed, so two assets can share one file: deleting an asset removes its file
only when no other asset still points at it, and only after the rows are gone for good.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError
from sqlalchemy import ColumnElement, column, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import cast

from engine import audit, db
from engine.assets import store
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, NotFound
from engine.models import Asset, LedgerEntry, Project, User
from engine.permissions import Actor, authorize

PAGE_SIZE = 24
MAX_BULK = 500  # assets one bulk action may touch
MAX_ZIP_BYTES = 200 * 1024 * 1024  # the zip is built in memory
MAX_TAGS, MAX_TAG_LENGTH = 20, 64
MAX_TITLE, MAX_DESCRIPTION = 200, 5_000
KIND_LABELS = {"image": "Image", "speech": "Audio", "video": "Video", "text": "Text"}
THUMBNAIL, LIGHTBOX = 480, 1600  # longest side, in pixels, of a grid preview and of the large view


@dataclass(frozen=True)
class AssetView:
    id: int
    kind: str
    mime: str
    title: str | None
    description: str | None
    tags: tuple[str, ...]
    favourite: bool
    archived_at: datetime | None
    prompt: str | None
    provider: str
    model: str
    project_id: int | None
    project: str | None
    created_by: str | None
    created_at: datetime
    size_bytes: int
    extension: str  # of the stored file, like ".png"
    call_cost: Decimal | None  # the whole call that made it (one call can make several images)

    @property
    def label(self) -> str:
        """What to call it: its title, else the start of its prompt, else its kind and number."""
        if self.title:
            return self.title
        if self.prompt and self.prompt.strip():
            first = " ".join(self.prompt.split())
            return first if len(first) <= 60 else first[:59] + "…"
        return f"{KIND_LABELS.get(self.kind, self.kind.title())} #{self.id}"

    @property
    def file_name(self) -> str:
        return f"{self.id}-{_slug(self.label)}{self.extension}"


@dataclass(frozen=True)
class AssetFilter:
    kind: str | None = None
    project_id: int | None = None
    tag: str | None = None
    favourites: bool = False
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    search: str = ""
    archived: bool = False  # True: the archive instead of the library


@dataclass(frozen=True)
class AssetPage:
    items: list[AssetView]
    total: int
    offset: int

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.items) < self.total


# --- reading --------------------------------------------------------------------------------


def _has_tag(tag: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return cast(Asset.tags, JSONB).contains([tag])
    each = func.json_each(Asset.tags).table_valued("value")
    return exists(select(1).select_from(each).where(column("value") == tag))


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conditions(s: Session, actor: Actor, f: AssetFilter) -> list[ColumnElement[bool]]:
    where = [Asset.workspace_id == actor.workspace_id,
             Asset.archived_at.is_not(None) if f.archived else Asset.archived_at.is_(None)]
    if f.kind:
        where.append(Asset.kind == f.kind)
    if f.project_id is not None:
        where.append(Asset.project_id == f.project_id)
    if f.tag:
        where.append(_has_tag(f.tag, s.get_bind().dialect.name))
    if f.favourites:
        where.append(Asset.favourite.is_(True))
    if f.since is not None:
        where.append(Asset.created_at >= f.since)
    if f.until is not None:
        where.append(Asset.created_at < f.until)
    if f.search.strip():
        pattern = _like(f.search.strip())
        where.append(or_(*(func.lower(c).like(pattern, escape="\\")
                           for c in (Asset.title, Asset.description, Asset.prompt))))
    return where


def _select():
    return (select(Asset, Project.name, User.name, LedgerEntry.cost)
            .outerjoin(Project, Project.id == Asset.project_id)
            .outerjoin(User, User.id == Asset.created_by)
            .outerjoin(LedgerEntry, LedgerEntry.id == Asset.ledger_id))


def _view(a: Asset, project: str | None, user: str | None, cost: Decimal | None) -> AssetView:
    return AssetView(a.id, a.kind, a.mime, a.title, a.description, tuple(a.tags or ()), a.favourite, a.archived_at,
                     a.prompt, a.provider, a.model, a.project_id, project, user, a.created_at, a.size_bytes,
                     PurePosixPath(a.path).suffix, cost)


def list_assets(actor: Actor, filters: AssetFilter = AssetFilter(), *, offset: int = 0,
                limit: int = PAGE_SIZE) -> AssetPage:
    """One page of the library, newest first, with the total that matches."""
    if filters.since is not None and filters.until is not None and filters.since >= filters.until:
        raise InvalidInput("The start date must come before the end date.")
    offset, limit = max(0, offset), max(1, min(limit, 200))
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        where = _conditions(s, actor, filters)
        total = s.scalar(select(func.count()).select_from(Asset).where(*where))
        rows = s.execute(_select().where(*where).order_by(Asset.created_at.desc(), Asset.id.desc())
                         .offset(offset).limit(limit)).all()
    return AssetPage([_view(*r) for r in rows], total or 0, offset)


def _load(s: Session, actor: Actor, asset_id: int) -> Asset:
    a = s.get(Asset, asset_id)
    if a is None or a.workspace_id != actor.workspace_id:
        raise NotFound("That asset does not exist in this workspace (it may have been deleted).")
    return a


def get_asset(actor: Actor, asset_id: int) -> AssetView:
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        row = s.execute(_select().where(Asset.id == asset_id, Asset.workspace_id == actor.workspace_id)).first()
    if row is None:
        raise NotFound("That asset does not exist in this workspace (it may have been deleted).")
    return _view(*row)


def read_content(actor: Actor, asset_id: int) -> bytes:
    """The file's bytes, from the asset store."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        path = _load(s, actor, asset_id).path
    try:
        return store().read(path)
    except FileNotFoundError:
        raise NotFound("This asset's file is missing from storage; it can only be deleted.") from None


def picture(actor: Actor, asset_id: int, *, longest_side: int = THUMBNAIL) -> bytes | None:
    """The image scaled down to fit ``longest_side``, as PNG (if it has transparency) or JPEG.

    None when the file is not a picture that can be read: a grid must show every other card
    rather than fail on one bad file. A small preview also keeps a grid of large images quick.
    """
    data = read_content(actor, asset_id)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((longest_side, longest_side))
            alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            out = io.BytesIO()
            if alpha:
                image.save(out, format="PNG")
            else:
                image.convert("RGB").save(out, format="JPEG", quality=85)
            return out.getvalue()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return None


def tags_in_use(actor: Actor) -> list[str]:
    """Every tag on the workspace's assets, for the filter."""
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        lists = s.scalars(select(Asset.tags).where(Asset.workspace_id == actor.workspace_id)).all()
    return sorted({t for tags in lists for t in tags or ()}, key=str.lower)


# --- changing -------------------------------------------------------------------------------


def _tag(tag: str) -> str:
    tag = " ".join((tag or "").split())
    if not tag:
        raise InvalidInput("Write the tag first.")
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidInput(f"A tag is at most {MAX_TAG_LENGTH} characters.")
    return tag


def _tags(tags: Iterable[str]) -> list[str]:
    cleaned = list(dict.fromkeys(_tag(t) for t in tags if t and t.strip()))
    if len(cleaned) > MAX_TAGS:
        raise InvalidInput(f"An asset takes at most {MAX_TAGS} tags.")
    return cleaned


def _ids(asset_ids: Iterable[int]) -> list[int]:
    ids = list(dict.fromkeys(int(i) for i in asset_ids))
    if not ids:
        raise InvalidInput("Select at least one asset first.")
    if len(ids) > MAX_BULK:
        raise InvalidInput(f"Select at most {MAX_BULK} assets at a time.")
    return ids


def _load_many(s: Session, actor: Actor, ids: list[int], *, lock: bool = False) -> list[Asset]:
    query = select(Asset).where(Asset.id.in_(ids), Asset.workspace_id == actor.workspace_id).order_by(Asset.id)
    found = list(s.scalars(query.with_for_update() if lock else query))
    if len(found) != len(ids):
        raise NotFound("Some of the selected assets no longer exist (someone may have deleted them). "
                       "Refresh the page and select again.")
    return found


def edit_asset(actor: Actor, asset_id: int, *, title: str, description: str, tags: Iterable[str]) -> AssetView:
    """Rename, describe and tag; an empty title falls back to the prompt in lists."""
    title, description = " ".join((title or "").split()), (description or "").strip()
    if len(title) > MAX_TITLE:
        raise InvalidInput(f"A title is at most {MAX_TITLE} characters.")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"A description is at most {MAX_DESCRIPTION:,} characters.")
    cleaned = _tags(tags)
    with db.transaction() as s:
        authorize(s, actor, "asset.write")
        a = _load(s, actor, asset_id)
        a.title, a.description, a.tags = title or None, description or None, cleaned
    return get_asset(actor, asset_id)


def set_favourite(actor: Actor, asset_id: int, favourite: bool) -> None:
    with db.transaction() as s:
        authorize(s, actor, "asset.write")
        _load(s, actor, asset_id).favourite = bool(favourite)


def tag_assets(actor: Actor, asset_ids: Iterable[int], tag: str) -> int:
    """Add one tag to every selected asset; returns how many gained it."""
    ids, tag = _ids(asset_ids), _tag(tag)
    added = 0
    with db.transaction() as s:
        authorize(s, actor, "asset.write")
        for a in _load_many(s, actor, ids, lock=True):
            if tag in (a.tags or []):
                continue
            if len(a.tags or []) >= MAX_TAGS:
                raise InvalidInput(f"Asset #{a.id} already has {MAX_TAGS} tags; "
                                   "remove one from it first.")
            a.tags = [*(a.tags or []), tag]
            added += 1
    return added


def set_archived(actor: Actor, asset_ids: Iterable[int], archived: bool) -> int:
    """Archive (hide from the library, keep the file) or bring back; returns how many changed."""
    ids = _ids(asset_ids)
    with db.transaction() as s:
        authorize(s, actor, "asset.write")
        _load_many(s, actor, ids)
        changed = Asset.archived_at.is_(None) if archived else Asset.archived_at.is_not(None)
        return s.execute(update(Asset).where(Asset.id.in_(ids), changed)
                         .values(archived_at=utcnow() if archived else None)).rowcount


def delete_assets(actor: Actor, asset_ids: Iterable[int]) -> int:
    """Delete the rows, then every file no other asset still uses. Returns how many were deleted."""
    ids = _ids(asset_ids)
    with db.transaction() as s:
        authorize(s, actor, "asset.write")
        doomed = _load_many(s, actor, ids, lock=True)
        paths = {a.path for a in doomed}
        for a in doomed:
            audit.record_for(s, actor, "asset.deleted", "asset", a.id, kind=a.kind, title=a.title)
            s.delete(a)
        s.flush()
        shared = set(s.scalars(select(Asset.path).where(Asset.path.in_(paths))))
    # Only once the rows are gone for good: a rolled-back delete must still find its files.
    for path in paths - shared:
        store().delete(path)
    return len(ids)


# --- downloading ----------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "asset"


def zip_assets(actor: Actor, asset_ids: Iterable[int]) -> bytes:
    """The selected files in one zip, with a manifest.csv of what each one is. Built in memory."""
    ids = _ids(asset_ids)
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        found = _load_many(s, actor, ids)
        rows = {r[0].id: _view(*r) for r in s.execute(_select().where(Asset.id.in_(ids))).all()}
    if sum(a.size_bytes for a in found) > MAX_ZIP_BYTES:
        raise InvalidInput(f"Those files come to more than {MAX_ZIP_BYTES // 1024 // 1024} MB; "
                           "download them in smaller groups.")
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(["file", "id", "title", "description", "tags", "kind", "model", "prompt", "created_at"])
    out = io.BytesIO()
    # Images, audio and video are compressed already; deflating them again only costs time.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for a in found:
            v = rows[a.id]
            name = v.file_name
            try:
                z.writestr(name, store().read(a.path))
            except FileNotFoundError:
                name = "(file missing from storage)"
            writer.writerow([name, a.id, v.title or "", v.description or "", "; ".join(v.tags), a.kind,
                             f"{a.provider}/{a.model}", v.prompt or "", a.created_at.isoformat()])
        z.writestr("manifest.csv", manifest.getvalue())
    return out.getvalue()
