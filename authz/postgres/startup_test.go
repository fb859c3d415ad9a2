package postgres

import (
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// TestPostgresStartup: a setting asked for at connect time gets the
// decision SET of it gets under the same grant; one refusal refuses all.
func TestPostgresStartup(t *testing.T) {
	read, admin := authztest.NewGrant(authz.AccessRead), authztest.NewGrant(authz.AccessAdmin)
	cases := []struct {
		name  string
		g     *authz.Grant
		param StartupParam
		allow bool
	}{
		{"application_name", read, StartupParam{"application_name", "psql"}, true},
		{"TimeZone, any case", read, StartupParam{"TimeZone", "Asia/Tokyo"}, true},
		{"DateStyle", read, StartupParam{"DateStyle", "SQL, DMY"}, true},
		{"statement_timeout", read, StartupParam{"statement_timeout", "5s"}, true},
		{"extra_float_digits", read, StartupParam{"extra_float_digits", "3"}, true},
		{"client_encoding UTF8", read, StartupParam{"client_encoding", "UTF8"}, true},
		{"client_encoding SJIS", read, StartupParam{"client_encoding", "SJIS"}, false},
		{"default_transaction_read_only on", read, StartupParam{"default_transaction_read_only", "on"}, true},
		{"default_transaction_read_only off", read, StartupParam{"default_transaction_read_only", "off"}, true},
		{"search_path under read", read, StartupParam{"search_path", "evil, public"}, false},
		{"search_path under admin", admin, StartupParam{"search_path", "evil, public"}, true},
		{"role", authztest.NewGrant(authz.AccessDDL), StartupParam{"role", "postgres"}, false},
		{"custom setting", read, StartupParam{"myapp.tenant", "7"}, false},
		{"standard_conforming_strings", read, StartupParam{"standard_conforming_strings", "off"}, false},
		// A value is one value, however it reads as SQL.
		{"quotes in a value", read, StartupParam{"application_name", "x'; drop table orders; --"}, true},
	}
	for _, c := range cases {
		v := Startup(c.g, []StartupParam{c.param}, Options{})
		d := v.Statements[0]
		if v.Allow != c.allow || d.Allow != c.allow || len(v.Statements) != 1 {
			t.Errorf("%s: %+v, want allow %v", c.name, v, c.allow)
		}
		if d.Text != "<startup parameter "+c.param.Name+"="+c.param.Value+">" || d.Class.Kind != "SET" {
			t.Errorf("%s: recorded as %q, kind %q", c.name, d.Text, d.Class.Kind)
		}
		if !c.allow && (d.Rule != "access-level" || !strings.Contains(d.Reason, "requires admin access")) {
			t.Errorf("%s: refused with %s: %s", c.name, d.Rule, d.Reason)
		}
	}
	v := Startup(read, []StartupParam{{"application_name", "a"}, {"search_path", "x"}, {"TimeZone", "UTC"}}, Options{})
	if v.Allow || v.Statements[1].Rule != "access-level" || v.Statements[0].Rule != "batch" || v.Statements[2].Rule != "batch" ||
		!strings.Contains(v.Statements[0].Reason, "search_path was refused") {
		t.Errorf("one refusal among three: %+v", v)
	}
	if v := Startup(read, nil, Options{}); !v.Allow || len(v.Statements) != 0 {
		t.Errorf("no parameters: %+v", v)
	}
}
