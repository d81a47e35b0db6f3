"""The one place the rest of the code gets a Gold client.

``gold_client("http://127.0.0.1:8123")`` talks to the local front (``carelake.gold.server``);
production passes a real ClickHouse URL, e.g. ``https://user:secret@gold.internal:8443/clinical``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver import Client

from carelake.errors import ConfigError


def gold_client(url: str, **kw: Any) -> Client:
    """A clickhouse-connect client for ``http[s]://[user[:pw]@]host[:port][/database][?setting=v]``.

    The path names the default database (``?database=`` works too); other query items become
    ClickHouse settings sent with every request. Keyword arguments go to
    ``clickhouse_connect.get_client`` and win over anything taken from the URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"Gold URL must look like http://host:port[/database], got {url!r}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    in_query = query.pop("database", None)
    database = unquote(parts.path.strip("/")) or in_query
    args: dict[str, Any] = {
        "interface": parts.scheme,
        "host": parts.hostname,
        "port": parts.port or (8443 if parts.scheme == "https" else 8123),
        "database": database,
    }
    if parts.username:
        args["username"] = unquote(parts.username)
        args["password"] = unquote(parts.password or "")
    if query:
        args["settings"] = query
    args.update(kw)
    return clickhouse_connect.get_client(**args)
