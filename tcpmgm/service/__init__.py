"""The service: ``TcpMgm`` (rules in service, reloads), the admin endpoint, sockets, asyncio.

Imports the model, matching and SQL layers (docs/architecture.md).
"""
