# Layer 2: command execution scope (allowed parameter patterns).
package mcp.command_scope

default allow := false

allow if {
	allowed_pattern := data.mcp.commands[input.request.tool].param_pattern
	# regex.match(pattern, value): the first argument is the pattern, the second the value checked.
	regex.match(allowed_pattern, input.request.params.target)
	not is_write_operation
}

is_write_operation if {
	input.request.params.operation in {"write", "delete", "update"}
	read_only
}

# The guide takes the scope from the agent (input.agent.scope). A role can also be
# read-only in data (data.mcp.roles[role].scope); either one makes the request read-only,
# so the more restrictive of the two always wins.
read_only if input.agent.scope == "read-only"

read_only if data.mcp.roles[input.agent.role].scope == "read-only"

# One reason per denied request. The else chain follows the order of the checks in
# `allow`, so exactly one branch applies and the complete rule can never conflict.
deny_reason := reason if not allow

reason := sprintf("tool '%v' has no command scope", [input.request.tool]) if {
	not data.mcp.commands[input.request.tool].param_pattern
} else := "request has no string params.target" if {
	not is_string(input.request.params.target)
} else := sprintf(
	"target '%v' does not match the allowed pattern for tool '%v'",
	[input.request.params.target, input.request.tool],
) if {
	not regex.match(data.mcp.commands[input.request.tool].param_pattern, input.request.params.target)
} else := sprintf("read-only scope forbids operation '%v'", [input.request.params.operation]) if {
	is_write_operation
}
