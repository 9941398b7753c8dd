"""The one rule for identifiers (batch, factory, partner, variable ids) from outside.

Ids come from partners' files and from the service's API and end up in the
store, in file names, in the web page and in the audit trail. An id that looks
like another one (``"B-101\\x00"`` or one with a right-to-left override shows
as ``B-101``) would let one batch pass for another in front of an engineer, so
both ingestion and the service refuse such ids with the reason this module
gives.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_ID_LENGTH", "check_id"]

#: Longest id accepted, in characters (the longest real batch id we know of is ~30).
MAX_ID_LENGTH = 64


def check_id(value) -> str | None:
    """Why ``value`` is not an acceptable id, or None when it is.

    An id is a non-empty string of at most :data:`MAX_ID_LENGTH` characters,
    without leading or trailing whitespace, whose characters are all printable:
    none is in a Unicode category ``C*`` (control such as NUL or newline,
    format such as the bidi overrides U+202E and U+2066..U+2069 or the
    zero-width joiner, surrogate, private use, unassigned) nor a line or
    paragraph separator.

    Parameters
    ----------
    value : object
        The candidate id (anything; only a ``str`` can pass).

    Returns
    -------
    str or None
        The reason, in words that name the offending character by its code
        point (never the character itself, which may not display), or None.

    Examples
    --------
    >>> check_id("B-101") is None
    True
    >>> check_id("B-101\\x00")
    'contains the control character U+0000 at position 6'
    >>> check_id(" B-1")
    'has leading or trailing whitespace'
    """
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not text"
    if not value:
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_ID_LENGTH})"
    for i, ch in enumerate(value, start=1):
        cat = unicodedata.category(ch)
        if cat[0] == "C" or cat in ("Zl", "Zp"):
            what = {"Cc": "control", "Cf": "format (invisible or bidi)", "Cs": "surrogate",
                    "Co": "private-use", "Cn": "unassigned", "Zl": "line separator",
                    "Zp": "paragraph separator"}[cat]
            return f"contains the {what} character U+{ord(ch):04X} at position {i}"
    if value != value.strip():
        return "has leading or trailing whitespace"
    return None
