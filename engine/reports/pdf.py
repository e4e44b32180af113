"""The whole report as a PDF (fpdf2): title, figures, text, tables and the same chart images as the email.

fpdf2's built-in fonts know only Latin-1; the DejaVu Sans that ships inside matplotlib covers
the rest (en dashes, €, names in any Latin, Greek or Cyrillic script), so no system font is needed.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib
from fpdf import FPDF
from fpdf.fonts import FontFace

from engine.reports.content import BODY_ROWS, Content, rows_of

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
PDF_TABLE_ROWS = 60


def _plain(markdown: str) -> str:
    """Markdown as readable text: the PDF shows notes, not their markup."""
    text = re.sub(r"`{1,3}", "", markdown)
    text = re.sub(r"^#{1,6}\s*", "", text, flags=re.M)
    text = re.sub(r"\*\*|__|\*|_", "", text)
    return re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text).strip()


def render_pdf(content: Content) -> bytes:
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
    pdf.set_title(content.title)
    pdf.set_creator("Meterbook")
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_font("DejaVu", "", 8)
    pdf.set_text_color(134, 142, 150)
    pdf.cell(0, 5, f"{content.workspace} · Meterbook report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(33, 37, 41)
    pdf.set_font("DejaVu", "B", 16)
    pdf.multi_cell(0, 8, content.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 9)
    pdf.multi_cell(0, 5, content.subtitle, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    for block in content.blocks:
        if block.kind == "figures":
            pdf.set_font("DejaVu", "", 9)
            with pdf.table(col_widths=(40, 35, 60), text_align="LEFT", line_height=5.5,
                           headings_style=FontFace(emphasis="BOLD")) as table:
                table.row(["Figure", "Value", "Change"])
                for f in block.figures:
                    table.row([f.label, f.value, f.change or ""])
        elif block.kind == "markdown":
            pdf.set_font("DejaVu", "", 10)
            pdf.multi_cell(0, 5, _plain(block.text), new_x="LMARGIN", new_y="NEXT")
        elif block.kind == "image":
            pdf.image(io.BytesIO(block.image.png), w=width, alt_text=block.image.alt)
        elif block.kind == "table":
            t = block.table
            pdf.set_font("DejaVu", "B", 10)
            pdf.cell(0, 6, t.title, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("DejaVu", "", 7)
            limit = max(BODY_ROWS, PDF_TABLE_ROWS)
            with pdf.table(text_align="LEFT", line_height=4, headings_style=FontFace(emphasis="BOLD")) as table:
                table.row([str(c) for c in t.shown.columns])
                for row in rows_of(t.shown, limit):
                    table.row([v[:60] for v in row])
            if t.frame.height > limit:
                pdf.set_font("DejaVu", "", 7)
                pdf.cell(0, 4, f"Showing {limit} of {t.frame.height:,} rows.", new_x="LMARGIN", new_y="NEXT")
        elif block.kind in ("caption", "error"):
            pdf.set_font("DejaVu", "", 8)
            pdf.set_text_color(201, 42, 42) if block.kind == "error" else pdf.set_text_color(134, 142, 150)
            pdf.multi_cell(0, 4.5, block.text, new_x="LMARGIN", new_y="NEXT")
            pdf.set_text_color(33, 37, 41)
        pdf.ln(3)
    return bytes(pdf.output())
