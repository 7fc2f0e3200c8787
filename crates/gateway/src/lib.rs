//! The core of the lockstep MCP gateway: everything between the bytes an MCP client sends
//! and the decision lockstep takes on them, without any I/O, so that the HTTP server and
//! the upstream transports built on top of it stay thin.
//!
//! What it owns:
//! - [`jsonrpc`] parses one incoming JSON-RPC message strictly (no duplicate keys, no
//!   batches, bounded depth) and keeps the exact text that will be forwarded; it also
//!   builds JSON-RPC error objects. [`strict_json`] is the scanner under it.
//! - [`denial`] holds lockstep's own error codes and the two shapes of a denial (a
//!   JSON-RPC error, or a `tools/call` result with `isError: true`).
//! - [`era`] knows the two MCP protocol eras (2025-11-25 and earlier with `initialize`
//!   and sessions; 2026-07-28, stateless, with `_meta` and mirrored headers), negotiates
//!   versions and checks that headers agree with the body; [`param_headers`] does the
//!   same for the `Mcp-Param-*` headers that mirror annotated tool arguments.
//! - [`session`] seals session ids with an AEAD, so that a session carries its upstream
//!   state to any gateway replica.
//! - [`input`] builds the policy input document (`input.agent`, `input.request`,
//!   `input.session`), published as `schema/policy-input.schema.json`.
//! - [`naming`] puts several upstreams under one endpoint (prefixed tool/prompt names
//!   and resource URIs, mapped back exactly).
//! - [`api_keys`] reads the API key file and looks keys up in constant time.
//! - [`config`] reads `gateway.yaml`.
//!
//! What it must not do:
//! - parse or verify bundles itself: that is `lockstep-bundle` through `lockstep-sync`;
//! - evaluate Rego other than through lockstep's decision path (`lockstep-policy`'s
//!   active snapshot, so that every decision names the revision that took it);
//! - pass a client's credential upstream: the MCP authorization spec forbids token
//!   passthrough; upstreams get their own credentials from the configuration;
//! - trust a header over the body: decisions are taken on the parsed body, and headers
//!   are only checked against it.

#![forbid(unsafe_code)]

pub mod api_keys;
pub mod config;
pub mod denial;
pub mod era;
pub mod input;
pub mod jsonrpc;
pub mod naming;
pub mod param_headers;
pub mod session;
pub mod strict_json;
