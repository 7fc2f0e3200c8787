#!/usr/bin/env python3
"""MCP conformance fixture server for lockstep's gateway tests (PyPI `mcp` 2.3.0, `MCPServer`).

    python conformance_fixture.py --port N [--name NAME] [--record PATH [--record-http]] [--log-level L]

Serves the fixed names that the server scenarios of `@modelcontextprotocol/conformance`
(0.2.0-alpha.12, `conformance server --requirements 2025-11-25|2026-07-28`) call, so the suite can
run against this file directly or through the gateway. It is lockstep's own stand-in for the
reference fixture (the Python SDK's `examples/servers/everything-server`), which is not on a registry.

Streamable HTTP on http://127.0.0.1:N/mcp only (`--port 0` picks a free port). Once the socket
accepts, exactly one stdout line `READY <port> <url>` is printed (flushed). SIGTERM shuts it down
(uvicorn re-raises the signal: exit status 143). Both protocol eras are served on the one endpoint:
2025-11-25 (`initialize`, `Mcp-Session-Id`, GET stream, DELETE, server->client requests on the POST's
SSE stream, resumable SSE with `Last-Event-ID`) and 2026-07-28 (`server/discover`, stateless,
`InputRequiredResult` instead of server->client requests, `subscriptions/listen`).
DNS rebinding protection (the SDK's, for host 127.0.0.1): `Host` must be 127.0.0.1:<port>,
localhost:<port> or [::1]:<port> (a port is required), else HTTP 421; an `Origin` header, when
present, must be http:// on one of those, else HTTP 403.

--record PATH appends one JSON object per line, flushed at once, for every JSON-RPC request and
notification that reached the MCP layer (before any SDK middleware, validation or the handler; so
`params.requestState` is the sealed wire form), in the shape of upstream.py's rpc lines:
  {"ts", "upstream", "transport": "http", "source": "rpc", "method", "id", "params",
   "protocol_version", "headers" (lower-case names), "session_id"}
The client's JSON-RPC *responses* (its answers to sampling/elicitation requests, 2025-11-25) never
reach that layer; each gets a line when its POST arrives:
  {"ts", "upstream", "transport", "source": "response", "id", "result" | "error",
   "protocol_version" (the MCP-Protocol-Version header), "headers", "session_id"}
--record-http adds upstream.py's http lines to the same file: one per HTTP request (any method,
also GET streams and DELETE), written when the response starts: {"ts", "upstream", "transport",
"source": "http", "http_method", "path", "headers", "body", "status"}.

Fixture names, and the scenarios that use them ("both" = run in both requirement sets):
  tools
    test_simple_text                      tools-call-simple-text (both), tools-list (both)
    test_image_content                    tools-call-image (both)
    test_audio_content                    tools-call-audio (both)
    test_embedded_resource                tools-call-embedded-resource (both)
    test_multiple_content_types           tools-call-mixed-content (both)
    test_error_handling                   tools-call-error (both): isError result
    test_tool_with_progress               tools-call-with-progress (both): 3 notifications/progress
    test_tool_with_logging                tools-call-with-logging (2025): 3 notifications/message
    test_reconnection                     server-sse-polling (2025): closes the POST's SSE stream
                                          mid-call; the rest is replayed on GET + Last-Event-ID
    test_sampling(prompt)                 tools-call-sampling (2025): sampling/createMessage
    test_elicitation(message)             tools-call-elicitation (2025): elicitation/create
    test_elicitation_sep1034_defaults     elicitation-sep1034-defaults (2025)
    test_elicitation_sep1330_enums        elicitation-sep1330-enums (2025)
        (these four ask the client in the era's form: a server->client request on the POST's SSE
         stream in 2025-11-25, an InputRequiredResult + retry in 2026-07-28)
    test_input_required_result_elicitation   input-required-result-basic-elicitation,
                                          -missing-input-response, -result-type,
                                          -ignore-extra-params, -validate-input (2026)
    test_input_required_result_sampling   input-required-result-basic-sampling (2026)
    test_input_required_result_list_roots input-required-result-basic-list-roots (2026)
    test_input_required_result_request_state   input-required-result-request-state (2026)
    test_input_required_result_multiple_inputs input-required-result-multiple-input-requests (2026)
    test_input_required_result_multi_round     input-required-result-multi-round (2026)
    test_input_required_result_tampered_state  input-required-result-tampered-state (2026): the
                                          SDK seals requestState (HMAC) and rejects a tampered one
    test_input_required_result_capabilities    input-required-result-capability-check (2026)
        (the test_input_required_result_* tools and prompt are 2026-07-28 only: on older versions
         they answer JSON-RPC -32600 instead of an InputRequiredResult)
    test_missing_capability               server-stateless (2026): -32021 without `sampling`
    test_logging_tool                     server-stateless (2026): no notifications/message without
                                          the _meta logLevel opt-in
    test_streaming_elicitation            server-stateless (2026): elicitation as InputRequiredResult,
                                          no independent request on the response stream
    test_trigger_tool_change, test_trigger_prompt_change
                                          server-stateless (2026): list-changed events on
                                          subscriptions/listen streams
    test_x_mcp_header(region)             http-custom-header-server-validation (2026, pending):
                                          `x-mcp-header: Region` -> `Mcp-Param-Region`
    json_schema_2020_12_tool              json-schema-2020-12 (both, pending): 2020-12 inputSchema
  resources
    test://static-text                    resources-read-text (both), resources-list (both)
    test://static-binary                  resources-read-binary (both)
    test://template/{id}/data             resources-templates-read (both)
    test://watched-resource               resources-subscribe / resources-unsubscribe (2025)
  prompts
    test_simple_prompt                    prompts-get-simple (both), prompts-list (both)
    test_prompt_with_arguments(arg1, arg2)     prompts-get-with-args (both), completion-complete (both)
    test_prompt_with_embedded_resource(resourceUri)   prompts-get-embedded-resource (both)
    test_prompt_with_image                prompts-get-with-image (both)
    test_input_required_result_prompt     input-required-result-non-tool-request (2026)
  methods
    logging/setLevel                      logging-set-level (2025); filters test_tool_with_logging
    resources/subscribe, resources/unsubscribe   resources-subscribe / -unsubscribe (2025)
    completion/complete                   completion-complete (both): prefix matches
  no fixture needed: server-initialize, server-session-lifecycle, ping, server-sse-multiple-streams,
    dns-rebinding-protection, sep-2164-resource-not-found, caching, http-header-validation,
    input-required-result-unsupported-methods, the rest of server-stateless.
Not implemented: the tasks extension (io.modelcontextprotocol/tasks, the unscored tasks-*
scenarios); `mcp` 2.3.0 has no tasks support.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import time
import warnings
from typing import Annotated, Any

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.mcpserver import Context, UserMessage
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    INVALID_REQUEST,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

# logging, sampling and roots are deprecated in 2026-07-28; they are still served
warnings.simplefilter("ignore", MCPDeprecationWarning)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--name", default="lockstep-conformance-fixture", help="serverInfo name, and tag in records")
    p.add_argument("--record", metavar="PATH", help="append every received JSON-RPC message to PATH as a JSON line")
    p.add_argument("--record-http", action="store_true",
                   help="with --record: also one line per HTTP request (upstream.py's http lines)")
    p.add_argument("--log-level", default="WARNING", help="server-side log level (stderr)")
    return p.parse_args()


ARGS = parse_args()
RECORD = None  # open file while serving


def record(entry: dict[str, Any]) -> None:
    if RECORD is None:
        return
    entry = {"ts": time.time(), "upstream": ARGS.name, "transport": "http", **entry}
    RECORD.write(json.dumps(entry, default=str, separators=(",", ":")) + "\n")
    RECORD.flush()


# ------------------------------------------------------------------ SSE resumability (SEP-1699)
class MemoryEventStore(EventStore):
    """Keeps every SSE event per stream, so a client that lost a stream can GET it again with
    `Last-Event-ID` and get what it missed. Event ids are one global counter, unique across streams."""

    def __init__(self) -> None:
        self._counter = 0
        self._stream_of: dict[str, str] = {}  # event id -> stream id
        self._events: dict[str, list[tuple[int, JSONRPCMessage | None]]] = {}  # stream id -> events

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        self._counter += 1
        event_id = str(self._counter)
        self._stream_of[event_id] = stream_id
        self._events.setdefault(stream_id, []).append((self._counter, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream_id = self._stream_of.get(last_event_id)
        if stream_id is None:
            return None
        after = int(last_event_id)
        for number, message in self._events[stream_id]:
            if number > after and message is not None:  # None = a priming event, nothing to replay
                await send_callback(EventMessage(message, str(number)))
        return stream_id


# ------------------------------------------------------------------ server + middleware
# requestState is sealed by the SDK (RequestStateSecurity.ephemeral(): a per-process key), which is
# what input-required-result-tampered-state checks.
mcp = MCPServer(ARGS.name, version="1.0.0", log_level=ARGS.log_level.upper(),
                instructions="lockstep conformance fixture")

JSON_SCHEMA_2020_12_TOOL = "json_schema_2020_12_tool"
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _headers_of(request: Any) -> dict[str, str] | None:
    headers = getattr(request, "headers", None)
    return None if headers is None else {k.lower(): v for k, v in headers.items()}


async def fixture_middleware(ctx: Any, call_next: Any) -> Any:
    """Records each request/notification, and gives json_schema_2020_12_tool its hand-written
    inputSchema in tools/list (MCPServer derives schemas from signatures and has no override)."""
    headers = _headers_of(ctx.request)
    record({
        "source": "rpc",
        "method": ctx.method,
        "id": ctx.request_id,
        "params": dict(ctx.params) if ctx.params is not None else None,
        "protocol_version": ctx.protocol_version,
        "headers": headers,
        "session_id": headers.get("mcp-session-id") if headers else None,
    })
    result = await call_next(ctx)
    if ctx.method == "tools/list" and isinstance(result, dict) and isinstance(result.get("tools"), list):
        result = {**result, "tools": [
            {**t, "inputSchema": JSON_SCHEMA_2020_12} if t.get("name") == JSON_SCHEMA_2020_12_TOOL else t
            for t in result["tools"]]}
    return result


# Outermost, so each line shows the message as it arrived: requestState still sealed, and also
# retries that the SDK's request-state boundary then rejects (tampered state -> HTTP 400, -32602).
mcp.middleware.insert(0, fixture_middleware)


def modern(ctx: Context) -> bool:
    """True on 2026-07-28 (stateless, MRTR), False on the handshake era (2025-11-25 and older)."""
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def session_id(ctx: Any) -> str | None:
    headers = _headers_of(getattr(ctx, "request", None))
    return headers.get("mcp-session-id") if headers else None


# ------------------------------------------------------------------ content tools
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_EMPTY = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="


@mcp.tool()
def test_simple_text() -> str:
    """Returns one text block."""
    return "This is a simple text response for testing."


@mcp.tool()
def test_image_content() -> list[ImageContent]:
    """Returns one image block (a 1x1 PNG)."""
    return [ImageContent(type="image", data=PNG_1X1, mime_type="image/png")]


@mcp.tool()
def test_audio_content() -> list[AudioContent]:
    """Returns one audio block (an empty WAV)."""
    return [AudioContent(type="audio", data=WAV_EMPTY, mime_type="audio/wav")]


@mcp.tool()
def test_embedded_resource() -> list[EmbeddedResource]:
    """Returns one embedded text resource."""
    return [EmbeddedResource(type="resource", resource=TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."))]


@mcp.tool()
def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Returns text, image and embedded resource blocks."""
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG_1X1, mime_type="image/png"),
        EmbeddedResource(type="resource", resource=TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json", text='{"test": "data", "value": 123}')),
    ]


