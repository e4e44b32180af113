"""The email a report sends, built from its content: HTML with inline chart images, a text part, attachments.

Structure (what every client understands, and what Gmail and Outlook show as one message with
pictures in place and files attached):

    multipart/mixed
    ├── multipart/alternative
    │   ├── text/plain                the figures and tables' titles, for clients without HTML
    │   └── multipart/related
    │       ├── text/html             <img src="cid:…"> for each chart
    │       └── image/png × n         Content-ID: <…>, Content-Disposition: inline
    └── text/csv × tables, one .xlsx workbook (a sheet per table), application/pdf — as chosen

``build`` makes the message; ``preview_html`` is the same HTML with each ``cid:`` replaced by the
image itself (a data: URI), which is how a page can show it before it is sent.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import cache

import polars as pl
import xlsxwriter
from jinja2 import Environment, PackageLoader, select_autoescape

from engine.reports.content import Content, rows_of

MIME = {"csv": "text/csv", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pdf": "application/pdf"}


@dataclass(frozen=True)
class Attachment:
    filename: str
    mime: str
    data: bytes


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str  # as sent: images as cid: references
    text: str
    images: dict[str, bytes]  # cid (without <>) → PNG
    attachments: tuple[Attachment, ...]

    def preview_html(self) -> str:
        """The HTML as a browser shows it without the message around it: each cid: image inlined."""
        def inline(match: re.Match) -> str:
            png = self.images.get(match.group(1))
            return f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' if png else match.group(0)

        return re.sub(r'src="cid:([^"]+)"', inline, self.html)


@cache
def _templates() -> Environment:
    return Environment(loader=PackageLoader("engine.reports", "templates"), autoescape=select_autoescape(["html", "j2"]))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "report"


def _flat(frame: pl.DataFrame, for_excel: bool) -> pl.DataFrame:
    """A frame a CSV or a sheet can hold: lists joined, nested values as text, times without zones in Excel."""
    out = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.List):
            out.append(col.cast(pl.List(pl.String)).list.join(", "))
        elif isinstance(dtype, (pl.Struct, pl.Object, pl.Array)):
            out.append(col.map_elements(str, return_dtype=pl.String))
        elif for_excel and isinstance(dtype, pl.Datetime) and dtype.time_zone:
            out.append(col.dt.replace_time_zone(None))  # Excel has no zones: wall-clock times, as shown
        else:
            out.append(col)
    return frame.select(out)


def csv_bytes(frame: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    _flat(frame, False).write_csv(out)
    return out.getvalue()


def xlsx_bytes(content: Content) -> bytes:
    out = io.BytesIO()
    with xlsxwriter.Workbook(out, {"in_memory": True}) as book:
        used: set[str] = set()
        for table in content.tables:
            sheet = re.sub(r"[\[\]:*?/\\]", " ", table.title)[:31] or table.name[:31]
            while sheet in used:
                sheet = sheet[:28] + f"~{len(used)}"
            used.add(sheet)
            _flat(table.frame, True).write_excel(book, worksheet=sheet, autofit=True)
    return out.getvalue()


def attachments(content: Content, formats: list[str], stem: str) -> tuple[Attachment, ...]:
    files = []
    if "csv" in formats:
        files += [Attachment(f"{stem}-{t.name}.csv", MIME["csv"], csv_bytes(t.frame)) for t in content.tables]
    if "xlsx" in formats and content.tables:
        files.append(Attachment(f"{stem}.xlsx", MIME["xlsx"], xlsx_bytes(content)))
    if "pdf" in formats:
        from engine.reports.pdf import render_pdf  # fpdf2 loads fonts: only when a PDF is wanted

        files.append(Attachment(f"{stem}.pdf", MIME["pdf"], render_pdf(content)))
    return tuple(files)


def _text(content: Content) -> str:
    lines = [content.title, content.subtitle, ""]
    for block in content.blocks:
        if block.kind == "figures":
            lines += [f"{f.label}: {f.value}" + (f" ({f.change})" if f.change else "") for f in block.figures]
        elif block.kind == "markdown":
            lines.append(block.text)
        elif block.kind == "table":
            lines.append(f"{block.table.title}: {block.table.frame.height:,} rows")
            lines += ["  " + " | ".join(row) for row in rows_of(block.table.shown, 10)]
        elif block.kind == "image":
            lines.append(f"[chart: {block.image.alt}]")
        elif block.kind in ("error", "caption"):
            lines.append(block.text)
        lines.append("")
    return "\n".join(lines)


def render(content: Content, formats: list[str], *, link: str | None = None, when: datetime | None = None) -> Rendered:
    stamp = f"{when:%Y-%m-%d}" if when else ""
    stem = "-".join(filter(None, [slug(content.title), stamp]))
    files = attachments(content, formats, stem)
    cids = {image.name: f"{image.name}@meterbook.report" for image in content.images}
    html = _templates().get_template("report_email.html.j2").render(
        content=content, cids=cids, rows=rows_of, attachments=[f.filename for f in files], link=link)
    subject = f"{content.title} · {stamp}" if stamp else content.title
    return Rendered(subject, html, _text(content), {cids[i.name]: i.png for i in content.images}, files)


def build(rendered: Rendered, *, sender: str, to: list[str], extra_headers: dict[str, str] | None = None) -> EmailMessage:
    """The MIME message (structure in the module docstring); its Message-ID is new each time."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = rendered.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "meterbook.local")
    for name, value in (extra_headers or {}).items():
        msg[name] = value
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    if rendered.images:
        html_part = msg.get_payload()[1]
        for cid, png in rendered.images.items():
            html_part.add_related(png, maintype="image", subtype="png", cid=f"<{cid}>",
                                  filename=cid.partition("@")[0] + ".png", disposition="inline")
    for file in rendered.attachments:
        maintype, subtype = file.mime.split("/")
        msg.add_attachment(file.data, maintype=maintype, subtype=subtype, filename=file.filename)
    return msg
