"""The Assets page through AppTest: previews, filters, search, the lightbox, edits, bulk actions, paging."""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy import select

from engine import asset_library, assets, db
from engine.config import get_settings
from engine.models import Asset
from tests import pages_helpers
from tests.factories import member, owner
from tests.fakes.openai_server import PNG
from tests.pages_helpers import errors, no_exceptions

PAGE = "pages/assets.py"
open_page = partial(pages_helpers.open_page, PAGE, title="Assets")


@pytest.fixture
def boss(sqlite_database, tmp_path, monkeypatch):
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield owner()
    get_settings.cache_clear()


def make(actor, data: bytes, *, kind="image", mime="image/png", prompt=None) -> int:
    with db.transaction() as s:
        return assets.save(s, workspace_id=actor.workspace_id, data=data, mime=mime, kind=kind, provider="openai",
                           model="gpt-image-1", prompt=prompt, ledger_id=None, project_id=None,
                           user_id=actor.user_id).id


@pytest.fixture
def library(boss):
    """A picture, a sound and a text."""
    return {
        "image": make(boss, PNG, prompt="A red fox in snow"),  # a real (1×1) PNG
        "speech": make(boss, b"ID3 fake audio", kind="speech", mime="audio/mpeg", prompt="Welcome aboard"),
        "text": make(boss, b"Once upon a time there was a ledger.", kind="text", mime="text/plain",
                     prompt="Tell a story"),
    }


def labels(at) -> list[str]:
    return [m.value.replace(":material/star: ", "") for m in at.markdown if m.value.startswith(("**", ":material/star:"))]


def test_an_empty_library_says_where_assets_come_from(boss):
    at = open_page()
    assert any("No assets yet" in i.value and "Generate page" in i.value for i in at.info)


def test_the_grid_previews_each_kind_and_filters_and_search_narrow_it(boss, library):
    broken = make(boss, b"\x89PNG but cut short", prompt="Broken")
    at = open_page()
    assert labels(at) == ["**Broken**", "**Tell a story**", "**Welcome aboard**", "**A red fox in snow**"]
    assert len(at.get("image")) == 1 and len(at.get("audio")) == 1
    assert any("not a picture that can be shown" in c.value for c in at.caption)
    asset_library.delete_assets(boss, [broken])
    at.run()
    assert "Once upon a time there was a ledger." in [t.value for t in at.text]
    assert any(c.value == "Showing 3 of 3 assets." for c in at.caption)

    at.selectbox(key="assets_kind").set_value("speech").run()
    assert labels(at) == ["**Welcome aboard**"]
    at.selectbox(key="assets_kind").set_value("").run()
    at.text_input(key="assets_search").input("fox").run()
    assert labels(at) == ["**A red fox in snow**"]
    at.text_input(key="assets_search").input("nothing like this").run()
    assert any("No assets match these filters" in i.value for i in at.info)


def test_the_lightbox_renames_tags_and_favourites(boss, library):
    at = open_page()
    at.button(key=f"asset_open_{library['image']}").click().run()
    no_exceptions(at)
    assert at.subheader[0].value == "A red fox in snow"
    at.text_input(key="asset_title").input("Fox")
    at.text_area(key="asset_description").input("For the winter campaign")
    at.text_input(key="asset_tags").input("winter, animals")
    at.button(key="asset_save").click().run()
    no_exceptions(at)
    view = asset_library.get_asset(boss, library["image"])
    assert (view.title, view.description, view.tags) == ("Fox", "For the winter campaign", ("winter", "animals"))
    assert any("Asset saved." in s.value for s in at.success)

    at.selectbox(key="assets_tag").set_value("winter").run()
    assert labels(at) == ["**Fox**"]
    at.button(key=f"asset_open_{library['image']}").click().run()
    at.button(key="asset_favourite").click().run()
    assert asset_library.get_asset(boss, library["image"]).favourite


def test_delete_from_the_lightbox_asks_first_and_removes_the_file(boss, library):
    with db.read_session() as s:
        path = s.get(Asset, library["text"]).path
    at = open_page()
    at.button(key=f"asset_open_{library['text']}").click().run()
    at.button(key="asset_delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="asset_delete_cancel").click().run()
    assert asset_library.list_assets(boss).total == 3
    at.button(key="asset_delete").click().run()
    at.button(key="asset_delete_confirm").click().run()
    no_exceptions(at)
    assert asset_library.list_assets(boss).total == 2
    assert not (assets.store().root / path).exists()
    assert "**Tell a story**" not in labels(at)


def test_bulk_tag_archive_and_delete_with_confirmation(boss, library):
    at = open_page()
    at.checkbox(key=f"asset_sel_{library['image']}").check()
    at.checkbox(key=f"asset_sel_{library['speech']}").check().run()
    assert any(m.value == "**2 selected**" for m in at.markdown)
    assert at.get("download_button")[0].proto.label == "Download zip"
    at.text_input(key="assets_bulk_tag").input("launch")
    at.button(key="assets_bulk_tag_add").click().run()
    no_exceptions(at)
    assert [v.id for v in asset_library.list_assets(boss, asset_library.AssetFilter(tag="launch")).items] == [
        library["speech"], library["image"]]
    assert not at.checkbox(key=f"asset_sel_{library['image']}").value  # the selection was cleared

    at.checkbox(key=f"asset_sel_{library['text']}").check().run()
    at.button(key="assets_bulk_archive").click().run()
    assert labels(at) == ["**Welcome aboard**", "**A red fox in snow**"]
    at.toggle(key="assets_archived").set_value(True).run()
    assert labels(at) == ["**Tell a story**"]
    at.toggle(key="assets_archived").set_value(False).run()

    at.checkbox(key=f"asset_sel_{library['image']}").check().run()
    at.button(key="assets_bulk_delete").click().run()
    assert any("Delete **1 asset**" in m.value for m in at.markdown)
    at.button(key="assets_delete_confirm").click().run()
    no_exceptions(at)
    assert not errors(at)
    with db.read_session() as s:
        assert set(s.scalars(select(Asset.id))) == {library["speech"], library["text"]}


def test_load_more_brings_the_next_page(boss):
    for i in range(asset_library.PAGE_SIZE + 3):
        make(boss, b"text %d" % i, kind="text", mime="text/plain", prompt=f"note {i:02d}")
    at = open_page()
    assert len(labels(at)) == asset_library.PAGE_SIZE
    at.button(key="assets_more").click().run()
    no_exceptions(at)
    assert len(labels(at)) == asset_library.PAGE_SIZE + 3 and labels(at)[-1] == "**note 00**"
    assert not [b for b in at.button if b.key == "assets_more"]


def test_viewers_browse_and_download_but_change_nothing(boss, library):
    member(boss, "viewer@example.com", "viewer")
    at = open_page("viewer@example.com")
    at.checkbox(key=f"asset_sel_{library['image']}").check().run()
    assert not [b for b in at.button if b.key in ("assets_bulk_archive", "assets_bulk_delete", "assets_bulk_tag_add")]
    assert at.get("download_button")[0].proto.label == "Download zip"
    at.button(key=f"asset_open_{library['image']}").click().run()
    no_exceptions(at)
    assert not [b for b in at.button if b.key in ("asset_save", "asset_delete", "asset_archive")]
