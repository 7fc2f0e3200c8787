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

# Why a request is denied: the first failing check of `allow`, in its order. The
# conditions below exclude each other, so there is at most one problem. (A set and
# mutually exclusive bodies rather than an `else` chain or a multi-valued rule: both
# of those make lockstep fall back from its bytecode VM to the slower interpreter.)
deny_reason := min(problems) if not allow

problems contains sprintf("tool '%v' has no command scope", [input.request.tool]) if {
	not data.mcp.commands[input.request.tool].param_pattern
}

problems contains "request has no string params.target" if {
	data.mcp.commands[input.request.tool].param_pattern
	not has_string_target
}

# A rule, not `not is_string(input.request.params.target)`: when the target is absent,
# OPA treats that negated call as undefined while regorus treats it as true. Negating a
# rule means the same in both (see docs/opa-differences.md).
has_string_target if is_string(input.request.params.target)

problems contains msg if {
	pattern := data.mcp.commands[input.request.tool].param_pattern
	is_string(input.request.params.target)
	not regex.match(pattern, input.request.params.target)
	msg := sprintf(
		"target '%v' does not match the allowed pattern for tool '%v'",
		[input.request.params.target, input.request.tool],
	)
}

problems contains msg if {
	pattern := data.mcp.commands[input.request.tool].param_pattern
	regex.match(pattern, input.request.params.target)
	is_write_operation
	msg := sprintf("read-only scope forbids operation '%v'", [input.request.params.operation])
}
