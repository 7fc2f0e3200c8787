package mcp.resource_access_test

import data.mcp.resource_access

req(role, params) := {"agent": {"role": role}, "request": {"tool": "read_database", "params": params}}

test_granted_database_allowed if {
	resource_access.allow with input as req("analyst", {"database": "analytics"})
}

test_other_database_denied if {
	not resource_access.allow with input as req("analyst", {"database": "payroll"})
	resource_access.deny_reason == "role 'analyst' may not access database 'payroll'" with input as req("analyst", {"database": "payroll"})
}

test_database_glob if {
	resource_access.allow with input as req("auditor", {"database": "audit_2026"})
	not resource_access.allow with input as req("auditor", {"database": "analytics"})
}

# "**" crosses "/" but "*" does not.
test_path_globs if {
	resource_access.allow with input as req("auditor", {"path": "/var/log/audit/2026/01.log"})
	resource_access.allow with input as req("admin", {"path": "/srv/app/config.yaml"})
	not resource_access.allow with input as req("auditor", {"path": "/etc/shadow"})
	not resource_access.allow with input as req("analyst", {"path": "/srv/app/config.yaml"})
}

test_host_globs if {
	resource_access.allow with input as req("admin", {"host": "db.internal.example.com"})
	not resource_access.allow with input as req("admin", {"host": "db.eu.internal.example.com"})
	not resource_access.allow with input as req("admin", {"host": "example.org"})
}

test_every_named_resource_must_be_granted if {
	not resource_access.allow with input as req("auditor", {"database": "audit_x", "path": "/etc/passwd"})
	resource_access.denied == {"path"} with input as req("auditor", {"database": "audit_x", "path": "/etc/passwd"})
}

test_no_resource_named_allowed if {
	resource_access.allow with input as req("analyst", {"target": "orders"})
	not resource_access.deny_reason with input as req("analyst", {"target": "orders"})
}

test_unknown_role_gets_nothing if {
	not resource_access.allow with input as req("intern", {"database": "analytics"})
}

test_non_string_resource_denied if {
	not resource_access.allow with input as req("admin", {"database": 42})
}

# Data mock: grants that exist only in the test.
test_data_mock_grants if {
	resource_access.allow with input as req("intern", {"database": "sandbox"})
		with data.mcp.resources as {"intern": {"databases": ["sandbox"]}}
}

# Builtin mocked by a value: with glob.match always false nothing is granted.
test_glob_mocked_by_value if {
	not resource_access.allow with input as req("admin", {"database": "anything"}) with glob.match as false
}
