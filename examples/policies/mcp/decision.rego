# The three layers combined, for a single query per request:
#   data.mcp.decision  ->  {"allow": bool, "reasons": set of deny reasons}
package mcp.decision

# The layers are referenced by full rule paths, not through `import data.mcp.x`
# aliases: regorus resolves an aliased package (`tool_access.allow`) by
# evaluating the whole package document first (every rule, deny reasons
# included), which made `allow` alone cost as much as the full decision.

default allow := false

allow if {
	data.mcp.tool_access.allow
	data.mcp.command_scope.allow
	data.mcp.resource_access.allow
}

# Every layer explains its own denial. A request without a string agent.role and
# request.tool cannot be explained by the layers (their messages need both), so it
# gets its own reason: a denied request never has an empty set of reasons.
reasons contains reason if reason := data.mcp.tool_access.deny_reason

reasons contains reason if reason := data.mcp.command_scope.deny_reason

reasons contains reason if reason := data.mcp.resource_access.deny_reason

reasons contains "malformed request: agent.role and request.tool must be strings" if not well_formed

well_formed if {
	is_string(input.agent.role)
	is_string(input.request.tool)
}