@mcp.tool()
def test_error_handling() -> str:
    """Always fails: a result with isError: true."""
    raise ToolError("This tool intentionally returns an error for testing")


# ------------------------------------------------------------------ notifications during a call
LOG_ORDER = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
LOG_LEVEL_OF_SESSION: dict[str | None, str] = {}  # logging/setLevel, per Mcp-Session-Id


@mcp.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three info notifications/message (dropped if logging/setLevel asked for less)."""
    wanted = LOG_LEVEL_OF_SESSION.get(session_id(ctx.request_context), "debug")
    for i, text in enumerate(["Tool execution started", "Tool processing data", "Tool execution completed"]):
        if i:
            await asyncio.sleep(0.05)
        if LOG_ORDER.index("info") >= LOG_ORDER.index(wanted):
            await ctx.info(text)
    return "Tool with logging executed successfully"


@mcp.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Sends notifications/progress 0, 50, 100 of 100 (needs a progressToken); answers the token."""
    for step in (0, 50, 100):
        if step:
            await asyncio.sleep(0.05)
        await ctx.report_progress(progress=step, total=100, message=f"Completed step {step} of 100")
    meta = ctx.request_context.meta or {}
    return str(meta.get("progress_token", 0))


@mcp.tool()
async def test_reconnection(ctx: Context) -> str:
    """SSE polling (SEP-1699): logs, closes the POST's SSE stream, logs again, answers. The client
    gets the second log and the result by reconnecting with GET + Last-Event-ID (2025-11-25)."""
    await ctx.info("Before disconnect")
    await ctx.close_sse_stream()  # no-op on 2026-07-28 (closing is cancellation there)
    await asyncio.sleep(0.2)
    await ctx.info("After reconnect")
    return "Reconnection test completed"


