#!/usr/bin/env python3
"""The guide's MCP server for the compose fleet (PyPI `mcp` 2.3.0): the database tools the
example policies decide on. Their results only echo what was asked; nothing is stored.

    python server.py [--host H] [--port N] [--name NAME] [--allowed-host HOST:PORT ...]

Streamable HTTP at http://H:N/mcp, both protocol eras. DNS-rebinding protection stays on:
only the `Host` values given with --allowed-host (plus loopback ones) are served, so the
gateway reaches it as http://mcp-a:8000/mcp and nothing else can pose as it by name.
Prints `READY <port>` on stdout once it listens.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket

import uvicorn
from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
parser.add_argument("--name", default="mcp")
parser.add_argument("--allowed-host", action="append", default=[])
ARGS = parser.parse_args()

mcp = MCPServer(ARGS.name, instructions="the guide's database tools, behind a lockstep gateway")


def _answer(**fields: object) -> str:
    return json.dumps({"server": ARGS.name, **fields}, sort_keys=True)


@mcp.tool()
def read_database(target: str, operation: str = "read", database: str = "analytics") -> str:
    """Read rows of table `target` in `database`."""
    return _answer(tool="read_database", target=target, operation=operation, database=database)


@mcp.tool()
def write_database(target: str, operation: str = "write", database: str = "analytics") -> str:
    """Write to table `target` in `database`."""
    return _answer(tool="write_database", target=target, operation=operation, database=database)


@mcp.tool()
def run_query(target: str, database: str = "analytics") -> str:
    """Run the SQL statement `target` on `database`."""
    return _answer(tool="run_query", target=target, database=database)


@mcp.tool()
def list_tables(database: str = "analytics") -> str:
    """List the tables of `database`."""
    return _answer(tool="list_tables", database=database, tables=["orders", "customers"])


async def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ARGS.host, ARGS.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    hosts = ARGS.allowed_host + [f"127.0.0.1:{port}", f"localhost:{port}"]
    security = TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=[])
    app = mcp.streamable_http_app(transport_security=security, host=ARGS.host)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"READY {port}", flush=True)

    task = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
