package mysql

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// fakeRoutines answers SHOW CREATE PROCEDURE from a map, as the listener
// does from the server.
type fakeRoutines struct {
	procs map[string]string // "db.name" -> SHOW CREATE PROCEDURE text
	asked []string
}

func (f *fakeRoutines) ShowCreateProcedure(db, name string) (string, string, bool, error) {
	key := db + "." + name
	f.asked = append(f.asked, key)
	if key == "app.broken" {
		return "", "", false, errors.New("connection reset")
	}
	create, ok := f.procs[key]
	return create, "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO", ok, nil
}

func TestMySQLCall(t *testing.T) {
	routines := &fakeRoutines{procs: map[string]string{
		"app.refresh_orders": "CREATE DEFINER=`root`@`%` PROCEDURE `refresh_orders`(IN x INT)\nBEGIN\n  UPDATE orders SET status = 'x' WHERE id = x;\n  SELECT * FROM customers;\nEND",
		"app.nuke":           "CREATE DEFINER=`root`@`%` PROCEDURE `nuke`()\nDROP TABLE orders",
		"app.outer_p":        "CREATE DEFINER=`root`@`%` PROCEDURE `outer_p`()\nBEGIN\n  CALL refresh_orders(1);\nEND",
		"app.rec":            "CREATE DEFINER=`root`@`%` PROCEDURE `rec`(n INT)\nBEGIN\n  IF n > 0 THEN CALL rec(n - 1); END IF;\n  SELECT n;\nEND",
		"app.report":         "CREATE DEFINER=`root`@`%` PROCEDURE `report`()\nSELECT count(*) FROM orders",
		"reporting.d":        "CREATE DEFINER=`root`@`%` PROCEDURE `d`()\nSELECT * FROM daily",
		"app.fn":             "CREATE DEFINER=`root`@`%` FUNCTION `fn`() RETURNS int(11)\nRETURN 1",
	}}
	rd, wr, dd := authztest.NewGrant(authz.AccessRead), authztest.NewGrant(authz.AccessWrite), authztest.NewGrant(authz.AccessDDL)
	scoped := authztest.NewGrant(authz.AccessWrite)
	scoped.Scope.Tables = []string{"app.orders"}
	for _, tc := range []struct {
		g                    *authz.Grant
		sql                  string
		rule                 string // "" when allowed
		required             authz.Access
		read, written, asked []string
	}{
		{rd, "call report()", "", authz.AccessRead, []string{"app.orders"}, nil, []string{"app.report"}},
		{rd, "CALL refresh_orders(1)", "access-level", authz.AccessWrite, []string{"app.customers"}, []string{"app.orders"}, []string{"app.refresh_orders"}},
		{wr, "call app.refresh_orders(1)", "", authz.AccessWrite, []string{"app.customers"}, []string{"app.orders"}, []string{"app.refresh_orders"}},
		{scoped, "call refresh_orders(1)", "table-scope", authz.AccessWrite, []string{"app.customers"}, []string{"app.orders"}, []string{"app.refresh_orders"}},
		{dd, "call nuke()", "drop", authz.AccessDDL, nil, []string{"app.orders"}, []string{"app.nuke"}},
		{wr, "call outer_p()", "", authz.AccessWrite, []string{"app.customers"}, []string{"app.orders"}, []string{"app.outer_p", "app.refresh_orders"}},
		{rd, "call rec(3)", "", authz.AccessRead, nil, nil, []string{"app.rec"}},
		{rd, "call reporting.d()", "", authz.AccessRead, []string{"reporting.daily"}, nil, []string{"reporting.d"}},
		{wr, "call missing()", "access-level", authz.AccessAdmin, nil, nil, []string{"app.missing"}},
		{wr, "call broken()", "access-level", authz.AccessAdmin, nil, nil, []string{"app.broken"}},
		{wr, "call fn()", "access-level", authz.AccessAdmin, nil, nil, []string{"app.fn"}},
		{authztest.NewGrant(authz.AccessAdmin), "call mysql.p()", "database", authz.AccessAdmin, nil, nil, []string{"mysql.p"}},
		{wr, "use reporting; call d()", "", authz.AccessRead, []string{"reporting.daily"}, nil, []string{"reporting.d"}},
	} {
		routines.asked = nil
		o := myOpts()
		o.Routines = routines
		o.Cache = authz.NewDecisionCache(0)
		v := NewSession(o).Query(tc.g, tc.sql)
		d := authztest.Deciding(v)
		if v.Allow {
			d = v.Statements[len(v.Statements)-1]
		}
		rule := ""
		if !v.Allow {
			rule = d.Rule
		}
		if rule != tc.rule || d.Class.Required != tc.required || !slices.Equal(d.Class.TablesRead, tc.read) ||
			!slices.Equal(d.Class.TablesWritten, tc.written) || !slices.Equal(routines.asked, tc.asked) {
			t.Errorf("%q under %s: rule %q required %s read %v written %v asked %v (why %q, %s)\nwant rule %q required %s read %v written %v asked %v",
				tc.sql, tc.g.Access, rule, d.Class.Required, d.Class.TablesRead, d.Class.TablesWritten, routines.asked, d.Class.Why, d.Reason,
				tc.rule, tc.required, tc.read, tc.written, tc.asked)
		}
	}

	// What the procedure runs is read at each CALL: a decision on a CALL
	// is not cached, and a procedure replaced meanwhile is decided anew.
	o := myOpts()
	o.Routines = routines
	o.Cache = authz.NewDecisionCache(0)
	s := NewSession(o)
	if v := s.Query(rd, "call report()"); !v.Allow {
		t.Fatalf("call report(): %+v", v)
	}
	routines.procs["app.report"] = "CREATE DEFINER=`root`@`%` PROCEDURE `report`()\nDELETE FROM orders WHERE id = 1"
	if v := s.Query(rd, "call report()"); v.Allow || authztest.Deciding(v).Class.Required != authz.AccessWrite {
		t.Fatalf("call of a replaced procedure: %+v", v)
	}
	// A prepared CALL runs later, when the procedure may have changed:
	// it needs admin, and nothing is looked up.
	routines.asked = nil
	if v := s.Prepare(wr, "call report()"); v.Allow || authztest.Deciding(v).Class.Required != authz.AccessAdmin || len(routines.asked) != 0 {
		t.Fatalf("COM_STMT_PREPARE of a CALL: %+v, asked %v", v, routines.asked)
	}
	if v := s.Query(wr, "prepare s from 'call report()'"); v.Allow || authztest.Deciding(v).Class.Required != authz.AccessAdmin {
		t.Fatalf("PREPARE of a CALL: %+v", v)
	}
	// Without a way to read procedures, CALL needs admin as it always
	// did.
	if v := Query(wr, "call report()", myOpts()); v.Allow || !strings.Contains(authztest.Deciding(v).Reason, "cannot inspect") {
		t.Fatalf("CALL without routines: %+v", v)
	}
	// CREATE PROCEDURE with a CALL inside reads the called one too.
	routines.asked = nil
	if v := s.Query(dd, "create procedure p2() begin call nuke(); end"); v.Allow || authztest.Deciding(v).Rule != "drop" {
		t.Fatalf("creating a procedure that calls one that drops: %+v", v)
	}
}