# ------------------------------------------------------------------ asking the client, both eras
def missing_capability(name: str) -> MCPError:
    return MCPError(code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                    message=f"This tool requires the client '{name}' capability",
                    data={"requiredCapabilities": {name: {}}})


async def ask_client(ctx: Context, key: str, request: CreateMessageRequest | ElicitRequest) -> Any:
    """Asks the client one question in the era's form and returns its answer (CreateMessageResult or
    ElicitResult), or an InputRequiredResult that the tool must return as is.

    2025-11-25: a server->client request on the originating POST's SSE stream
    (related_request_id), answered by the client in a separate POST.
    2026-07-28: round 1 returns InputRequiredResult {inputRequests: {key: request}}; the client
    retries the same tools/call with inputResponses[key], which is then the answer."""
    capability = "sampling" if isinstance(request, CreateMessageRequest) else "elicitation"
    caps = ctx.client_capabilities
    if caps is None or getattr(caps, capability) is None:
        if modern(ctx):
            raise missing_capability(capability)
        raise ToolError(f"the client did not declare the '{capability}' capability")
    if modern(ctx):
        answer = (ctx.input_responses or {}).get(key)
        wanted = CreateMessageResult if capability == "sampling" else ElicitResult
        if isinstance(answer, wanted):
            return answer
        return InputRequiredResult(input_requests={key: request})
    if isinstance(request, CreateMessageRequest):
        params = request.params
        return await ctx.session.create_message(params.messages, max_tokens=params.max_tokens,
                                                related_request_id=ctx.request_id)
    return await ctx.session.elicit_form(request.params.message, request.params.requested_schema,
                                         related_request_id=ctx.request_id)


