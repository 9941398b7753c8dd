"""One rule for identifiers (batch ids, part ids, bar ids as text) everywhere data enters.

Ids end up in the store, in file names the engineers open, in the service's
URLs and in quarantine files read in spreadsheets; a NUL, a right-to-left
override or a megabyte-long id is an attack or a broken export, never a batch.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_ID_LENGTH", "check_id"]

#: Longest id accepted, in characters.
MAX_ID_LENGTH = 64
# Bidirectional classes that reorder the text around them (right-to-left letters,
# embeddings, overrides, isolates): an id that displays differently from its bytes.
_BIDI = {"R", "AL", "RLE", "RLO", "LRE", "LRO", "PDF", "RLI", "LRI", "FSI", "PDI"}


def check_id(value: object) -> str | None:
    """Why ``value`` is not an acceptable id, or None when it is.

    An id is text of 1 to :data:`MAX_ID_LENGTH` characters, printable (no
    character of Unicode category C*: controls such as NUL, format characters,
    surrogates, private use, unassigned; no line or paragraph separators), with
    no right-to-left or bidirectional-control characters and no surrounding
    whitespace.

    Parameters
    ----------
    value : object
        The candidate id.

    Returns
    -------
    str or None
        A reason to show the user ("is longer than 64 characters (70)"), or None.

    Examples
    --------
    >>> check_id("B-0042") is None
    True
    >>> check_id("B-1\\x00")
    'contains the non-printable character U+0000'
    """
    if not isinstance(value, str):
        return f"is not text ({type(value).__name__})"
    if not value:
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters ({len(value)})"
    if value != value.strip():
        return "has leading or trailing whitespace"
    for ch in value:
        if unicodedata.category(ch).startswith("C") or (not ch.isprintable() and ch != " "):
            return f"contains the non-printable character U+{ord(ch):04X}"
        if unicodedata.bidirectional(ch) in _BIDI:
            return f"contains the right-to-left or bidirectional character U+{ord(ch):04X}"
    return None
