# Layer 1: tool access (agent role x tool).
# OPA v1.x (rego_version: 1): `if` and `in` are built in, so no import is needed.
package mcp.tool_access

default allow := false

# Allow when the requested tool is in the list of tools granted to the agent's role.
allow if {
	allowed_tools := data.mcp.roles[input.agent.role].tools
	input.request.tool in allowed_tools
}

# Deny reason for the audit log.
deny_reason := msg if {
	not allow
	msg := sprintf(
		"role '%v' has no access to tool '%v'",
		[input.agent.role, input.request.tool]
	)
}