def elicitation(message: str, properties: dict[str, Any], required: list[str] | None = None) -> ElicitRequest:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def sampling(text: str, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(params=CreateMessageRequestParams(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=text))], max_tokens=max_tokens))


def elicit_summary(answer: ElicitResult) -> str:
    content = answer.content if answer.action == "accept" and answer.content is not None else {}
    return f"action={answer.action}, content={json.dumps(content, separators=(',', ':'))}"


@mcp.tool()
async def test_sampling(prompt: str, ctx: Context) -> str | InputRequiredResult:
    """Asks the client's LLM (sampling/createMessage, maxTokens 100) and returns its answer."""
    answer = await ask_client(ctx, "llm", sampling(prompt, 100))
    if isinstance(answer, InputRequiredResult):
        return answer
    content = answer.content
    return f"LLM response: {content.text if isinstance(content, TextContent) else '(non-text content)'}"


@mcp.tool()
async def test_elicitation(message: str, ctx: Context) -> str | InputRequiredResult:
    """Asks the user (elicitation/create, form: username + email) and returns the answer."""
    answer = await ask_client(ctx, "user_info", elicitation(message, {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    }, ["username", "email"]))
    if isinstance(answer, InputRequiredResult):
        return answer
    return f"User response: {elicit_summary(answer)}"


