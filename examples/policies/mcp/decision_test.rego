package mcp.decision_test

import data.mcp.decision

analyst_read := {
	"agent": {"role": "analyst"},
	"request": {"tool": "read_database", "params": {"target": "orders", "operation": "read", "database": "analytics"}},
}

test_all_layers_allow if {
	decision.allow with input as analyst_read
	count(decision.reasons) == 0 with input as analyst_read
}

test_layer1_denies if {
	inp := json.patch(analyst_read, [{"op": "replace", "path": "/request/tool", "value": "write_database"}])
	not decision.allow with input as inp
	decision.reasons == {"role 'analyst' has no access to tool 'write_database'"} with input as inp
}

test_layer2_denies if {
	inp := json.patch(analyst_read, [{"op": "replace", "path": "/request/params/target", "value": "orders--"}])
	not decision.allow with input as inp
	decision.reasons == {"target 'orders--' does not match the allowed pattern for tool 'read_database'"} with input as inp
}

test_layer3_denies if {
	inp := json.patch(analyst_read, [{"op": "replace", "path": "/request/params/database", "value": "payroll"}])
	not decision.allow with input as inp
	decision.reasons == {"role 'analyst' may not access database 'payroll'"} with input as inp
}

test_reasons_from_every_failing_layer if {
	inp := {
		"agent": {"role": "auditor"},
		"request": {"tool": "write_database", "params": {"target": "orders", "operation": "write", "database": "payroll"}},
	}
	not decision.allow with input as inp
	decision.reasons == {
		"role 'auditor' has no access to tool 'write_database'",
		"read-only scope forbids operation 'write'",
		"role 'auditor' may not access database 'payroll'",
	} with input as inp
}

test_malformed_request_has_a_reason if {
	not decision.allow with input as {"request": {"tool": "read_database"}}
	"malformed request: agent.role and request.tool must be strings" in decision.reasons with input as {"request": {"tool": "read_database"}}
}

# Data mock across layers: a new role is granted everything it needs in the test only.
test_data_mock_new_role if {
	inp := {
		"agent": {"role": "intern"},
		"request": {"tool": "run_query", "params": {"target": "select 1", "operation": "read", "database": "sandbox"}},
	}
	not decision.allow with input as inp
	decision.allow with input as inp
		with data.mcp.roles.intern as {"tools": ["run_query"]}
		with data.mcp.resources.intern as {"databases": ["sandbox"]}
}

# Function mock of a user rule: replacing one layer's verdict changes the decision.
test_layer_rule_mocked if {
	not decision.allow with input as analyst_read with data.mcp.resource_access.allow as false
}
