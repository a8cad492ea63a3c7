"""A team store's server address: the URL as given, as shown, and as a folder name.

The URL is a libpq connection URI (``postgresql://user:password@host:port/dbname``);
its password never appears in a message, a log line or a file name (``shown``). The
local mirror and journal of one server and database live in a folder named after
``ident``, so two team stores used from one project never mix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = {"password", "sslpassword", "passfile"}


@dataclass(frozen=True)
class ServerAddress:
    url: str  # as given: pass it to the driver, never print it
    shown: str  # without a password
    user: str | None  # from the URL (None: libpq's default, the OS user)
    database: str
    ident: str  # host, port and database, hashed: the local folder's name

    def __str__(self) -> str:
        return self.shown


def parse(url: str) -> ServerAddress:
    url = url.strip()
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    user = unquote(userinfo.split(":", 1)[0]) or None if userinfo else None
    shown_netloc = f"{user}@{hosts}" if user else hosts
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    user = user or next((v for k, v in query if k == "user"), None)
    shown_query = urlencode([(k, "***" if k in _SECRET_PARAMS else v) for k, v in query])
    shown = urlunsplit((parts.scheme, shown_netloc, parts.path, shown_query, ""))
    database = parts.path.lstrip("/") or next(
        (v for k, v in query if k == "dbname"), user or "postgres")
    where = f"{hosts.lower()}/{database}"
    ident = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{hosts}-{database}")[:40]
    ident = f"{ident}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"
    return ServerAddress(url, shown, user, database, ident)
