"""The error tree's status codes."""

from __future__ import annotations

from utwin.errors import Code, code_of


def test_code_of_names_every_known_number() -> None:
    """Each status number of the table gives its own Code."""
    assert list(Code) == [code_of(code.value) for code in Code]


def test_code_of_an_unknown_number_is_unknown() -> None:
    """A number outside the table (as a newer peer may send) reads as UNKNOWN, not an error."""
    assert [Code.UNKNOWN, Code.UNKNOWN] == [code_of(17), code_of(-1)]
