#!/usr/bin/env python3
"""Recording MCP upstream for lockstep's gateway tests (PyPI `mcp` 2.3.0, `MCPServer`).

    python upstream.py --transport http  --port N [--name NAME] [--record PATH] [options]
    python upstream.py --transport stdio          [--name NAME] [--record PATH]

HTTP: Streamable HTTP on http://127.0.0.1:N/mcp (loopback only; `--port 0` picks a free port).
Once the socket listens, one line `READY <port> <url>` is printed on stdout (flushed); nothing else
goes to stdout. stdio: newline-delimited JSON-RPC on stdin/stdout; `READY stdio` goes to stderr.
Both protocol eras are served (2025-11-25 `initialize` + sessions, 2026-07-28 `server/discover`).

--record PATH appends one JSON object per line, flushed at once, for everything received:
  {"source": "rpc", ...}   every JSON-RPC request and notification that reached the MCP layer
                           (before validation or the handler): upstream, transport, method, id,
                           params, protocol_version, headers (lower-case names; null on stdio),
                           session_id, ts.
  {"source": "http", ...}  (HTTP only) every HTTP request on any path, before the SDK sees it:
                           http_method, path, headers, body (parsed JSON, or text), status (the
                           status this server answered), ts (when received; the line is written
                           when the response starts, so it can follow the rpc line). Catches messages the SDK rejects
                           before its MCP layer (bad headers, unknown session) and client
                           responses to server->client requests.
A test proves "a denied call never reached the upstream" by finding no rpc line for it.

Tools (the guide's database tools plus helpers for relaying tests); every result names the upstream
(the JSON tools answer compact JSON text plus the same object as structuredContent):
  read_database(query, table)      write_database(table, data)      run_query(sql)
  list_tables()                    echo(message)
  fail(code, message, data?)       -> JSON-RPC error {code, message, data} (MCPError)
  tool_error(message)              -> result with isError: true
  progress(steps=3, delay=0.05)    -> notifications/progress (needs a progressToken), then a result
  log(message, level="info")       -> notifications/message
  sleep(seconds)                   -> answers after `seconds` (timeouts, cancellation)
  sample(prompt)                   -> sampling/createMessage (2025-11-25: server->client request;
                                      2026-07-28: InputRequiredResult, the client retries)
  elicit(question)                 -> elicitation/create (same two shapes)
  roots()                          -> roots/list (same two shapes)
Prompts: analyze_table(table), admin_maintenance().
Resources: db://schema, db://secrets/api-keys; template db://tables/{table}/rows.

Options: --page-size K paginates tools/list, prompts/list, resources/list and
resources/templates/list (cursor = decimal offset); --require-bearer TOKEN answers HTTP 401
unless `Authorization: Bearer TOKEN` is sent (to test per-upstream credentials);
--deny TOOL (repeatable) answers tools/call TOOL before the SDK sees it with HTTP --deny-status
(default 200), application/json, JSON-RPC error --deny-code (default -31001) carrying data
{reason, tool, upstream}: a stand-in for a gateway denial, to pin down how clients surface one;
--json-response, --stateless (SDK options of the HTTP transport; --json-response loses progress
notifications, and in the 2025 era both make sample/elicit/roots fail with -32600 "no back-channel").
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
import warnings
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import (
    Context,
    Elicit,
    ElicitationResult,
    ListRoots,
    Resolve,
    Sample,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import CallToolResult, CreateMessageResult, ListRootsResult, SamplingMessage, TextContent
from pydantic import BaseModel

warnings.simplefilter("ignore", MCPDeprecationWarning)  # log/roots/sampling are deprecated in 2026-07-28; still served

ARGS: argparse.Namespace
RECORD = None  # open file, line-buffered


def record(entry: dict[str, Any]) -> None:
    if RECORD is None:
        return
    entry = {"ts": time.time(), "upstream": ARGS.name, "transport": ARGS.transport, **entry}
    RECORD.write(json.dumps(entry, default=str, separators=(",", ":")) + "\n")
    RECORD.flush()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transport", choices=["http", "stdio"], default="http")
    p.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--name", default="upstream", help="server name (serverInfo) and tag in results and records")
    p.add_argument("--record", metavar="PATH", help="append received requests as JSON lines to PATH")
    p.add_argument("--page-size", type=int, default=0, help="paginate list results (0 = no pagination)")
    p.add_argument("--require-bearer", metavar="TOKEN", help="HTTP 401 unless Authorization: Bearer TOKEN")
    p.add_argument("--deny", action="append", default=[], metavar="TOOL",
                   help="HTTP only: answer tools/call TOOL in front of the SDK with a JSON-RPC error (a stub denial)")
    p.add_argument("--deny-status", type=int, default=200, help="HTTP status of --deny answers (200 or e.g. 403)")
    p.add_argument("--deny-code", type=int, default=-31001, help="JSON-RPC error code of --deny answers")
    p.add_argument("--json-response", action="store_true", help="answer application/json instead of SSE (2025 era)")
    p.add_argument("--stateless", action="store_true", help="stateless Streamable HTTP (no sessions, 2025 era)")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args()


ARGS = parse_args()
mcp = MCPServer(ARGS.name, log_level=ARGS.log_level, instructions=f"test upstream {ARGS.name} for lockstep")


# ------------------------------------------------------------------ recording + pagination middleware
def _headers_of(request: Any) -> dict[str, str] | None:
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    return {k.lower(): v for k, v in headers.items()}


_LIST_FIELDS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}


async def recording_middleware(ctx: Any, call_next: Any) -> Any:
    params = dict(ctx.params) if ctx.params is not None else None
    headers = _headers_of(ctx.request)
    record({
        "source": "rpc",
        "method": ctx.method,
        "id": ctx.request_id,
        "params": params,
        "protocol_version": ctx.protocol_version,
        "headers": headers,
        "session_id": headers.get("mcp-session-id") if headers else None,
    })
    result = await call_next(ctx)
    field = _LIST_FIELDS.get(ctx.method)
    # call_next returns the wire dict (camelCase), so pagination slices that
    if ARGS.page_size > 0 and field is not None and isinstance(result, dict) and field in result:
        cursor = (params or {}).get("cursor")
        try:
            start = int(cursor) if cursor is not None else 0
        except ValueError:
            raise MCPError(code=-32602, message=f"invalid cursor {cursor!r}") from None
        items = result[field]
        nxt = start + ARGS.page_size
        result = {**result, field: items[start:nxt]}
        result.pop("nextCursor", None)
        if nxt < len(items):
            result["nextCursor"] = str(nxt)
    return result


mcp.middleware.append(recording_middleware)


# ------------------------------------------------------------------ the guide's database tools
def _result(payload: dict) -> CallToolResult:
    """Compact JSON text plus the same object as structuredContent (no outputSchema)."""
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(payload, separators=(",", ":")))],
                          structured_content=payload)


TABLES = {
    "users": [{"id": 1, "name": "alice"}, {"id": 2, "name": "bob"}],
    "orders": [{"id": 10, "user_id": 1, "total": 42.5}],
    "audit_log": [{"id": 100, "event": "login"}],
    "salaries": [{"user_id": 1, "amount": 1000}],
}


@mcp.tool()
def read_database(target: str, operation: str = "read", database: str = "analytics") -> CallToolResult:
    """Read rows from a table. Arguments as the guide's policies read them: `target` (the
    table, layer 2), `operation`, `database` (layer 3)."""
    return _result({"upstream": ARGS.name, "tool": "read_database", "target": target,
                    "operation": operation, "database": database, "rows": TABLES.get(target, [])})


@mcp.tool()
def write_database(target: str, data: dict, operation: str = "write",
                   database: str = "analytics") -> CallToolResult:
    """Write a row into a table (a tool an analyst role must not reach)."""
    return _result({"upstream": ARGS.name, "tool": "write_database", "target": target,
                    "operation": operation, "database": database, "written": data})


@mcp.tool()
def run_query(target: str, operation: str = "read", database: str = "analytics") -> CallToolResult:
    """Run a raw SQL statement given as `target` (layer 2: only SELECT allowed)."""
    return _result({"upstream": ARGS.name, "tool": "run_query", "target": target,
                    "database": database, "rowcount": 1})


@mcp.tool()
def list_tables() -> CallToolResult:
    """List the tables."""
    return _result({"upstream": ARGS.name, "tool": "list_tables", "tables": sorted(TABLES)})


@mcp.tool()
def echo(message: str) -> str:
    """Echo the message, prefixed with the upstream name."""
    return f"{ARGS.name}: {message}"


# ------------------------------------------------------------------ error shapes
@mcp.tool()
def fail(code: int, message: str, data: Any = None) -> str:
    """Answer with a JSON-RPC error {code, message, data} (not a tool result)."""
    raise MCPError(code=code, message=message, data=data)


@mcp.tool()
def tool_error(message: str) -> str:
    """Answer with a tool result that has isError: true."""
    raise ToolError(message)


# ------------------------------------------------------------------ streaming and slow tools
@mcp.tool()
async def progress(ctx: Context, steps: int = 3, delay: float = 0.05) -> str:
    """Send `steps` notifications/progress (when the request has a progressToken), then answer."""
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, message=f"step {i}/{steps}")
        await asyncio.sleep(delay)
    return f"{ARGS.name}: progress done after {steps} steps"


@mcp.tool()
async def log(ctx: Context, message: str, level: str = "info") -> str:
    """Send one notifications/message log entry, then answer."""
    await getattr(ctx, level)(f"{ARGS.name}: {message}")
    return f"{ARGS.name}: logged"


@mcp.tool()
async def sleep(seconds: float) -> str:
    """Answer after `seconds`."""
    await asyncio.sleep(seconds)
    return f"{ARGS.name}: slept {seconds}"


# ------------------------------------------------------------------ server->client requests (both eras)
def _ask_llm(prompt: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=prompt))], max_tokens=64)


@mcp.tool()
def sample(prompt: str, answer: Annotated[CreateMessageResult, Resolve(_ask_llm)]) -> CallToolResult:
    """Ask the client's LLM (sampling/createMessage) and return what it said."""
    content = answer.content
    text = content.text if isinstance(content, TextContent) else str(content)
    return _result({"upstream": ARGS.name, "tool": "sample", "sampled": text, "model": answer.model})


