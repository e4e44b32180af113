"""Counting a prompt's tokens before the call, for estimates: exact for OpenAI models, approximate elsewhere.

OpenAI's BPE files ship in ``data/tokenizers`` (the machines Meterbook runs on may have no
internet, and tiktoken would otherwise download them on first use). They are installed into
tiktoken's own cache under the names tiktoken looks for, so tiktoken checks them against the
hashes it expects before using them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tiktoken

from engine.config import PROJECT_ROOT
from providers.base import Request, tools_text

TOKENIZERS = PROJECT_ROOT / "data" / "tokenizers"
ENCODINGS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
# OpenAI's chat format: every message costs a few tokens of framing, and the reply is primed.
PER_MESSAGE, REPLY_PRIMING = 3, 3
EXACT_FOR = {"openai"}


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    exact: bool  # False: an approximation with OpenAI's tokenizer, for a vendor whose own we lack


def _install_vendored_encodings() -> None:
    cache = os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(tempfile.gettempdir(), "meterbook-tiktoken"))
    Path(cache).mkdir(parents=True, exist_ok=True)
    for name, url in ENCODINGS.items():
        target = Path(cache) / hashlib.sha1(url.encode()).hexdigest()
        if not target.exists():
            data = gzip.decompress((TOKENIZERS / f"{name}.tiktoken.gz").read_bytes())
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)


@lru_cache(maxsize=4)
def encoding(name: str) -> tiktoken.Encoding:
    _install_vendored_encodings()
    return tiktoken.get_encoding(name)


def encoding_for(model: str) -> tiktoken.Encoding:
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        name = "o200k_base"  # every OpenAI model since gpt-4o
    return encoding(name if name in ENCODINGS else "o200k_base")


def count(text: str, model: str = "gpt-4o") -> int:
    return len(encoding_for(model).encode(text, disallowed_special=()))


def count_request(req: Request, vendor: str) -> TokenCount:
    """The prompt tokens of a text request, with the chat framing OpenAI adds.

    ``vendor`` is whose model it is (the catalog provider): only OpenAI's count is exact.
    """
    enc = encoding_for(req.model)
    texts = [req.system or "", *(m.text_for_count() for m in req.messages)] if req.messages else [req.system or "", req.prompt]
    texts = [t for t in texts if t] + ([tools_text(req.tools)] if req.tools else [])
    tokens = sum(len(enc.encode(t, disallowed_special=())) + PER_MESSAGE for t in texts) + REPLY_PRIMING
    return TokenCount(tokens, exact=vendor in EXACT_FOR)
