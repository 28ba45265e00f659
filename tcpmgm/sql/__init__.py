"""SQL: the ``tcp_mgm`` table, its sources, reading its rows into rules, watching it.

Imports the model; never the service or the tools (docs/architecture.md).
"""