class Confirmation(BaseModel):
    confirm: bool
    note: str = ""


def _ask_user(question: str) -> Elicit[Confirmation]:
    return Elicit(question, Confirmation)


@mcp.tool()
def elicit(question: str, reply: Annotated[ElicitationResult[Confirmation], Resolve(_ask_user)]) -> CallToolResult:
    """Ask the user (elicitation/create, form mode) and return the action and content."""
    data = getattr(reply, "data", None)
    return _result({"upstream": ARGS.name, "tool": "elicit", "action": reply.action,
                    "content": data.model_dump() if data is not None else None})


def _client_roots() -> ListRoots:
    return ListRoots()


@mcp.tool()
def roots(listed: Annotated[ListRootsResult, Resolve(_client_roots)]) -> CallToolResult:
    """Ask the client for its roots (roots/list) and return them."""
    return _result({"upstream": ARGS.name, "tool": "roots", "roots": [str(r.uri) for r in listed.roots]})


# ------------------------------------------------------------------ prompts and resources
@mcp.prompt()
def analyze_table(table: str) -> str:
    """Ask the model to analyze one table."""
    return f"[{ARGS.name}] Analyze the table {table}: row counts, anomalies, and the top users."


@mcp.prompt()
def admin_maintenance() -> str:
    """Maintenance instructions meant for admins only."""
    return f"[{ARGS.name}] Vacuum every table and rotate the audit log."


