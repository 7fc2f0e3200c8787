//! The bundle service protocol's wire names, shared by the server and its clients:
//! OPA's long-polling content type and lockstep's synchronized cut-over headers.

/// OPA's bundle content type: a server that long-polls answers with it.
pub const BUNDLE_CONTENT_TYPE: &str = "application/vnd.openpolicyagent.bundles";

/// Response header of a bundle with an announced activation instant: unix
/// milliseconds by the server's clock. Vanilla OPA ignores it and activates on arrival.
pub const ACTIVATE_AT_HEADER: &str = "x-lockstep-activate-at";

/// Response header on every answer to a bundle request: `<received> <sent>`, the
/// server's wall clock in microseconds since the Unix epoch when it read the request
/// and when it answered (a long poll's wait lies between them).
pub const SERVER_TIME_HEADER: &str = "x-lockstep-server-time";
