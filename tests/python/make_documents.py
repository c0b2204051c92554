"""Writes the documents the ingest tests read, made by the tools people use: PDFs by fpdf2,
Word files by python-docx, HTML by hand, and the bad files a real folder has.

usage: make_documents.py OUT_DIR
"""

import sys
import zipfile
from pathlib import Path

import docx
from fpdf import FPDF

HANDBOOK_PAGES = [
    "Welcome to ACME. This handbook explains how we work together. Our offices open at eight "
    "in the morning and close at six in the evening.",
    "Expenses. Travel costs are refunded within thirty days when the receipts are attached to "
    "the claim form.",
    "Vacation. Employees may carry over at most five unused vacation days into the next "
    "calendar year. Requests for time off go to your team lead two weeks ahead.",
    "Security. Badges must be worn visibly at all times inside the building, and visitors are "
    "accompanied by their host.",
]

LEFT_COLUMN = (
    "Beekeeping basics. A hive needs a sunny place sheltered from the wind. Inspect the brood "
    "frames every week in spring and look for the queen's eggs."
)
RIGHT_COLUMN = (
    "The harbour ferry. The ferry to the island leaves every forty minutes from the north pier "
    "and the crossing takes a quarter of an hour."
)


def handbook(path: Path) -> None:
    """Four pages, each under the same running header and over a page-number footer."""
    pdf = FPDF()
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=12)
    for number, text in enumerate(HANDBOOK_PAGES, start=1):
        pdf.add_page()
        pdf.set_xy(10, 10)
        pdf.cell(0, 8, "ACME Staff Handbook")
        pdf.set_xy(10, 40)
        pdf.multi_cell(180, 7, text)
        pdf.set_xy(10, 280)
        pdf.cell(0, 8, f"Page {number} of {len(HANDBOOK_PAGES)}")
    pdf.output(str(path))


def two_columns(path: Path) -> None:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    pdf.add_page()
    pdf.set_xy(10, 20)
    pdf.multi_cell(90, 6, LEFT_COLUMN)
    pdf.set_xy(110, 20)
    pdf.multi_cell(90, 6, RIGHT_COLUMN)
    pdf.output(str(path))


def scanned(path: Path) -> None:
    """A page that is only a picture: no text layer."""
    pdf = FPDF()
    pdf.add_page()
    pdf.set_fill_color(200, 200, 200)
    pdf.rect(20, 20, 170, 240, style="F")
    pdf.output(str(path))


def encrypted(path: Path) -> None:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.cell(0, 10, "Salaries for next year.")
    pdf.set_encryption(owner_password="owner-secret", user_password="reader-secret")
    pdf.output(str(path))


def policies(path: Path) -> None:
    document = docx.Document()
    document.add_heading("Leave", level=1)
    document.add_paragraph("Everyone at ACME has the right to leave as described below.")
    document.add_heading("Sick days", level=2)
    document.add_paragraph(
        "If you are ill, call your manager before nine o'clock and send a doctor's note after "
        "three days of absence."
    )
    document.add_heading("Parental leave", level=2)
    document.add_paragraph("Parents receive sixteen weeks of paid parental leave.")
    document.add_heading("Equipment", level=1)
    table = document.add_table(rows=3, cols=3)
    for row, cells in zip(
        table.rows,
        [("Item", "Owner", "Return by"), ("Laptop", "IT desk", "last working day"), ("Phone", "Facilities", "end of month")],
    ):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    document.save(str(path))


GUIDE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Lighthouse guide</title>
<style>nav { float: left } .cookie { position: fixed }</style>
<script>window.analytics = "page viewed";</script></head>
<body>
<header><a href="/">Home</a> <a href="/about">About us</a> <a href="/prices">Prices</a></header>
<nav><ul><li><a href="/a">Sitemap</a></li><li><a href="/b">Contact form</a></li></ul></nav>
<div class="cookie-consent">We use cookies to improve your visit. <button>Accept all</button></div>
<main>
<h1>Lighthouse guide</h1>
<p>The old lighthouse on the cape is now a museum run by volunteers.</p>
<h2>Opening hours</h2>
<p>The lighthouse museum opens at ten in the morning and closes at dusk, every day but Monday.</p>
<h2>Tickets</h2>
<p>Children under twelve enter free of charge.</p>
<table><tr><th>Ticket</th><th>Price</th></tr><tr><td>Adult</td><td>8 euros</td></tr></table>
</main>
<footer>Copyright the lighthouse society. Imprint.</footer>
</body></html>
"""


def zip_bomb(path: Path) -> None:
    """A small .docx whose document part expands to 80 MiB."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", " " * (80 * 1024 * 1024))


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    handbook(out / "handbook.pdf")
    two_columns(out / "columns.pdf")
    policies(out / "policies.docx")
    (out / "guide.html").write_text(GUIDE, encoding="utf-8")
    bad = out / "bad"
    bad.mkdir(exist_ok=True)
    scanned(bad / "scanned.pdf")
    encrypted(bad / "encrypted.pdf")
    (bad / "corrupt.pdf").write_bytes((out / "handbook.pdf").read_bytes()[:400])
    zip_bomb(bad / "bomb.docx")
    (bad / "notes.pdf").write_text("These are plain notes, saved with the wrong name.\n", encoding="utf-8")
    with open(bad / "huge.html", "w", encoding="utf-8") as f:
        paragraph = "<p>" + "filler words " * 40 + "</p>\n"
        while f.tell() < 50 * 1024 * 1024:
            f.write(paragraph * 1000)


if __name__ == "__main__":
    main()
