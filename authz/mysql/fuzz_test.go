package mysql

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// FuzzMySQL checks what must hold for any message: no panic, nothing
// airlock cannot lex or parse is allowed, a verdict is all or nothing,
// nothing above the grant's level is allowed, every refusal has a reason
// and every statement's text is a piece of the message; a syntax error
// is worded as the server's and points into the message. It reads each
// message as for an unknown server and as for MariaDB, whose executable
// comments differ.
func FuzzMySQL(f *testing.F) {
	for _, tc := range authztest.ReadCorpus(f, "mysql.tsv") {
		f.Add(tc.SQL)
	}
	readGrant := authztest.NewGrant(authz.AccessRead)
	opts := []Options{
		{Database: "app", Databases: []string{"app", "reporting"}},
		{Database: "app", ServerVersion: "5.5.5-10.11.6-MariaDB", SQLMode: "ANSI_QUOTES"},
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, o := range opts {
			v := Query(readGrant, s, o)
			set := readMySQLOptions(&o)
			if _, lerr, err := classifyMySQL(s, &set, myCallEnv{}); (lerr != nil || err != nil) && v.Allow {
				t.Fatalf("cannot read it (%v, %v), but allowed: %+v", lerr, err, v)
			}
			for i, d := range v.Statements {
				if d.Allow != v.Allow {
					t.Fatalf("statement %d allow=%v in a verdict of %v", i+1, d.Allow, v.Allow)
				}
				if d.Allow && d.Class.Required > authz.AccessRead {
					t.Fatalf("statement %d needs %v but was allowed under read", i+1, d.Class.Required)
				}
				if !d.Allow && d.Reason == "" {
					t.Fatalf("statement %d refused without a reason", i+1)
				}
				if d.Syntax != nil && (d.Allow || d.Rule != "unparseable" || !strings.HasPrefix(d.Syntax.Msg, "You have an error in your SQL syntax") ||
					d.Syntax.Pos < 1 || d.Syntax.Pos > utf8.RuneCountInString(s)+1) {
					t.Fatalf("statement %d: syntax error %+v with rule %q", i+1, d.Syntax, d.Rule)
				}
				if !strings.Contains(s, d.Text) {
					t.Fatalf("statement %d text %q is not part of the message", i+1, d.Text)
				}
			}
			if !v.Allow && len(v.Statements) == 0 {
				t.Fatalf("refused with no decisions")
			}
			// A session reads a message as the stateless function does.
			if sv := NewSession(o).Query(readGrant, s); sv.Allow != v.Allow {
				t.Fatalf("session allow=%v, stateless %v", sv.Allow, v.Allow)
			}
		}
	})
}
