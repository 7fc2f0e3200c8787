# Layer 3: resource-level control. Each role may touch only the databases, file paths
# and hosts granted to it in data.mcp.resources[role], matched with glob patterns.
package mcp.resource_access

default allow := false

# Request parameter -> the grant list in data.mcp.resources[role] and the glob
# delimiters used to match it ("*" stops at a delimiter, "**" crosses it).
kinds := {
	"database": {"list": "databases", "delimiters": ["."]},
	"path": {"list": "paths", "delimiters": ["/"]},
	"host": {"list": "hosts", "delimiters": ["."]},
}

# A role without an entry is granted nothing.
grants := object.get(data.mcp.resources, input.agent.role, {})

# Every resource the request names must be granted. A request that names no
# resource has nothing to restrict at this layer.
allow if count(denied) == 0

# The resource kinds named by the request that the role may not touch.
denied contains kind if {
	some kind, value in input.request.params
	# A guard, not `spec := kinds[kind]`: regorus 0.14.1's bytecode VM does not
	# fail a body when `:=` binds an undefined value (the interpreter and OPA
	# do), and this form is evaluated the same way by all three.
	kinds[kind]
	not granted(kinds[kind], value)
}

granted(spec, value) if {
	some pattern in object.get(grants, spec.list, [])
	glob.match(pattern, spec.delimiters, value)
}

# The first denied kind in sorted order, so the message is deterministic.
deny_reason := msg if {
	not allow
	kind := min(denied)
	msg := sprintf(
		"role '%v' may not access %v '%v'",
		[input.agent.role, kind, input.request.params[kind]],
	)
}
