"""What a file's first bytes say it is: text in which encoding, XML in which encoding, or
not text at all.

The corpus jobs read what users have: books in UTF-8, UTF-16 or Windows-1252, dumps
re-saved as UTF-16 or declared ISO-8859-1, and stray files beside them (an image, a
gzip, an HTML page). Each job looks at a file's first block before reading it: an
encoding it says (a byte order mark, XML's declaration) is used, and a file that is not
text is skipped, counted and logged by the job.
"""

from __future__ import annotations

import codecs
import re

HEAD_BYTES = 8192  # the first block a file is judged by

# Longest first: UTF-32 LE's mark begins with UTF-16 LE's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# XML 1.0 appendix F: a document's first "<" (or "<?") without a byte order mark.
_XML_STARTS = (
    (b"<\0\0\0", "utf-32-le"),
    (b"\0\0\0<", "utf-32-be"),
    (b"<\0?\0", "utf-16-le"),
    (b"\0<\0?", "utf-16-be"),
)
_XML_DECLARATION = re.compile(rb"^\s*<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]*)[\"']")

# Formats that are often found beside text files, by their magic numbers.
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"%PDF-", "PDF"),
    (b"\x7fELF", "ELF executable"),
)
# Bytes that plain text does not hold: the C0 controls but tab, newline, form feed,
# carriage return and escape.
_CONTROL = bytes(b for b in range(32) if b not in b"\t\n\f\r\x1b") + b"\x7f"
MAX_CONTROL_SHARE = 0.01

# Text that begins like this is a markup page, not prose.
_MARKUP_START = re.compile(r"^\s*<(!doctype\s+html|html\b|\?xml\b|!--)", re.I)

# The error handler ``MARK``: an undecodable byte sequence becomes ``UNDECODABLE`` (a lone
# surrogate, which no strict decoder yields), so that a reader can count where it was;
# encoding it to UTF-8 gives the byte 0xFF, which no UTF-8 holds.
MARK = "bertflow.mark"
UNDECODABLE = "\udcff"


def _mark(error: UnicodeError):
    if isinstance(error, UnicodeDecodeError):
        return UNDECODABLE, error.end
    if isinstance(error, UnicodeEncodeError) and set(error.object[error.start : error.end]) == {UNDECODABLE}:
        return b"\xff" * (error.end - error.start), error.end
    raise error


codecs.register_error(MARK, _mark)


def codec_name(name: str) -> str | None:
    """Python's name of the encoding ``name`` (``ISO-8859-1`` -> ``iso8859-1``), or None
    when Python does not know it."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def ascii_compatible(encoding: str) -> bool:
    """Whether ASCII text is the same bytes in ``encoding``, so that lines and tags can be
    found by their ASCII bytes (not in UTF-16/32 or EBCDIC)."""
    probe = "<page></page>\n\r\t azAZ09"
    try:
        return probe.encode(encoding) == probe.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def bom_encoding(head: bytes) -> str | None:
    """The encoding a byte order mark at the start of ``head`` names, or None."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return None


def xml_encoding(head: bytes) -> tuple[str, str]:
    """(encoding, what said so) of an XML document from its first bytes: a byte order mark,
    then the first ``<`` in UTF-16/32, then ``<?xml ... encoding="..."?>``, then UTF-8 (the
    default XML gives). The declared name is returned as written when Python does not know
    it (the caller decides)."""
    name = bom_encoding(head)
    if name:
        return name, "byte order mark"
    for start, name in _XML_STARTS:
        if head.startswith(start):
            return name, "first bytes"
    m = _XML_DECLARATION.match(head)
    if m:
        declared = m.group(1).decode("ascii")
        name = codec_name(declared)
        if name is None:
            return declared, "declaration"
        # A declaration of UTF-16/32 in bytes that are 8-bit: the bytes win.
        return (name if ascii_compatible(name) else "utf-8"), "declaration"
    return "utf-8", "default"


def not_text(head: bytes) -> str | None:
    """Why a file whose first bytes are ``head`` is not text (``"gzip"``, ``"PNG image"``,
    ``"binary: NUL bytes"``), or None. A file with a byte order mark is text."""
    if bom_encoding(head):
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if b"\0" in head:
        return "binary (NUL bytes)"
    controls = sum(head.count(b) for b in _CONTROL)
    if head and controls > MAX_CONTROL_SHARE * len(head):
        return "binary (control bytes)"
    return None


def is_markup(text: str) -> bool:
    """Whether decoded text begins as an HTML or XML page does."""
    return bool(_MARKUP_START.match(text.lstrip("\ufeff")))
