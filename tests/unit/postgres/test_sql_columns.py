"""
Tests for the column uses and COPY stream formats the PostgreSQL
classifier reports for masking (L{hoopgate_plugins.postgres._sql}).
"""

from __future__ import annotations

import pytest

from hoopgate.plugin import StatementPart
from hoopgate_plugins.postgres._sql import classify


def only(text: str) -> StatementPart:
    (classification,) = classify(text)
    return classification.to_part()


@pytest.mark.parametrize(
    ("text", "columns", "derived"),
    [
        ("select email, c.ssn, x.* from customers c", ("*", "email", "ssn"), ()),
        ("select email from customers where id = 1", ("email", "id"), ("id",)),
        ("select lower(email) from customers", ("email",), ("email",)),
        ("select email::text from customers", ("email",), ("email",)),
        ("select email from customers order by email", ("email",), ("email",)),
        ("select distinct email from customers", ("email",), ("email",)),
        ("select row_to_json(c) from customers c", ("*", "c"), ("*", "c")),
        ("select c from customers c", ("*", "c"), ("*",)),
        ("select customers from customers", ("*", "customers"), ("*",)),
        ("select (c).email from customers c", ("*", "c"), ("*", "c")),
        ("select email from customers union select 'x'", ("email",), ("email",)),
        ("select * from (select email from t) s", ("*", "email"), ("email",)),
        ("with x as (select email from t) select email from x", ("email",), ("email",)),
        ("declare k cursor for select email from customers", ("email",), ()),
        ("update t set a = b where id = 1", ("a", "b", "id"), ("a", "b", "id")),
        ("insert into t (a) values (1)", ("a",), ("a",)),
        ('select "Email" from t', ('"Email"',), ()),
        ("select count(*) from customers", (), ()),
    ],
)
def test_column_uses(
    text: str, columns: tuple[str, ...], derived: tuple[str, ...]
) -> None:
    """
    Plain output columns of the statement's own query are plain; every
    other use, and every whole row, is derived.
    """
    part = only(text)

    assert (part.columns, part.derived_columns) == (columns, derived)


@pytest.mark.parametrize(
    ("text", "stream_format", "columns"),
    [
        ("copy customers(ssn, email) to stdout", "text", ("ssn", "email")),
        ("copy customers to stdout", "text", ("*",)),
        (
            "copy customers(id) to stdout with (format csv, header)",
            "csv+header",
            ("id",),
        ),
        ("copy customers(id) to stdout csv header", "csv+header", ("id",)),
        ("copy customers(id) to stdout with (header false)", "text", ("id",)),
        ("copy customers(id) to stdout binary", "binary", ("id",)),
        ("copy customers(id) to stdout with (delimiter ',')", "other", ("id",)),
        ("copy customers(id) to '/tmp/x'", "", ("id",)),
        ("copy customers from stdin", "", ()),
    ],
)
def test_copy_streams(text: str, stream_format: str, columns: tuple[str, ...]) -> None:
    """
    COPY TO STDOUT reports its format and its column list in order.
    """
    part = only(text)

    assert (part.stream_format, part.columns) == (stream_format, columns)


def test_copy_of_a_query() -> None:
    """
    The columns of COPY (query) are derived: the result is not the
    statement's own query.
    """
    part = only("copy (select email from customers) to stdout")

    assert part.stream_format == "text"
    assert part.derived_columns == ("email",)
    assert part.reads == ("public.customers",)
