"""Every way the server can fail us, as one clear error naming the server (without
its password), what is wrong and the fix.

``psycopg`` reports a failed connection with no SQLSTATE (libpq gives the server's
FATAL message as text only), so a connection error is classified by that text; an
error inside a session has a SQLSTATE and is classified by it.
"""

from __future__ import annotations

from typing import Any

from nbstep.errors import TeamServerError

from .url import ServerAddress

INSTALL = "pip install 'nbstep[team]'"
ROLES_DOC = "docs/team-store.md, \"Roles\""


class ServerUnreachable(TeamServerError):
    """The server cannot be reached now (down, restarting, no network): steps go on
    offline, from the local mirror and into the local journal."""


def missing_driver(error: ImportError) -> TeamServerError:
    return TeamServerError(
        f"the team store needs the PostgreSQL driver psycopg, which is not installed "
        f"({error}). Install it with {INSTALL}."
    )


def unreachable(address: ServerAddress, detail: str) -> ServerUnreachable:
    return ServerUnreachable(
        f"cannot reach the team store's server {address} ({detail}). Check that the "
        "server runs and that the URL's host and port are right (the `store` setting: "
        "[tool.nbstep] in pyproject.toml, or NBSTEP_STORE). Meanwhile steps replay from "
        "the local mirror, and new records wait in the local journal: `nbstep push` sends "
        "them once the server is back."
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    # libpq: 'connection failed: connection to server at "h", port p failed: FATAL: ...'
    if "failed: " in text:
        text = text.rsplit("failed: ", 1)[1]
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    return "; ".join(lines)[:300] or type(error).__name__


def connect_error(address: ServerAddress, error: BaseException) -> TeamServerError:
    """A failed connection: a refused login or a missing database is the user's to fix
    (raised); anything else means the server cannot be reached now."""
    detail = _first_line(error)
    lowered = detail.lower()
    who = f"`{address.user}`" if address.user else "this user"
    if "password authentication failed" in lowered or "authentication failed" in lowered \
            or "no password supplied" in lowered or "pg_hba.conf" in lowered:
        return TeamServerError(
            f"the team store's server {address} refused the login of {who} ({detail}). "
            "Check the user name and password: in the URL, in PGPASSWORD, or in ~/.pgpass "
            "(which keeps the password out of pyproject.toml)."
        )
    if "does not exist" in lowered and ("database" in lowered or "role" in lowered):
        thing = "database" if "database" in lowered else "user"
        fix = (f"create it (`createdb {address.database}` as an admin)" if thing == "database"
               else "ask an admin to create the login (" + ROLES_DOC + ")")
        return TeamServerError(
            f"the team store's server {address} has no such {thing} ({detail}): {fix}, or "
            "fix the URL in the `store` setting."
        )
    return unreachable(address, detail)


def session_error(address: ServerAddress, error: Any, doing: str) -> TeamServerError:
    """An error from a statement; ``doing`` says what nbstep was doing, for the message."""
    state = getattr(error, "sqlstate", None) or ""
    detail = _first_line(error)
    if state == "42501":  # insufficient_privilege
        return not_permitted(address, doing, detail)
    if state in ("42P01", "3F000"):  # undefined_table, invalid_schema_name
        return schema_missing(address)
    if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return unreachable(address, detail)
    return TeamServerError(
        f"the team store's server {address} failed to {doing}: {detail} (SQLSTATE "
        f"{state or 'none'}). Nothing was changed."
    )


def not_permitted(address: ServerAddress, doing: str, detail: str) -> TeamServerError:
    who = f"`{address.user}`" if address.user else "this user"
    return TeamServerError(
        f"{who} may not {doing} on the team store {address} ({detail}). Readers "
        "(nbstep_reader) read, writers (nbstep_writer) also record and forget, admins "
        f"(nbstep_admin) also run gc and repair: ask an admin to grant the role ({ROLES_DOC})."
    )


def schema_missing(address: ServerAddress) -> TeamServerError:
    return TeamServerError(
        f"the database `{address.database}` on {address} holds no nbstep team store (no "
        "schema `nbstep`). An admin sets it up once: `nbstep --store URL team init` "
        f"({ROLES_DOC})."
    )


def schema_newer(address: ServerAddress, found: int, known: int) -> TeamServerError:
    return TeamServerError(
        f"the team store {address} was set up by a newer nbstep (schema version {found}; "
        f"this nbstep knows up to {known}). Upgrade nbstep on this machine "
        "(pip install -U 'nbstep[team]'); the server was not changed."
    )
