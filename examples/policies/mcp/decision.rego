# The three layers combined, for a single query per request:
#   data.mcp.decision  ->  {"allow": bool, "reasons": set of deny reasons}
package mcp.decision

import data.mcp.command_scope
import data.mcp.resource_access
import data.mcp.tool_access

default allow := false

allow if {
	tool_access.allow
	command_scope.allow
	resource_access.allow
}

# Every layer explains its own denial. A request without a string agent.role and
# request.tool cannot be explained by the layers (their messages need both), so it
# gets its own reason: a denied request never has an empty set of reasons.
reasons contains reason if reason := tool_access.deny_reason

reasons contains reason if reason := command_scope.deny_reason

reasons contains reason if reason := resource_access.deny_reason

reasons contains "malformed request: agent.role and request.tool must be strings" if not well_formed

well_formed if {
	is_string(input.agent.role)
	is_string(input.request.tool)
}
