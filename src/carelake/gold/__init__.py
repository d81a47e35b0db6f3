"""Gold: the ClickHouse store. Components reach it only through ``gold_client(url)``.

Locally the URL points at ``carelake.gold.server`` (chDB behind ClickHouse's HTTP interface);
in production it points at a real ClickHouse server.
"""
