package mysql

import "testing"

func TestParseKillQuery(t *testing.T) {
	for sql, want := range map[string]uint32{
		"KILL QUERY 42":         42,
		"kill query 42;":        42,
		"  Kill\tQuery  7 ; ":   7,
		"KILL QUERY 4294967295": 4294967295,
	} {
		if got, ok := parseKillQuery(sql); !ok || got != want {
			t.Errorf("%q: %d, %v; want %d", sql, got, ok, want)
		}
	}
	for _, sql := range []string{
		"KILL 42", "KILL CONNECTION 42", "KILL QUERY", "KILL QUERY x", "KILL QUERY 4294967296",
		"KILL QUERY 42; DROP TABLE t", "KILL QUERY ID 42", "KILL QUERY -1", "/* c */ KILL QUERY 42",
		"select 'KILL QUERY 42'",
	} {
		if id, ok := parseKillQuery(sql); ok {
			t.Errorf("%q read as KILL QUERY %d", sql, id)
		}
	}
}
