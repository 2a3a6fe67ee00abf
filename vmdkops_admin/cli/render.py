"""Rendering in one place. Listings are records (dicts of plain values: sizes
in MB, ``None`` for unlimited) plus the columns to show; messages are text.

- ``table``: the original's layout (tabulate ``simple``, no minimum padding);
- ``xml``: the original's esxcli document (an empty listing is an empty list);
- ``json``: the records as a list of objects with snake_case keys (stable);
- ``csv``: the same keys as header, one line a record, empty for ``None``.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import click

FORMATS = ("table", "json", "csv", "xml")
ESXCLI_NS = "http://www.vmware.com/Products/ESX/6.0/esxcli/"


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    text: Optional[Callable] = None  # record value -> table text; default str()

    def display(self, record):
        value = record[self.key]
        if self.text is not None:
            return self.text(value)
        return "" if value is None else str(value)


def output_format(ctx=None):
    ctx = ctx or click.get_current_context()
    while ctx is not None:
        fmt = ctx.params.get("output_format")
        if fmt:
            return fmt
        ctx = ctx.parent
    return "table"


def emit_message(lines):
    """Print a command's success text (one or more lines)."""
    text = "\n".join(lines) if isinstance(lines, (list, tuple)) else lines
    fmt = output_format()
    if fmt == "xml":
        click.echo(_xml_document(lambda doc, out: _xml_text(doc, out, "string", text)))
    elif fmt == "json":
        import json

        click.echo(json.dumps({"message": text}))
    elif text:
        click.echo(text)


def emit_records(columns, records):
    fmt = output_format()
    if fmt == "json":
        import json

        click.echo(json.dumps([{c.key: r[c.key] for c in columns} for r in records], indent=2))
    elif fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for record in records:
            writer.writerow([_csv_cell(record[c.key]) for c in columns])
        click.echo(out.getvalue(), nl=False)
    elif fmt == "xml":
        click.echo(_xml_table(columns, records))
    else:
        click.echo(table([c.header for c in columns],
                         [[c.display(r) for c in columns] for r in records]))


def table(headers, rows):
    import tabulate

    # With the default padding every column would widen by 2 and scripts that
    # cut the original's two-space gaps would break.
    tabulate.MIN_PADDING = 0
    return tabulate.tabulate(rows, headers=headers, tablefmt="simple",
                             disable_numparse=True, stralign="left")


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(item["name"] if isinstance(item, dict) else str(item) for item in value)
    return value


def _xml_document(fill):
    from xml.dom import minidom

    doc = minidom.Document()
    out = doc.createElementNS(ESXCLI_NS, "output")
    out.setAttribute("xmlns", ESXCLI_NS)
    doc.appendChild(out)
    fill(doc, out)
    return doc.toprettyxml(indent="\t").rstrip("\n")


def _xml_text(doc, parent, tag, text):
    element = doc.createElement(tag)
    element.appendChild(doc.createTextNode(text))
    parent.appendChild(element)


def _xml_table(columns, records):
    def fill(doc, out):
        listing = doc.createElement("list")
        listing.setAttribute("type", "structure")
        out.appendChild(listing)
        for record in records:
            structure = doc.createElement("structure")
            structure.setAttribute("typeName", "vdvs")
            listing.appendChild(structure)
            for column in columns:
                field = doc.createElement("field")
                field.setAttribute("name", column.header)
                _xml_text(doc, field, "string", column.display(record))
                structure.appendChild(field)
    return _xml_document(fill)