@mcp.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> str | InputRequiredResult:
    """Elicitation whose schema has a default for every primitive type (SEP-1034)."""
    answer = await ask_client(ctx, "user_defaults", elicitation("Please provide user information", {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {"type": "string", "description": "User status",
                   "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    }))
    if isinstance(answer, InputRequiredResult):
        return answer
    return f"Elicitation completed: {elicit_summary(answer)}"


@mcp.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> str | InputRequiredResult:
    """Elicitation with the five enum schema forms of SEP-1330."""
    def titled(prefix: str, names: list[str]) -> list[dict[str, str]]:
        return [{"const": f"{prefix}{i}", "title": name} for i, name in enumerate(names, 1)]

    message = "Please select values using different enum schema types"
    answer = await ask_client(ctx, "enum_choices", elicitation(message, {
        "untitledSingle": {"type": "string", "description": "Simple enum without titles",
                           "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "description": "Enum with titled options (oneOf)",
                         "oneOf": titled("value", ["First Option", "Second Option", "Third Option"])},
        "legacyEnum": {"type": "string", "description": "Legacy enum with enumNames",
                       "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "description": "Multi-select without titles",
                          "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "description": "Multi-select with titled options",
                        "items": {"anyOf": titled("value", ["First Choice", "Second Choice", "Third Choice"])}},
    }))
    if isinstance(answer, InputRequiredResult):
        return answer
    return f"Elicitation completed: {elicit_summary(answer)}"


# ------------------------------------------------------------------ 2026-07-28 InputRequiredResult (SEP-2322)
def require_modern(ctx: Context) -> None:
    """InputRequiredResult exists only in 2026-07-28; on older versions the SDK would turn it into
    -32603 "Handler returned an invalid result", so say what is wrong instead."""
    if not modern(ctx):
        raise MCPError(code=INVALID_REQUEST, message="this fixture needs protocol 2026-07-28 "
                       f"(InputRequiredResult), not {ctx.protocol_version}")


def ask_name(message: str = "What is your name?") -> ElicitRequest:
    return elicitation(message, {"name": {"type": "string"}}, ["name"])


def ask_confirm() -> ElicitRequest:
    return elicitation("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])


def responses(ctx: Context) -> dict[str, Any]:
    return dict(ctx.input_responses or {})


def accepted(answer: Any, field: str) -> Any:
    """The field of an accepted ElicitResult, else None."""
    if isinstance(answer, ElicitResult) and answer.action == "accept" and answer.content:
        return answer.content.get(field)
    return None


@mcp.tool()
async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Round 1: inputRequests.user_name (elicitation). Round 2: greets the name. Missing, wrong or
    malformed responses get round 1 again; extra keys are ignored."""
    require_modern(ctx)
    answer = responses(ctx).get("user_name")
    if isinstance(answer, ElicitResult):
        return f"Hello, {accepted(answer, 'name') or 'stranger'}!"
    return InputRequiredResult(input_requests={"user_name": ask_name()})


@mcp.tool()
async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """Round 1: inputRequests.capital_question (sampling). Round 2: repeats the model's text."""
    require_modern(ctx)
    answer = responses(ctx).get("capital_question")
    if isinstance(answer, CreateMessageResult):
        text = answer.content.text if isinstance(answer.content, TextContent) else "?"
        return f"Model said: {text}"
    return InputRequiredResult(input_requests={"capital_question": sampling("What is the capital of France?", 100)})


@mcp.tool()
async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """Round 1: inputRequests.client_roots (roots/list). Round 2: counts and names the roots."""
    require_modern(ctx)
    answer = responses(ctx).get("client_roots")
    if isinstance(answer, ListRootsResult):
        return f"Client exposed {len(answer.roots)} root(s): {', '.join(str(r.uri) for r in answer.roots)}"
    return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})


REQUEST_STATE_NONCE = "lockstep-request-state-1"


@mcp.tool()
async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Round 1: inputRequests.confirm + requestState. Round 2 completes only when requestState
    comes back unchanged (the SDK seals it on the wire and unseals it here)."""
    require_modern(ctx)
    if "confirm" in responses(ctx) and ctx.request_state == REQUEST_STATE_NONCE:
        return "state-ok: confirmation received"
    return InputRequiredResult(input_requests={"confirm": ask_confirm()}, request_state=REQUEST_STATE_NONCE)


@mcp.tool()
async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Round 1: elicitation + sampling + roots/list in one InputRequiredResult. Round 2: all three."""
    require_modern(ctx)
    if {"user_name", "greeting", "client_roots"} <= responses(ctx).keys():
        return "All inputs received."
    return InputRequiredResult(input_requests={
        "user_name": ask_name(),
        "greeting": sampling("Generate a greeting", 50),
        "client_roots": ListRootsRequest(),
    }, request_state="multiple-inputs")


@mcp.tool()
async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Three rounds: step1 (name) -> step2 (colour) -> result; requestState carries the round."""
    require_modern(ctx)
    state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
    got = responses(ctx)
    if state.get("round") == 1 and "step1" in got:
        return InputRequiredResult(
            input_requests={"step2": elicitation("Step 2: What is your favorite color?",
                                                 {"color": {"type": "string"}}, ["color"])},
            request_state=json.dumps({"round": 2, "name": accepted(got["step1"], "name")}))
    if state.get("round") == 2 and "step2" in got:
        return f"{state.get('name')} likes {accepted(got['step2'], 'color')}."
    # round 0, or a response that does not fit the round: start over
    return InputRequiredResult(input_requests={"step1": ask_name("Step 1: What is your name?")},
                               request_state=json.dumps({"round": 1}))


@mcp.tool()
async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """Round 1: requestState "round-1". A tampered echo never reaches this function: the SDK's
    request-state boundary rejects it with a JSON-RPC error."""
    require_modern(ctx)
    if ctx.request_state is None:
        return InputRequiredResult(input_requests={"confirm": ask_confirm()}, request_state="round-1")
    return f"state-ok: {ctx.request_state}"


@mcp.tool()
async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
    """Asks only for what the client declared: sampling and/or elicitation."""
    require_modern(ctx)
    caps = ctx.client_capabilities
    wanted: dict[str, InputRequest] = {}
    if caps is None or caps.sampling is not None:
        wanted["sample"] = sampling("Say hello", 50)
    if caps is None or caps.elicitation is not None:
        wanted["ask"] = ask_name()
    return InputRequiredResult(input_requests=wanted, request_state="capability-gated")


# ------------------------------------------------------------------ 2026-07-28 diagnostics
@mcp.tool()
async def test_missing_capability(ctx: Context) -> str:
    """Needs the client's `sampling` capability; without it a JSON-RPC error -32021
    (MissingRequiredClientCapability) with data.requiredCapabilities, not an isError result."""
    caps = ctx.client_capabilities
    if caps is None or caps.sampling is None:
        raise missing_capability("sampling")
    return "Client declared sampling capability; proceeding."


@mcp.tool()
async def test_logging_tool(ctx: Context) -> str:
    """Sends debug/info/warning notifications/message. On 2026-07-28 the SDK drops them unless the
    request's _meta["io.modelcontextprotocol/logLevel"] asks for them."""
    for level in ("debug", "info", "warning"):
        await ctx.log(level, f"test_logging_tool: {level} message")
    return "logged at debug, info and warning"


@mcp.tool()
async def test_streaming_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Progress, then an elicitation. On 2026-07-28 the stream must carry only notifications and the
    result (an InputRequiredResult), never an independent elicitation/create request."""
    await ctx.report_progress(progress=1, total=2, message="about to ask")
    answer = await ask_client(ctx, "streaming_answer", ask_name())
    if isinstance(answer, InputRequiredResult):
        return answer
    return f"Streaming elicitation: {elicit_summary(answer)}"


def _dynamic() -> str:
    """Added and removed again by test_trigger_tool_change / test_trigger_prompt_change."""
    return "dynamic"


@mcp.tool()
async def test_trigger_tool_change(ctx: Context) -> str:
    """Changes the tool list and announces it (subscriptions/listen in 2026-07-28,
    notifications/tools/list_changed on the GET stream in 2025-11-25)."""
    mcp.add_tool(_dynamic, name="test_dynamic_tool")
    mcp.remove_tool("test_dynamic_tool")
    await ctx.notify_tools_changed()
    if not modern(ctx):
        await ctx.session.send_tool_list_changed()
    return "tool list changed"


@mcp.tool()
async def test_trigger_prompt_change(ctx: Context) -> str:
    """Changes the prompt list and announces it (as test_trigger_tool_change)."""
    mcp.add_prompt(Prompt.from_function(_dynamic, name="test_dynamic_prompt", description="dynamic"))
    mcp.remove_prompt("test_dynamic_prompt")
    await ctx.notify_prompts_changed()
    if not modern(ctx):
        await ctx.session.send_prompt_list_changed()
    return "prompt list changed"


@mcp.tool()
def test_x_mcp_header(
    region: Annotated[str, Field(description="Mirrored into the Mcp-Param-Region header",
                                 json_schema_extra={"x-mcp-header": "Region"})] = "<none>",
) -> str:
    """SEP-2243: `region` is mirrored as `Mcp-Param-Region`; the SDK rejects a mismatch (-32020)."""
    return f"region={region}"


@mcp.tool(name=JSON_SCHEMA_2020_12_TOOL)
def json_schema_2020_12_tool() -> str:
    """Lists a JSON Schema 2020-12 inputSchema ($defs, $ref, allOf/anyOf, if/then/else)."""
    return JSON_SCHEMA_2020_12_TOOL


# ------------------------------------------------------------------ resources
@mcp.resource("test://static-text", name="static-text", description="A static text resource",
              mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary", name="static-binary", description="A static binary resource (PNG)",
              mime_type="image/png")
def static_binary() -> bytes:
    return base64.b64decode(PNG_1X1)


@mcp.resource("test://template/{id}/data", name="template-data", description="Data for one id",
              mime_type="application/json")
def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@mcp.resource("test://watched-resource", name="watched-resource", description="A resource to subscribe to",
              mime_type="text/plain")
def watched_resource() -> str:
    return "Watched resource content"


# ------------------------------------------------------------------ prompts
def user_text(text: str) -> UserMessage:
    return UserMessage(role="user", content=TextContent(type="text", text=text))


@mcp.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A prompt without arguments."""
    return [user_text("This is a simple prompt for testing.")]


@mcp.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """A prompt with two required arguments."""
    return [user_text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@mcp.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
    """A prompt that embeds the resource named by resourceUri."""
    return [
        UserMessage(role="user", content=EmbeddedResource(type="resource", resource=TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."))),
        user_text("Please process the embedded resource above."),
    ]


@mcp.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt with an image."""
    return [
        UserMessage(role="user", content=ImageContent(type="image", data=PNG_1X1, mime_type="image/png")),
        user_text("Please analyze the image above."),
    ]


@mcp.prompt()
async def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
    """InputRequiredResult on prompts/get: asks for user_context first (2026-07-28)."""
    require_modern(ctx)
    answer = responses(ctx).get("user_context")
    if isinstance(answer, ElicitResult):
        return [user_text(f"Use the following context: {accepted(answer, 'context') or '?'}")]
    return InputRequiredResult(input_requests={"user_context": elicitation(
        "What context should the prompt use?", {"context": {"type": "string"}}, ["context"])})


# ------------------------------------------------------------------ completion, logging level, subscriptions
COMPLETIONS = {"arg1": ["paris", "park", "party", "test-alpha", "test-beta"],
               "arg2": ["one", "two", "three"], "id": ["1", "2", "123"]}


@mcp.completion()
async def complete(ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument,
                   context: CompletionContext | None) -> Completion:
    """Prefix matches from a fixed list per argument name (empty for unknown arguments)."""
    values = [v for v in COMPLETIONS.get(argument.name, []) if v.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


SUBSCRIPTIONS: dict[str | None, set[str]] = {}  # Mcp-Session-Id -> subscribed URIs


async def set_logging_level(ctx: ServerRequestContext, params: SetLevelRequestParams) -> EmptyResult:
    LOG_LEVEL_OF_SESSION[session_id(ctx)] = params.level
    return EmptyResult()


async def subscribe(ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
    SUBSCRIPTIONS.setdefault(session_id(ctx), set()).add(str(params.uri))
    return EmptyResult()


async def unsubscribe(ctx: ServerRequestContext, params: UnsubscribeRequestParams) -> EmptyResult:
    SUBSCRIPTIONS.get(session_id(ctx), set()).discard(str(params.uri))
    return EmptyResult()


# MCPServer has no public registration for these three (handshake-era) methods.
for _method, _params, _handler in [("logging/setLevel", SetLevelRequestParams, set_logging_level),
                                   ("resources/subscribe", SubscribeRequestParams, subscribe),
                                   ("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)]:
    mcp._lowlevel_server.add_request_handler(_method, _params, _handler)  # noqa: SLF001


# ------------------------------------------------------------------ HTTP
def replay_body(body: bytes, receive: Any) -> Any:
    """An ASGI receive() that yields the already-read body once, then the real messages
    (http.disconnect, which the SSE streams watch for)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> dict:
        return pending.pop() if pending else await receive()

    return replay


class HttpRecorder:
    """ASGI wrapper (with --record): a `response` line for each JSON-RPC response the client POSTs
    (the middleware never sees those), and with --record-http one `http` line per HTTP request,
    written when the response starts."""

    def __init__(self, app: Any, http_lines: bool) -> None:
        self.app = app
        self.http_lines = http_lines

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # read the whole body, then hand it to the app again
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if isinstance(parsed, dict) and "method" not in parsed and ("result" in parsed or "error" in parsed):
            record({"source": "response", "id": parsed.get("id"),
                    **{k: parsed[k] for k in ("result", "error") if k in parsed},
                    "protocol_version": headers.get("mcp-protocol-version"), "headers": headers,
                    "session_id": headers.get("mcp-session-id")})
        if not self.http_lines:
            await self.app(scope, replay_body(body, receive), send)
            return
        entry = {"ts": time.time(), "source": "http", "http_method": scope["method"], "path": scope["path"],
                 "headers": headers, "body": parsed, "status": None}
        started = False

        async def send_and_record(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                record({**entry, "status": message["status"]})
            await send(message)

        try:
            await self.app(scope, replay_body(body, receive), send_and_record)
        finally:
            if not started:
                record(entry)


async def serve() -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", ARGS.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    # event_store + retry_interval: POST SSE streams start with a priming event (id, empty data,
    # `retry: 100`), every event gets an id, and GET + Last-Event-ID replays a closed stream.
    # host="127.0.0.1" turns on the SDK's Host/Origin allow-list for localhost.
    app: Any = mcp.streamable_http_app(event_store=MemoryEventStore(), retry_interval=100, host="127.0.0.1")
    if ARGS.record:
        app = HttpRecorder(app, http_lines=ARGS.record_http)
    server = uvicorn.Server(uvicorn.Config(app, log_level=ARGS.log_level.lower(), lifespan="on",
                                           timeout_graceful_shutdown=2))

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
    asyncio.run(serve())


if __name__ == "__main__":
    main()
