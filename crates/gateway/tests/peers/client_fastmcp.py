#!/usr/bin/env python3
"""Scripted MCP client, second implementation: PyPI `fastmcp` 4.2.3 `fastmcp.Client`.

Same command line, steps and output lines as client.py (read its docstring), so a Rust test can run
one script through both clients:

    python client_fastmcp.py --url http://127.0.0.1:P/mcp [--header 'Authorization: Bearer X' ...] STEPS
    python client_fastmcp.py --stdio-cmd 'python upstream.py --transport stdio' STEPS

Differences from client.py: tools are called with fastmcp's `call_tool(..., raise_on_error=False)`,
which also validates structuredContent against the tool's outputSchema and adds "data" (fastmcp's
parsed value) to the output line; lists use the `*_mcp` methods (wire results, cursors). A JSON-RPC
error is reported as {"error": {code, message, data}} when fastmcp lets the MCPError through (or
chains it as the cause), else as {"exception": ...}.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import traceback
import warnings
from typing import Any

import anyio
import mcp_types as types
from fastmcp import Client
from fastmcp.client.elicitation import ElicitResult
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

warnings.simplefilter("ignore", MCPDeprecationWarning)

PROTOCOLS = {"auto": "auto", "2025-11-25": "legacy", "legacy": "legacy", "2026-07-28": "2026-07-28"}
LIST_OPS = {
    "list_tools": ("list_tools_mcp", "tools", "name"),
    "list_prompts": ("list_prompts_mcp", "prompts", "name"),
    "list_resources": ("list_resources_mcp", "resources", "uri"),
    "list_resource_templates": ("list_resource_templates_mcp", "resourceTemplates", "uriTemplate"),
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
    if isinstance(model, list):
        return [dump(m) for m in model]
    if dataclasses.is_dataclass(model) and not isinstance(model, type):
        return dataclasses.asdict(model)
    return model


def error_fields(exc: BaseException) -> dict[str, Any]:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    seen: BaseException | None = exc
    while seen is not None:  # fastmcp may wrap the MCPError; look down the cause chain
        if isinstance(seen, MCPError):
            err: dict[str, Any] = {"code": seen.code, "message": seen.message}
            if seen.data is not None:
                err["data"] = seen.data
            out: dict[str, Any] = {"error": err}
            if seen is not exc:
                out["exception"] = {"type": type(exc).__name__, "message": str(exc)}
            return out
        seen = seen.__cause__ or seen.__context__
    return {"exception": {"type": type(exc).__name__, "message": str(exc)}}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="scripted MCP client (PyPI fastmcp)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url")
    target.add_argument("--stdio-cmd")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--stdio-env", action="append", default=[])
    p.add_argument("--protocol", default="auto", choices=sorted(PROTOCOLS))
    p.add_argument("--steps", default="-")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--sample-reply", default=None)
    p.add_argument("--elicit-action", default="accept", choices=["accept", "decline", "cancel"])
    p.add_argument("--elicit-content", default='{"confirm": true, "note": "from client_fastmcp.py"}')
    p.add_argument("--root", action="append", default=[])
    p.add_argument("--cache", action="store_true")
    p.add_argument("--brief", action="store_true", help="leave out \"result\" (keep names/text/error/...)")
    p.add_argument("--trace", action="store_true")
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
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.logs: list[Any] = []
        self.server_requests: list[dict[str, Any]] = []
        self.progress: list[dict[str, Any]] = []
        self.http_errors: list[dict[str, Any]] = []

    def extras(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("logs", "server_requests", "http_errors"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


async def run(args: argparse.Namespace, steps: list[dict[str, Any]]) -> int:
    rec = Recorder()
    elicit_content = json.loads(args.elicit_content)

    async def on_sampling(messages: list[types.SamplingMessage], params: Any, _ctx: Any) -> str:
        rec.server_requests.append({"method": "sampling/createMessage", "params": dump(params)})
        last = messages[-1].content if messages else None
        prompt = getattr(last, "text", "") if last is not None else ""
        return args.sample_reply if args.sample_reply is not None else f"sampled: {prompt}"

    async def on_elicit(message: str, _rtype: Any, params: Any, _ctx: Any) -> Any:
        rec.server_requests.append({"method": "elicitation/create", "params": dump(params)})
        if args.elicit_action == "accept":
            return ElicitResult(action="accept", content=elicit_content)
        return ElicitResult(action=args.elicit_action)

    async def on_roots(_ctx: Any) -> list[str]:
        rec.server_requests.append({"method": "roots/list", "params": None})
        return args.root or ["file:///tmp/lockstep-root"]

    async def on_log(message: types.LoggingMessageNotificationParams) -> None:
        rec.logs.append(dump(message))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        rec.progress.append({"progress": progress, "total": total, "message": message})

    if args.url:
        headers: dict[str, str] = {}
        for h in args.header:
            name, sep, value = h.partition(":")
            if not sep:
                raise ValueError(f"--header {h!r}: expected 'Name: value'")
            headers[name.strip()] = value.strip()

        async def on_response(response: Any) -> None:
            if response.status_code >= 400:
                rec.http_errors.append({
                    "status": response.status_code, "method": response.request.method,
                    "www_authenticate": response.headers.get("www-authenticate"),
                    "content_type": response.headers.get("content-type")})

        def client_factory(**kwargs: Any) -> Any:
            from mcp.shared._httpx_utils import create_mcp_http_client
            hdrs = kwargs.get("headers") or {}
            c = create_mcp_http_client(headers=dict(hdrs), timeout=kwargs.get("timeout"), auth=kwargs.get("auth"))
            c.event_hooks["response"].append(on_response)
            return c

        transport: Any = StreamableHttpTransport(args.url, headers=headers, httpx_client_factory=client_factory)
    else:
        cmd = shlex.split(args.stdio_cmd)
        env = dict(kv.split("=", 1) for kv in args.stdio_env) or None
        transport = StdioTransport(command=cmd[0], args=cmd[1:], env=env, keep_alive=False)

    client = Client(
        transport,
        name="lockstep-test-client_fastmcp.py",
        mode=PROTOCOLS[args.protocol],
        timeout=args.timeout,
        sampling_handler=on_sampling,
        elicitation_handler=on_elicit,
        roots=on_roots,
        log_handler=on_log,
        progress_handler=on_progress,
        cache=True if args.cache else None,
    )
    try:
        await client.__aenter__()
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        emit({"step": 0, "op": "connect", "ok": False, **error_fields(exc), **rec.extras()})
        if args.trace:
            traceback.print_exception(exc)
        return 2
    try:
        info = client.server_info
        emit({"step": 0, "op": "connect", "ok": True, "protocol": client.protocol_version,
              "server_info": dump(info) if info is not None else None, **rec.extras()})
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
            except Exception as exc:  # noqa: BLE001
                out["ok"] = False
                out.update(error_fields(exc))
                if args.trace:
                    traceback.print_exception(exc)
            out.update(rec.extras())
            emit(out)
        emit({"step": len(steps) + 1, "op": "done", "ok": True, "steps": len(steps)})
    finally:
        await client.__aexit__(None, None, None)
    return 0


async def run_step(client: Client, op: str, step: dict[str, Any], rec: Recorder, on_progress: Any) -> dict[str, Any]:
    if op in LIST_OPS:
        meth, field, key = LIST_OPS[op]
        method = getattr(client, meth)
        result = dump(await method(cursor=step.get("cursor")))
        if step.get("all_pages"):
            items, pages = list(result.get(field, [])), 1
            while result.get("nextCursor"):
                result = dump(await method(cursor=result["nextCursor"]))
                items += result.get(field, [])
                pages += 1
            return {"result": {field: items}, "names": [i.get(key) for i in items], "pages": pages}
        return {"result": result, "names": [i.get(key) for i in result.get(field, [])]}
    if op == "call_tool":
        res = await client.call_tool(step["name"], step.get("args", step.get("arguments", {})),
                                     raise_on_error=False,
                                     progress_handler=on_progress if step.get("progress", True) else None)
        wire: dict[str, Any] = {"content": dump(list(res.content)), "isError": bool(res.is_error)}
        if res.structured_content is not None:
            wire["structuredContent"] = res.structured_content
        if getattr(res, "meta", None):
            wire["_meta"] = res.meta
        text = "\n".join(c.get("text", "") for c in wire["content"] if c.get("type") == "text")
        out = {"result": wire, "is_error": bool(res.is_error), "text": text, "data": dump(res.data)}
        if rec.progress:
            out["progress"] = rec.progress
        return out
    if op == "get_prompt":
        wire = dump(await client.get_prompt_mcp(step["name"], step.get("args", step.get("arguments"))))
        return {"result": wire, "text": "\n".join(m.get("content", {}).get("text", "") for m in wire.get("messages", []))}
    if op == "read_resource":
        wire = dump(await client.read_resource_mcp(step["uri"]))
        return {"result": wire, "text": "\n".join(c.get("text", "") for c in wire.get("contents", []))}
    if op == "ping":
        return {"result": {"pong": await client.ping()}}
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
        print(f"client_fastmcp.py: bad --steps: {exc}", file=sys.stderr)
        return 64
    return anyio.run(run, args, steps)


if __name__ == "__main__":
    sys.exit(main())
