package mysql

import "testing"

func TestParseKill(t *testing.T) {
	for sql, want := range map[string]killStmt{
		"KILL QUERY 42":           {query: true, id: 42},
		"kill query 42;":          {query: true, id: 42},
		"  Kill\tQuery  7 ; ":     {query: true, id: 7},
		"KILL QUERY 4294967295":   {query: true, id: 4294967295},
		"KILL 42":                 {id: 42},
		"kill connection 42":      {id: 42},
		"KILL HARD QUERY 5":       {modifier: "HARD ", query: true, id: 5},
		"kill soft 5":             {modifier: "SOFT ", id: 5},
		"KILL SOFT CONNECTION 5;": {modifier: "SOFT ", id: 5},
	} {
		if got, ok := parseKill(sql); !ok || got != want {
			t.Errorf("%q: %+v, %v; want %+v", sql, got, ok, want)
		}
	}
	for _, sql := range []string{
		"KILL QUERY", "KILL QUERY x", "KILL QUERY 4294967296", "KILL", "KILL ;",
		"KILL QUERY 42; DROP TABLE t", "KILL QUERY ID 42", "KILL QUERY -1", "/* c */ KILL QUERY 42",
		"select 'KILL QUERY 42'", "KILL USER bob", "KILL HARD SOFT 1", "KILLQUERY 1",
	} {
		if k, ok := parseKill(sql); ok {
			t.Errorf("%q read as %+v", sql, k)
		}
	}
	if got := (killStmt{modifier: "HARD ", query: true}).sql(9); got != "KILL HARD QUERY 9" {
		t.Errorf("sql: %q", got)
	}
}

func TestKillTargets(t *testing.T) {
	var k killTargets
	a := k.newConnID()
	if a < 1<<30 || a >= 1<<31 {
		t.Fatalf("greeting id %d outside [2^30, 2^31)", a)
	}
	remove := k.add(a, killTarget{grant: "gr_1", resource: "db", thread: 17, session: "s1"})
	k.add(k.newConnID(), killTarget{grant: "gr_2", resource: "db", thread: 18, session: "s2"})
	for _, tc := range []struct {
		grant string
		id    uint32
		want  string
	}{
		{"gr_1", a, "s1"}, {"gr_1", 17, "s1"}, {"gr_1", 18, ""}, {"gr_2", a, ""}, {"gr_2", 18, "s2"}, {"gr_1", 99, ""},
	} {
		got, ok := k.find(tc.grant, tc.id)
		if ok != (tc.want != "") || got.session != tc.want {
			t.Errorf("find(%s, %d) = %+v, %v; want %q", tc.grant, tc.id, got, ok, tc.want)
		}
	}
	remove()
	if _, ok := k.find("gr_1", 17); ok {
		t.Error("found a removed session")
	}
}
