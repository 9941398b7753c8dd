"""The id rule shared by ingestion and the service."""

import pytest

from recovery.data.ids import MAX_ID_LENGTH, check_id


@pytest.mark.parametrize("value", ["B-101", "batch 7", "Ofen-3/Linie_2", "Ø12µm", "x" * MAX_ID_LENGTH,
                                   "工場-1"])
def test_ordinary_ids_pass(value):
    assert check_id(value) is None


@pytest.mark.parametrize("value, reason", [
    ("", "is empty"),
    ("x" * (MAX_ID_LENGTH + 1), f"is {MAX_ID_LENGTH + 1} characters long"),
    ("B-101\x00", "control character U+0000 at position 6"),
    ("B-1\n", "control character U+000A"),
    ("B-\t1", "control character U+0009"),
    ("B-\u202e101", "format (invisible or bidi) character U+202E"),      # right-to-left override
    ("B-\u2067101", "U+2067"),                                            # right-to-left isolate
    ("B-1\u200d01", "U+200D"),                                            # zero-width joiner
    ("B-1\u2028", "line separator character U+2028"),
    ("B-1\ue000", "private-use character U+E000"),
    (" B-101", "leading or trailing whitespace"),
    ("B-101 ", "leading or trailing whitespace"),
    ("B-101\u00a0", "leading or trailing whitespace"),                    # no-break space
    (101, "is a int, not text"),
    (None, "is a NoneType, not text"),
])
def test_ids_that_could_pass_for_another_are_refused(value, reason):
    got = check_id(value)
    assert got is not None and reason in got, got