@mcp.resource("db://schema", name="schema", description="Table schema", mime_type="application/json")
def schema() -> str:
    return json.dumps({"upstream": ARGS.name, "tables": {t: sorted(rows[0]) for t, rows in TABLES.items()}})


@mcp.resource("db://secrets/api-keys", name="api-keys", description="Secrets (resource rules must hide this)",
              mime_type="text/plain")
def api_keys() -> str:
    return f"{ARGS.name}: sk-test-0000"


@mcp.resource("db://tables/{table}/rows", name="table-rows", description="Rows of one table",
              mime_type="application/json")
def table_rows(table: str) -> str:
    return json.dumps({"upstream": ARGS.name, "table": table, "rows": TABLES.get(table, [])})


# ------------------------------------------------------------------ HTTP: recording ASGI wrapper + serve
class HttpRecorder:
    """ASGI wrapper: records each HTTP request (headers, body) and its status; optional bearer check."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:  # read the whole body, then replay it to the app
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        entry = {"ts": time.time(), "source": "http", "http_method": scope["method"], "path": scope["path"],
                 "headers": headers, "body": parsed, "status": None}

        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        recorded = False

        async def send_wrapper(message: dict) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                record({**entry, "status": message["status"]})
            await send(message)

        if ARGS.require_bearer is not None and headers.get("authorization") != f"Bearer {ARGS.require_bearer}":
            await send_wrapper({"type": "http.response.start", "status": 401,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"www-authenticate", b'Bearer realm="upstream"')]})
            await send({"type": "http.response.body", "body": b'{"error":"unauthorized"}'})
            return
        if (ARGS.deny and isinstance(parsed, dict) and parsed.get("method") == "tools/call"
                and isinstance(parsed.get("params"), dict) and parsed["params"].get("name") in ARGS.deny):
            tool = parsed["params"]["name"]
            answer = {"jsonrpc": "2.0", "id": parsed.get("id"), "error": {
                "code": ARGS.deny_code, "message": f"tool {tool} denied by the upstream stub",
                "data": {"reason": "stub denial", "tool": tool, "upstream": ARGS.name}}}
            await send_wrapper({"type": "http.response.start", "status": ARGS.deny_status,
                                "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
            return
        try:
            await self.app(scope, replay, send_wrapper)
        finally:
            if not recorded:
                record(entry)


async def serve_http() -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", ARGS.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = mcp.streamable_http_app(json_response=ARGS.json_response, stateless_http=ARGS.stateless,
                                  host="127.0.0.1")
    config = uvicorn.Config(HttpRecorder(app), log_level=ARGS.log_level.lower(), lifespan="on",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"READY {port} http://127.0.0.1:{port}/mcp", flush=True)

    task = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        task.cancel()


def main() -> None:
    global RECORD
    if ARGS.record:
        RECORD = open(ARGS.record, "a", encoding="utf-8")
    if ARGS.transport == "stdio":
        print(f"READY stdio {ARGS.name}", file=sys.stderr, flush=True)
        mcp.run("stdio")
    else:
        asyncio.run(serve_http())


if __name__ == "__main__":
    main()
