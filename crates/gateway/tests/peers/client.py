#!/usr/bin/env python3
"""Scripted MCP client (PyPI `mcp` 2.3.0 `Client`) that a Rust test runs as a subprocess.

    python client.py --url http://127.0.0.1:P/mcp [--header 'Authorization: Bearer X' ...] STEPS
    python client.py --stdio-cmd 'python upstream.py --transport stdio' [--stdio-env K=V ...] STEPS

STEPS is a JSON array given as `--steps JSON`, `--steps @FILE`, or `--steps -` / nothing (stdin).
Each step is an object with "op" (or just the op name as a string):
  {"op": "list_tools", "cursor": "..."?, "all_pages": true?}    likewise list_prompts,
  list_resources, list_resource_templates (all_pages follows nextCursor, result = merged list)
  {"op": "call_tool", "name": "read_database", "args": {...}, "progress": true?}
  {"op": "get_prompt", "name": "analyze_table", "args": {"table": "users"}}
  {"op": "read_resource", "uri": "db://schema"}
  {"op": "ping"}   {"op": "sleep", "seconds": 0.5}
A step may carry "id" (any JSON), echoed in its output line.

Output: one JSON object per line on stdout, in order:
  {"step": 0, "op": "connect", "ok": true, "protocol": "2026-07-28", "server_info": {...}, "capabilities": {...}}
  {"step": N, "op": ..., "ok": true, "result": {wire-shaped result, camelCase}, ...extras}
      list_*: "names" (tool/prompt names, resource URIs, template uriTemplates)
      call_tool: "is_error", "text" (text contents joined by newlines), "progress" [{progress,total,message}]
      get_prompt / read_resource: "text" (message / content texts joined by newlines)
      any step: "logs" [notifications/message params], "server_requests" [{method, params}] when the
      server sent sampling/elicitation/roots requests (2025-11-25) or InputRequiredResult rounds (2026-07-28);
      "http_errors" [{status, method, www_authenticate, content_type}] for HTTP responses >= 400 seen
      during the step (the SDK reports e.g. a 401 only as -32603 "Server returned an error response")
  {"step": N, "op": ..., "ok": false, "error": {"code": -32602, "message": "...", "data": ...}}   JSON-RPC error
  {"step": N, "op": ..., "ok": false, "exception": {"type": "...", "message": "..."}}             anything else
  {"step": N+1, "op": "done", "ok": true, "steps": N}
Exit status: 0 when connected and every step ran (a step's JSON-RPC error is data, not a failure);
2 when the connection (initialize / server/discover) failed (the connect line says why); 64 on usage errors. --brief leaves "result" out of every line.

--protocol auto (SDK default: probe server/discover, fall back to initialize) | 2025-11-25 (the
initialize handshake; the SDK's mode="legacy") | 2026-07-28 (stateless, no probe).
Client-side callbacks answer server->client requests: sampling (--sample-reply), elicitation
(--elicit-action, --elicit-content), roots (--root, repeatable). The SDK response cache is off
(results must reflect the server/gateway at each step), unless --cache.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import traceback
import warnings
from contextlib import AsyncExitStack
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

warnings.simplefilter("ignore", MCPDeprecationWarning)  # e.g. ping on 2026-07-28: the error line says it

PROTOCOLS = {"auto": "auto", "2025-11-25": "legacy", "legacy": "legacy", "2026-07-28": "2026-07-28"}
LIST_OPS = {
    "list_tools": ("tools", "name"),
    "list_prompts": ("prompts", "name"),
    "list_resources": ("resources", "uri"),
    "list_resource_templates": ("resourceTemplates", "uriTemplate"),
}


BRIEF = False


def emit(obj: dict[str, Any]) -> None:
    if BRIEF:
        obj = {k: v for k, v in obj.items() if k not in ("result", "capabilities")}
    sys.stdout.write(json.dumps(obj, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def dump(model: Any) -> Any:
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return model


def error_fields(exc: BaseException) -> dict[str, Any]:
    """JSON-RPC error -> {"error": {...}}; anything else -> {"exception": {...}} (first leaf of a group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        err: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            err["data"] = exc.data
        return {"error": err}
    return {"exception": {"type": type(exc).__name__, "message": str(exc)}}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="scripted MCP client (PyPI mcp)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="Streamable HTTP endpoint")
    target.add_argument("--stdio-cmd", help="server command line (shell-split), spoken to over stdio")
    p.add_argument("--header", action="append", default=[], metavar="'Name: value'", help="HTTP header (repeatable)")
    p.add_argument("--stdio-env", action="append", default=[], metavar="K=V", help="extra env for the stdio server")
    p.add_argument("--protocol", default="auto", choices=sorted(PROTOCOLS))
    p.add_argument("--steps", default="-", help="JSON array, @FILE, or - (stdin)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per step and for connecting")
    p.add_argument("--sample-reply", default=None, help="sampling answer text (default: 'sampled: <prompt>')")
    p.add_argument("--elicit-action", default="accept", choices=["accept", "decline", "cancel"])
    p.add_argument("--elicit-content", default='{"confirm": true, "note": "from client.py"}', help="JSON object")
    p.add_argument("--root", action="append", default=[], help="root URI (repeatable; default file:///tmp/lockstep-root)")
    p.add_argument("--cache", action="store_true", help="keep the SDK's response cache on")
    p.add_argument("--brief", action="store_true", help="leave out \"result\" (keep names/text/error/...)")
    p.add_argument("--trace", action="store_true", help="print Python tracebacks of failed steps on stderr")
    return p.parse_args(argv)


def load_steps(spec: str) -> list[dict[str, Any]]:
    if spec == "-":
        text = sys.stdin.read()
    elif spec.startswith("@"):
        with open(spec[1:], encoding="utf-8") as f:
            text = f.read()
    else:
        text = spec
    steps = json.loads(text) if text.strip() else []
    if not isinstance(steps, list):
        raise ValueError("steps must be a JSON array")
    return [{"op": s} if isinstance(s, str) else s for s in steps]


class Recorder:
    """Collects what the server pushed during one step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.logs: list[Any] = []
        self.server_requests: list[dict[str, Any]] = []
        self.progress: list[dict[str, Any]] = []
        self.http_errors: list[dict[str, Any]] = []

    def extras(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.logs:
            out["logs"] = self.logs
        if self.server_requests:
            out["server_requests"] = self.server_requests
        if self.http_errors:
            out["http_errors"] = self.http_errors
        return out


async def run(args: argparse.Namespace, steps: list[dict[str, Any]]) -> int:
    rec = Recorder()
    roots = args.root or ["file:///tmp/lockstep-root"]
    elicit_content = json.loads(args.elicit_content)

    async def on_sampling(_ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        rec.server_requests.append({"method": "sampling/createMessage", "params": dump(params)})
        last = params.messages[-1].content if params.messages else None
        prompt = getattr(last, "text", "") if last is not None else ""
        text = args.sample_reply if args.sample_reply is not None else f"sampled: {prompt}"
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=text),
                                         model="lockstep-test-model", stop_reason="endTurn")

    async def on_elicit(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        rec.server_requests.append({"method": "elicitation/create", "params": dump(params)})
        if args.elicit_action == "accept":
            return types.ElicitResult(action="accept", content=elicit_content)
        return types.ElicitResult(action=args.elicit_action)

    async def on_roots(_ctx: Any) -> types.ListRootsResult:
        rec.server_requests.append({"method": "roots/list", "params": None})
        return types.ListRootsResult(roots=[types.Root(uri=u) for u in roots])

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        rec.logs.append(dump(params))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        rec.progress.append({"progress": progress, "total": total, "message": message})

    async with AsyncExitStack() as stack:
        if args.url:
            headers: dict[str, str] = {}
            for h in args.header:
                name, sep, value = h.partition(":")
                if not sep:
                    raise ValueError(f"--header {h!r}: expected 'Name: value'")
                headers[name.strip()] = value.strip()
            http = await stack.enter_async_context(create_mcp_http_client(headers=headers))

            async def on_response(response: Any) -> None:
                # The SDK turns most HTTP errors into a bare "Server returned an error response"
                # (-32603); keep the status and the auth challenge so a test can assert them.
                if response.status_code >= 400:
                    rec.http_errors.append({
                        "status": response.status_code,
                        "method": response.request.method,
                        "www_authenticate": response.headers.get("www-authenticate"),
                        "content_type": response.headers.get("content-type"),
                    })

            http.event_hooks["response"].append(on_response)
            server: Any = streamable_http_client(args.url, http_client=http)
        else:
            cmd = shlex.split(args.stdio_cmd)
            env = dict(kv.split("=", 1) for kv in args.stdio_env) or None
            server = StdioServerParameters(command=cmd[0], args=cmd[1:], env=env)
        client = Client(
            server,
            mode=PROTOCOLS[args.protocol],
            read_timeout_seconds=args.timeout,
            sampling_callback=on_sampling,
            elicitation_callback=on_elicit,
            list_roots_callback=on_roots,
            logging_callback=on_log,
            log_level="debug",  # 2026-07-28: log messages arrive only for requests that opt in
            client_info=types.Implementation(name="lockstep-test-client.py", version="1"),
            cache=types_cache(args.cache),
        )
        try:
            # (no anyio.fail_after here: the client's task groups must not be entered inside a
            # cancel scope that exits before them; read_timeout_seconds bounds the handshake)
            await stack.enter_async_context(client)
        except BaseException as exc:  # noqa: BLE001 - reported, not raised
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            emit({"step": 0, "op": "connect", "ok": False, **error_fields(exc), **rec.extras()})
            if args.trace:
                traceback.print_exception(exc)
            return 2
        emit({"step": 0, "op": "connect", "ok": True, "protocol": client.protocol_version,
              "server_info": dump(client.server_info), "capabilities": dump(client.server_capabilities),
              **rec.extras()})

        for n, step in enumerate(steps, start=1):
            rec.reset()
            op = step.get("op")
            out: dict[str, Any] = {"step": n, "op": op}
            if "id" in step:
                out["id"] = step["id"]
            try:
                with anyio.fail_after(step.get("timeout", args.timeout)):
                    out.update(await run_step(client, op, step, rec, on_progress))
                out["ok"] = True
            except Exception as exc:  # noqa: BLE001 - every failure becomes a line
                out["ok"] = False
                out.update(error_fields(exc))
                if args.trace:
                    traceback.print_exception(exc)
            out.update(rec.extras())
            emit(out)
        emit({"step": len(steps) + 1, "op": "done", "ok": True, "steps": len(steps)})
    return 0


def types_cache(enabled: bool) -> Any:
    if enabled:
        from mcp.client.caching import CacheConfig
        return CacheConfig()
    return None


async def run_step(client: Client, op: str, step: dict[str, Any], rec: Recorder, on_progress: Any) -> dict[str, Any]:
    if op in LIST_OPS:
        field, key = LIST_OPS[op]
        method = getattr(client, op)
        cursor = step.get("cursor")
        result = dump(await method(cursor=cursor))
        if step.get("all_pages"):
            items, pages = list(result.get(field, [])), 1
            while result.get("nextCursor"):
                result = dump(await method(cursor=result["nextCursor"]))
                items += result.get(field, [])
                pages += 1
            result = {field: items}
            return {"result": result, "names": [i.get(key) for i in items], "pages": pages}
        return {"result": result, "names": [i.get(key) for i in result.get(field, [])]}
    if op == "call_tool":
        res = await client.call_tool(step["name"], step.get("args", step.get("arguments", {})),
                                     progress_callback=on_progress if step.get("progress", True) else None)
        wire = dump(res)
        text = "\n".join(c.get("text", "") for c in wire.get("content", []) if c.get("type") == "text")
        out = {"result": wire, "is_error": bool(res.is_error), "text": text}
        if rec.progress:
            out["progress"] = rec.progress
        return out
    if op == "get_prompt":
        wire = dump(await client.get_prompt(step["name"], step.get("args", step.get("arguments"))))
        return {"result": wire, "text": "\n".join(m.get("content", {}).get("text", "") for m in wire.get("messages", []))}
    if op == "read_resource":
        wire = dump(await client.read_resource(step["uri"]))
        return {"result": wire, "text": "\n".join(c.get("text", "") for c in wire.get("contents", []))}
    if op == "ping":
        return {"result": dump(await client.send_ping())}
    if op == "sleep":
        await anyio.sleep(float(step.get("seconds", 0)))
        return {}
    raise ValueError(f"unknown op {op!r}")


def main() -> int:
    global BRIEF
    args = parse_args(sys.argv[1:])
    BRIEF = args.brief
    try:
        steps = load_steps(args.steps)
    except (ValueError, OSError) as exc:
        print(f"client.py: bad --steps: {exc}", file=sys.stderr)
        return 64
    return anyio.run(run, args, steps)


if __name__ == "__main__":
    sys.exit(main())
