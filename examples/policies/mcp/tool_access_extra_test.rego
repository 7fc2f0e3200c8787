# Layer 1 beyond the guide's two tests: the bundled role data, deny reasons, mocks.
package mcp.tool_access_extra_test

import data.mcp.tool_access

analyst_write := {"agent": {"role": "analyst"}, "request": {"tool": "write_database"}}

test_admin_can_write_with_bundled_roles if {
	tool_access.allow with input as {"agent": {"role": "admin"}, "request": {"tool": "write_database"}}
}

test_auditor_can_read_files if {
	tool_access.allow with input as {"agent": {"role": "auditor"}, "request": {"tool": "read_file"}}
}

test_unknown_role_denied if {
	not tool_access.allow with input as {"agent": {"role": "intern"}, "request": {"tool": "read_database"}}
}

test_missing_role_denied if {
	not tool_access.allow with input as {"request": {"tool": "read_database"}}
}

test_no_deny_reason_when_allowed if {
	not tool_access.deny_reason with input as {"agent": {"role": "analyst"}, "request": {"tool": "run_query"}}
}

test_deny_reason_names_role_and_tool if {
	tool_access.deny_reason == "role 'analyst' has no access to tool 'write_database'" with input as analyst_write
}

# Data mock: a role that exists only in the test grants access.
test_data_mock_grants_new_role if {
	tool_access.allow with input as {"agent": {"role": "intern"}, "request": {"tool": "run_query"}}
		with data.mcp.roles as {"intern": {"tools": ["run_query"]}}
}

# Builtin mocked by a function: the reason is built with the mock.
fake_sprintf(_, args) := concat("/", args)

test_builtin_mocked_by_function if {
	tool_access.deny_reason == "analyst/write_database" with input as analyst_write
		with sprintf as fake_sprintf
}

# Builtin mocked by a value.
test_builtin_mocked_by_value if {
	tool_access.deny_reason == "denied" with input as analyst_write with sprintf as "denied"
}
