#!/usr/bin/env python3
"""Renders a one-article SQuAD 2.0 file as a PDF with one paragraph per page (fpdf2), for
comparing retrieval from PDFs with retrieval from text (`lore eval --document`).

usage: scripts/squad_pdf.py SQUAD.json OUT.pdf   (with the venv's python: fpdf2 is there
after scripts/setup --test-models)
"""

import json
import sys

from fpdf import FPDF


def main() -> None:
    squad, out = sys.argv[1], sys.argv[2]
    article = json.load(open(squad, encoding="utf-8"))["data"][0]
    pdf = FPDF()
    # The core fonts speak Latin-1; a few SQuAD paragraphs have other characters.
    pdf.set_font("Helvetica", size=11)
    for paragraph in article["paragraphs"]:
        pdf.add_page()
        text = paragraph["context"].strip().replace("\u2013", "-").replace("\u2014", "-")
        text = text.encode("latin-1", "replace").decode("latin-1")
        pdf.multi_cell(0, 6, text)
    pdf.output(out)


if __name__ == "__main__":
    main()
