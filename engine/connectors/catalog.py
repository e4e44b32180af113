"""The Connectors catalog (data/connectors.yaml), validated by pydantic when it is loaded.

An entry is either an MCP server (``mcp``: a stdio command or a streamable-HTTP URL, with the
credentials it needs) or an ``http_preset`` for the workflow http node (a base URL and an auth
header). A bad entry stops the load with a message naming the entry and the field, so a broken
catalog never ships half-read.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.config import PROJECT_ROOT
from engine.errors import InvalidInput

CATALOG_PATH = PROJECT_ROOT / "data" / "connectors.yaml"
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,99}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,100}$")
KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CredentialField(_Strict):
    """One value a server needs: an environment variable of the child, or a request header."""

    env: str | None = None
    header: str | None = None
    scheme: str = ""  # header only: "Bearer" sends "Bearer <value>"
    label: str
    vendor_name: str = ""  # what the vendor calls it, and where to make one
    secret: bool = True  # False: a setting, stored in the clear and usable as ${NAME} in args
    required: bool = True
    placeholder: str = ""

    @model_validator(mode="after")
    def _one_target(self) -> CredentialField:
        if (self.env is None) == (self.header is None):
            raise ValueError("give exactly one of env or header")
        if self.env is not None and not ENV_NAME.match(self.env):
            raise ValueError(f"env {self.env!r} is not an environment variable name (A-Z, 0-9, _)")
        if self.header is not None and not HEADER_NAME.match(self.header):
            raise ValueError(f"header {self.header!r} is not a header name")
        if self.header is not None and not self.secret:
            raise ValueError("a header is always a secret")
        return self

    @property
    def target(self) -> str:
        return self.env or self.header or ""


class McpServer(_Strict):
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    url: str | None = None
    credentials: list[CredentialField] = Field(default_factory=list)
    host_access: bool = False  # its purpose is this host's files, containers or browser (engine/connectors/policy.py)

    @model_validator(mode="after")
    def _shape(self) -> McpServer:
        if self.transport == "stdio":
            if not self.command or self.url:
                raise ValueError("a stdio server has a command and no url")
            settings = {c.env for c in self.credentials if c.env and not c.secret}
            for arg in self.args:
                for name in PLACEHOLDER.findall(arg):
                    if name not in settings:
                        raise ValueError(f"args use ${{{name}}}, which is not a setting (secret: false) of this entry")
        else:
            if not self.url or self.command or self.args:
                raise ValueError("an http server has a url and no command or args")
            if not re.match(r"^https?://[^/\s]+", self.url):
                raise ValueError(f"url {self.url!r} is not an http(s) URL")
            if any(c.env for c in self.credentials):
                raise ValueError("an http server takes headers, not environment variables")
            if self.host_access:
                raise ValueError("host_access is for stdio servers, which run on this host")
        targets = [c.target for c in self.credentials]
        if len(set(targets)) != len(targets):
            raise ValueError("a credential target (env or header) is listed twice")
        return self


class HttpPreset(_Strict):
    base_url: str
    header: str
    scheme: str = ""
    credential: str  # what to paste, as the vendor names it
    example: str = ""

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https://[^/\s]+", v):
            raise ValueError("base_url must be an https:// URL")
        return v

    @field_validator("header")
    @classmethod
    def _header(cls, v: str) -> str:
        if not HEADER_NAME.match(v):
            raise ValueError(f"header {v!r} is not a header name")
        return v


class Entry(_Strict):
    key: str
    name: str
    category: str
    description: str
    docs: str
    mcp: McpServer | None = None
    http_preset: HttpPreset | None = None

    @model_validator(mode="after")
    def _kind(self) -> Entry:
        if not KEY.match(self.key):
            raise ValueError(f"key {self.key!r} must be 1–40 lowercase letters, digits or dashes")
        if (self.mcp is None) == (self.http_preset is None):
            raise ValueError("an entry has exactly one of mcp or http_preset")
        if not self.docs.startswith("https://"):
            raise ValueError("docs must be an https:// link")
        return self

    @property
    def is_mcp(self) -> bool:
        return self.mcp is not None


class Catalog(_Strict):
    categories: list[str]
    connectors: list[Entry]

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        keys = [e.key for e in self.connectors]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"keys used twice: {', '.join(dupes)}")
        for e in self.connectors:
            if e.category not in self.categories:
                raise ValueError(f"entry {e.key!r}: category {e.category!r} is not one of the listed categories")
        return self

    def get(self, key: str) -> Entry:
        for e in self.connectors:
            if e.key == key:
                return e
        raise InvalidInput(f"There is no catalog entry {key!r}.")

    def search(self, text: str = "", category: str | None = None) -> list[Entry]:
        words = text.lower().split()
        found = []
        for e in self.connectors:
            if category and e.category != category:
                continue
            hay = f"{e.key} {e.name} {e.category} {e.description}".lower()
            if all(w in hay for w in words):
                found.append(e)
        return found


def parse(text: str, *, source: str = "the connectors catalog") -> Catalog:
    """A catalog from YAML text; ``InvalidInput`` names the entry and field that is wrong."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source} is not valid YAML: {exc}") from None
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "connectors" and isinstance(loc[1], int):
            try:
                where = f"entry {raw['connectors'][loc[1]].get('key', loc[1])!r}: " + ".".join(str(p) for p in loc[2:])
            except (KeyError, IndexError, TypeError, AttributeError):
                pass
        raise InvalidInput(f"{source} has a bad entry ({where}): {first['msg']}") from None


@functools.cache
def _load_cached(path: str, mtime_ns: int) -> Catalog:
    return parse(Path(path).read_text(), source=path)


def load(path: Path | None = None) -> Catalog:
    """The catalog, read again when the file changes."""
    p = Path(path or CATALOG_PATH)
    return _load_cached(str(p), p.stat().st_mtime_ns)
