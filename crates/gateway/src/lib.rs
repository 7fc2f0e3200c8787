//! lockstep-gateway: the MCP gateway. Every MCP request is decided by the same signed
//! revision as every other instance's, through lockstep's one decision path, before
//! anything reaches an upstream.
//!
//! The I/O: [`start`] (`run`) reads the key files, starts the sync engine and
//! serves the Streamable HTTP front door (`front`: origin/host checks, identity,
//! parsing, era and session, layers (`layers`), forwarding to Streamable HTTP
//! upstreams (`upstream`, `sse`) and supervised stdio child processes (`stdio_upstream`), list fan-out and filtering), with an audit line per
//! request ([`audit`]) and `/metrics` (`metrics`); [`serve_stdio`] is the stdio front
//! door, which hands each line to the same front door in process.
//!
//! The pure core, everything between the bytes an MCP client sends and the decision:
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
//!   state to any gateway replica; [`relay`] seals, the same way, the ids that route a
//!   client's answers to upstream requests (sampling, elicitation, roots) and its
//!   `Last-Event-ID` back to the upstream streams they came from.
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
pub mod audit;
pub mod config;
pub mod denial;
pub mod era;
mod front;
pub mod input;
pub mod jsonrpc;
mod layers;
mod metrics;
pub mod naming;
pub mod oauth;
pub mod param_headers;
pub mod relay;
mod run;
pub mod session;
mod sse;
mod stdio_front;
mod stdio_upstream;
pub mod strict_json;
mod subscriptions;
pub mod tool_server;
mod upstream;
pub mod upstream_token;

pub use front::UPSTREAM_UNAVAILABLE;
pub use run::{RunningGateway, StartError, start};
pub use stdio_front::{KEY_ENV, serve_stdio};
