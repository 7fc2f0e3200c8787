# policies/mcp/tool_access_test.rego
package mcp.tool_access_test

import data.mcp.tool_access

# The analyst role must be able to call read_database
test_analyst_can_read if {
	tool_access.allow with input as {
		"agent": {"role": "analyst"},
		"request": {"tool": "read_database"}
	} with data.mcp.roles as {
		"analyst": {"tools": ["read_database", "run_query"]}
	}
}

# The analyst role must not be able to call write_database
test_analyst_cannot_write if {
	not tool_access.allow with input as {
		"agent": {"role": "analyst"},
		"request": {"tool": "write_database"}
	} with data.mcp.roles as {
		"analyst": {"tools": ["read_database", "run_query"]}
	}
}
