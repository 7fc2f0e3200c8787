package mcp.command_scope_test

import data.mcp.command_scope

read_table(role, target) := {
	"agent": {"role": role},
	"request": {"tool": "read_database", "params": {"target": target, "operation": "read"}},
}

test_target_matching_pattern_allowed if {
	command_scope.allow with input as read_table("analyst", "orders")
}

test_target_not_matching_pattern_denied if {
	not command_scope.allow with input as read_table("analyst", "orders; drop table users")
	command_scope.deny_reason == "target 'orders; drop table users' does not match the allowed pattern for tool 'read_database'" with input as read_table("analyst", "orders; drop table users")
}

test_select_query_allowed if {
	command_scope.allow with input as {
		"agent": {"role": "analyst"},
		"request": {"tool": "run_query", "params": {"target": "SELECT * FROM orders", "operation": "read"}},
	}
}

test_non_select_query_denied if {
	not command_scope.allow with input as {
		"agent": {"role": "analyst"},
		"request": {"tool": "run_query", "params": {"target": "DELETE FROM orders", "operation": "delete"}},
	}
}

test_tool_without_scope_denied if {
	inp := {"agent": {"role": "admin"}, "request": {"tool": "shell_exec", "params": {"target": "ls"}}}
	not command_scope.allow with input as inp
	command_scope.deny_reason == "tool 'shell_exec' has no command scope" with input as inp
}

test_missing_target_denied if {
	inp := {"agent": {"role": "admin"}, "request": {"tool": "read_database", "params": {}}}
	not command_scope.allow with input as inp
	command_scope.deny_reason == "request has no string params.target" with input as inp
}

# The guide's rule: an agent presenting scope "read-only" cannot write, delete or update.
test_read_only_agent_scope_blocks_writes if {
	every op in ["write", "delete", "update"] {
		inp := {
			"agent": {"role": "admin", "scope": "read-only"},
			"request": {"tool": "write_database", "params": {"target": "orders", "operation": op}},
		}
		not command_scope.allow with input as inp
		command_scope.deny_reason == sprintf("read-only scope forbids operation '%v'", [op]) with input as inp
	}
}

test_read_only_agent_scope_allows_reads if {
	command_scope.allow with input as {
		"agent": {"role": "admin", "scope": "read-only"},
		"request": {"tool": "read_database", "params": {"target": "orders", "operation": "read"}},
	}
}

# The auditor role is read-only in data even when the agent claims nothing.
test_read_only_role_blocks_writes if {
	not command_scope.allow with input as {
		"agent": {"role": "auditor"},
		"request": {"tool": "read_database", "params": {"target": "audit_log", "operation": "update"}},
	}
}

test_admin_can_write if {
	command_scope.allow with input as {
		"agent": {"role": "admin"},
		"request": {"tool": "write_database", "params": {"target": "orders", "operation": "write"}},
	}
	not command_scope.deny_reason with input as {
		"agent": {"role": "admin"},
		"request": {"tool": "write_database", "params": {"target": "orders", "operation": "write"}},
	}
}

# Data mock: a stricter pattern for the same tool.
test_data_mock_tightens_pattern if {
	not command_scope.allow with input as read_table("analyst", "orders")
		with data.mcp.commands as {"read_database": {"param_pattern": "^customers$"}}
}

# Builtin mocked by a function: every pattern matches, so only the scope check remains.
match_all(_, _) := true

test_regex_mocked_by_function if {
	command_scope.allow with input as read_table("analyst", "not a table name!") with regex.match as match_all
}
