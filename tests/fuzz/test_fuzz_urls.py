"""The database URL parser on arbitrary text (issue 10, item 12).

Whatever string a configuration holds, ``open_source`` gives a Source or a
DatabaseError with a one-line message, never another exception, and never
the password of the URL in the message.  Nothing here connects anywhere.
"""

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpmgm.model.errors import DatabaseError
from tcpmgm.sql.db import Source, open_source

# Imported once here, not inside the first example (whose time the deadline bounds).
pytest.importorskip("psycopg")
pytest.importorskip("pymysql")

SCHEMES = ["postgresql", "postgres", "mysql", "sqlite", "sqlite3", "oracle", "", "MySQL"]
# The characters that change how a URL splits, mixed with ordinary ones.
URL_CHARS = st.sampled_from(list("[]:@/?#%&=.;+ \\\t\n\x00") + list("abcXYZ019-_~") + ["é", "ｆ", "\u2100"])  # noqa: RUF001
URL_TEXT = st.text(URL_CHARS, max_size=30)
# A password no other part of the URL can spell by chance (no strategy draws from its alphabet).
PASSWORDS = st.text(st.sampled_from("PQWJKV"), min_size=6, max_size=20).map(lambda s: "Pw" + s)


def outcome(url: str) -> str:
    """The message of the DatabaseError ``url`` raises ('' when it gives a Source)."""
    try:
        source = open_source(url)
    except DatabaseError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message
        return message
    assert isinstance(source, Source)
    return ""


@given(st.text())
def test_any_text_is_a_source_or_a_database_error(url):
    outcome(url)


@given(st.sampled_from(SCHEMES), URL_TEXT)
def test_any_scheme_with_any_rest(scheme, rest):
    outcome(f"{scheme}://{rest}")
    outcome(f"{scheme}:{rest}")


@given(
    scheme=st.sampled_from(SCHEMES),
    user=URL_TEXT,
    password=PASSWORDS,
    host=URL_TEXT,
    port=URL_TEXT,
    path=URL_TEXT,
    query=URL_TEXT,
)
def test_the_password_is_never_in_the_message(scheme, user, password, host, port, path, query):
    # The user name is encoded as a URL needs it, so the password is in the userinfo;
    # everything after it may be anything.
    url = f"{scheme}://{quote(user, safe='')}:{password}@{host}:{port}/{path}?{query}"
    message = outcome(url)
    assert password not in message
    source_text = ""
    try:
        source = open_source(url)
        source_text = f"{source!r} {source.description}"
    except DatabaseError:
        pass
    assert password not in source_text
