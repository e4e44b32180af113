"""The asset library: filters, search, paging, naming and tagging, archiving, deleting files, zips."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from engine import accounts, asset_library, assets, db, projects, usage
from engine.asset_library import AssetFilter
from engine.dbtypes import utcnow
from engine.errors import InvalidInput, NotFound, PermissionDenied
from engine.models import Asset, AuditEvent
from engine.permissions import Actor
from tests.factories import PASSWORD, member, owner

PNG = b"\x89PNG\r\n\x1a\n fake picture %d"


@pytest.fixture
def ws(database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    from engine.config import get_settings

    get_settings.cache_clear()
    yield owner()
    get_settings.cache_clear()


def make(actor, data: bytes, *, kind="image", mime="image/png", prompt=None, project_id=None, cost=None,
         days_ago: int = 0) -> int:
    with db.transaction() as s:
        ledger_id = None
        if cost is not None:
            ledger_id = usage.record(s, workspace_id=actor.workspace_id, provider="openai", model="gpt-image-1",
                                     kind=kind, cost=cost).id
        a = assets.save(s, workspace_id=actor.workspace_id, data=data, mime=mime, kind=kind, provider="openai",
                        model="gpt-image-1", prompt=prompt, ledger_id=ledger_id, project_id=project_id,
                        user_id=actor.user_id)
        if days_ago:
            a.created_at = utcnow() - timedelta(days=days_ago)
        return a.id


def ids(page) -> list[int]:
    return [a.id for a in page.items]


def test_filters_search_and_paging(ws):
    project = projects.create_project(ws, name="Launch")
    cat = make(ws, PNG % 1, prompt="A cat on a sofa", project_id=project.id, cost=Decimal("0.04"))
    dog = make(ws, PNG % 2, prompt="A dog in 100% wool", days_ago=10)
    song = make(ws, b"ID3 fake mp3", kind="speech", mime="audio/mpeg", prompt="Read the intro")
    essay = make(ws, b"A long essay.", kind="text", mime="text/plain", prompt="Write an essay")

    everything = asset_library.list_assets(ws)
    assert ids(everything) == [essay, song, cat, dog] and everything.total == 4 and not everything.has_more
    assert ids(asset_library.list_assets(ws, AssetFilter(kind="speech"))) == [song]
    assert ids(asset_library.list_assets(ws, AssetFilter(project_id=project.id))) == [cat]
    assert ids(asset_library.list_assets(ws, AssetFilter(search="CAT"))) == [cat]
    assert ids(asset_library.list_assets(ws, AssetFilter(search="100%"))) == [dog]  # % is a character, not a wildcard
    assert ids(asset_library.list_assets(ws, AssetFilter(search="_"))) == []
    recent = AssetFilter(since=utcnow() - timedelta(days=2), until=utcnow() + timedelta(days=1))
    assert dog not in ids(asset_library.list_assets(ws, recent))
    with pytest.raises(InvalidInput, match="start date must come before"):
        asset_library.list_assets(ws, AssetFilter(since=utcnow(), until=utcnow() - timedelta(days=1)))

    first = asset_library.list_assets(ws, limit=3)
    second = asset_library.list_assets(ws, offset=3, limit=3)
    assert first.has_more and not second.has_more and ids(first) + ids(second) == ids(everything)

    view = asset_library.get_asset(ws, cat)
    assert view.call_cost == Decimal("0.04") and view.project == "Launch" and view.label == "A cat on a sofa"
    assert view.file_name == f"{cat}-a-cat-on-a-sofa.png"
    assert asset_library.read_content(ws, song) == b"ID3 fake mp3"


def test_rename_describe_tag_favourite_and_find_by_them(ws):
    a = make(ws, PNG % 1, prompt="sunset")
    b = make(ws, PNG % 2, prompt="sunrise")
    view = asset_library.edit_asset(ws, a, title="  Hero   image ", description="For the landing page",
                                    tags=["web", " hero ", "web", ""])
    assert (view.title, view.description, view.tags, view.label) == (
        "Hero image", "For the landing page", ("web", "hero"), "Hero image")
    assert ids(asset_library.list_assets(ws, AssetFilter(search="landing"))) == [a]
    assert ids(asset_library.list_assets(ws, AssetFilter(tag="hero"))) == [a]
    assert ids(asset_library.list_assets(ws, AssetFilter(tag="her"))) == []  # a whole tag, not a part of one

    asset_library.set_favourite(ws, b, True)
    assert ids(asset_library.list_assets(ws, AssetFilter(favourites=True))) == [b]

    assert asset_library.tag_assets(ws, [a, b], "web") == 1  # a had it already
    assert ids(asset_library.list_assets(ws, AssetFilter(tag="web"))) == [b, a]
    assert asset_library.tags_in_use(ws) == ["hero", "web"]
    for bad, message in [(dict(title="x" * 201), "at most 200"), (dict(tags=["t" * 65]), "at most 64"),
                         (dict(tags=[f"t{i}" for i in range(21)]), "at most 20 tags")]:
        with pytest.raises(InvalidInput, match=message):
            asset_library.edit_asset(ws, a, **{"title": "", "description": "", "tags": [], **bad})


def test_archive_hides_from_the_library_and_restore_brings_back(ws):
    a, b = make(ws, PNG % 1), make(ws, PNG % 2)
    assert asset_library.set_archived(ws, [a, b], True) == 2
    assert asset_library.set_archived(ws, [a], True) == 0
    assert asset_library.list_assets(ws).total == 0
    assert ids(asset_library.list_assets(ws, AssetFilter(archived=True))) == [b, a]
    assert asset_library.set_archived(ws, [a], False) == 1
    assert ids(asset_library.list_assets(ws)) == [a]


def test_delete_removes_the_file_unless_another_asset_shares_it(ws):
    same = PNG % 7  # content-addressed: both rows point at one file
    first, second = make(ws, same), make(ws, same)
    other = make(ws, PNG % 8)
    with db.read_session() as s:
        paths = {a.id: a.path for a in s.scalars(select(Asset))}
    root = assets.store().root
    assert paths[first] == paths[second]

    assert asset_library.delete_assets(ws, [first, other]) == 2
    assert (root / paths[second]).exists() and not (root / paths[other]).exists()
    assert asset_library.read_content(ws, second) == same
    asset_library.delete_assets(ws, [second])
    assert not (root / paths[second]).exists()
    with db.read_session() as s:
        assert s.scalars(select(AuditEvent.object_id).where(AuditEvent.action == "asset.deleted")).all() == [
            str(first), str(other), str(second)]
    with pytest.raises(NotFound):
        asset_library.get_asset(ws, first)


def test_bulk_actions_refuse_missing_or_foreign_assets_and_change_nothing(ws):
    mine = make(ws, PNG % 1)
    user = accounts.create_user("other@example.com", "Otto Other", PASSWORD)
    stranger = Actor(user.id, accounts.create_workspace(user.id, "Other Co").id)
    theirs = make(stranger, PNG % 2)
    with pytest.raises(NotFound, match="no longer exist"):
        asset_library.delete_assets(ws, [mine, theirs])
    with pytest.raises(NotFound):
        asset_library.read_content(ws, theirs)
    with pytest.raises(InvalidInput, match="Select at least one"):
        asset_library.tag_assets(ws, [], "x")
    with pytest.raises(InvalidInput, match="at most 500"):
        asset_library.set_archived(ws, range(1, 502), True)
    assert asset_library.list_assets(ws).total == 1 and asset_library.list_assets(stranger).total == 1


def test_viewers_browse_and_download_but_change_nothing(ws):
    viewer = member(ws, "viewer@example.com", "viewer")
    a = make(ws, PNG % 1)
    assert ids(asset_library.list_assets(viewer)) == [a]
    assert zipfile.ZipFile(io.BytesIO(asset_library.zip_assets(viewer, [a]))).namelist()
    for change in (lambda: asset_library.edit_asset(viewer, a, title="x", description="", tags=[]),
                   lambda: asset_library.set_favourite(viewer, a, True),
                   lambda: asset_library.set_archived(viewer, [a], True),
                   lambda: asset_library.delete_assets(viewer, [a])):
        with pytest.raises(PermissionDenied, match="rename, tag, archive or delete assets"):
            change()
    assert asset_library.read_content(ws, a) == PNG % 1


def test_a_zip_holds_the_files_and_a_manifest(ws):
    a = make(ws, PNG % 1, prompt="A cat")
    b = make(ws, b"Some text", kind="text", mime="text/plain", prompt="Write")
    gone = make(ws, PNG % 3)
    with db.read_session() as s:
        assets.store().delete(s.get(Asset, gone).path)
    asset_library.edit_asset(ws, a, title="Cat", description="cute", tags=["pets"])
    z = zipfile.ZipFile(io.BytesIO(asset_library.zip_assets(ws, [a, b, gone])))
    assert sorted(z.namelist()) == sorted([f"{a}-cat.png", f"{b}-write.txt", "manifest.csv"])
    assert z.read(f"{a}-cat.png") == PNG % 1 and z.read(f"{b}-write.txt") == b"Some text"
    manifest = list(csv.DictReader(io.StringIO(z.read("manifest.csv").decode())))
    assert [(m["file"], m["title"], m["tags"]) for m in manifest] == [
        (f"{a}-cat.png", "Cat", "pets"), (f"{b}-write.txt", "", ""), ("(file missing from storage)", "", "")]
    with db.transaction() as s:
        s.execute(update(Asset).where(Asset.id == a).values(size_bytes=asset_library.MAX_ZIP_BYTES + 1))
    with pytest.raises(InvalidInput, match="smaller groups"):
        asset_library.zip_assets(ws, [a])


def test_pictures_are_scaled_for_the_grid_and_unreadable_ones_say_so(ws):
    from PIL import Image

    big = io.BytesIO()
    Image.new("RGB", (2000, 1000), "red").save(big, format="PNG")
    photo, broken = make(ws, big.getvalue()), make(ws, b"not a picture at all")
    thumb = Image.open(io.BytesIO(asset_library.picture(ws, photo)))
    assert thumb.size == (asset_library.THUMBNAIL, asset_library.THUMBNAIL // 2) and thumb.format == "JPEG"
    assert Image.open(io.BytesIO(asset_library.picture(ws, photo, longest_side=100))).size == (100, 50)
    assert asset_library.picture(ws, broken) is None
