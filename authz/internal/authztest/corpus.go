// Package authztest holds what the tests of the SQL dialects share: the
// grant they decide under, and the reader and checker of their corpora
// (testdata/corpus/DIALECT.tsv in each dialect's package).
package authztest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
)

// The corpus: testdata/corpus/postgres.tsv in authz/postgres and
// testdata/corpus/mysql.tsv in authz/mysql, one case a line:
//
//	GRANT <tab> VERDICT <tab> KIND <tab> REQUIRED <tab> TABLES <tab> SQL
//
// GRANT is an access level with scope flags joined by '+', as airlock
// request takes them: read+table=public.orders+max-tables=2+allow-drop+
// allow-unfiltered+allow-file-load+allow-server-files+function=f. MySQL
// cases may add db=NAME (current database; default app), dbs=A|B (the
// resource's databases; default app|reporting), mode=SQL_MODE and
// server=VERSION.
//
// VERDICT is allow, or deny:RULE with the rule of the deciding
// statement. KIND and REQUIRED are the classification of the deciding
// statement: the first refused one (not refused as part of a batch), else
// the first. TABLES is "-" (not checked) or "r=a,b;w=c" with the tables
// read and written, resolved. SQL is the rest of the line; when it starts
// with a double quote it is a Go string literal, for tabs, newlines and
// odd bytes.
type Case struct {
	File    string
	Line    int
	Grant   string
	Verdict string
	Kind    string
	Req     authz.Access
	Tables  string
	SQL     string
}

func (c Case) String() string { return fmt.Sprintf("%s:%d", c.File, c.Line) }

// ReadCorpus reads testdata/corpus/name.
func ReadCorpus(t testing.TB, name string) []Case {
	t.Helper()
	path := filepath.Join("testdata", "corpus", name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Case
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.SplitN(line, "\t", 6)
		if len(parts) != 6 {
			t.Fatalf("%s:%d: want 6 tab-separated fields, got %d", path, n, len(parts))
		}
		req, err := authz.ParseAccess(parts[3])
		if err != nil {
			t.Fatalf("%s:%d: %v", path, n, err)
		}
		sql := parts[5]
		if strings.HasPrefix(sql, `"`) {
			if sql, err = strconv.Unquote(sql); err != nil {
				t.Fatalf("%s:%d: sql: %v", path, n, err)
			}
		}
		out = append(out, Case{File: name, Line: n, Grant: parts[0], Verdict: parts[1], Kind: parts[2], Req: req, Tables: parts[4], SQL: sql})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// CorpusGrant builds the grant a case names. The scope flags of a grant
// are read here; option reads the dialect's own (MySQL's db, dbs, mode
// and server) and reports false for a key it does not know.
func CorpusGrant(t testing.TB, spec string, option func(k, v string) bool) *authz.Grant {
	t.Helper()
	fields := strings.Split(spec, "+")
	level, err := authz.ParseAccess(fields[0])
	if err != nil {
		t.Fatalf("grant %q: %v", spec, err)
	}
	g := NewGrant(level)
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "table":
			g.Scope.Tables = append(g.Scope.Tables, v)
		case "function":
			g.Scope.Functions = append(g.Scope.Functions, v)
		case "max-tables":
			if g.Scope.MaxTables, err = strconv.Atoi(v); err != nil {
				t.Fatalf("grant %q: %v", spec, err)
			}
		case "allow-drop":
			g.Scope.AllowDrop = true
		case "allow-unfiltered":
			g.Scope.AllowUnfiltered = true
		case "allow-file-load":
			g.Scope.AllowFileLoad = true
		case "allow-server-files":
			g.Scope.AllowServerFiles = true
		default:
			if option == nil || !option(k, v) {
				t.Fatalf("grant %q: unknown %q", spec, k)
			}
		}
	}
	return g
}

// Deciding is the decision a case's expectations are about.
func Deciding(v authz.Verdict) authz.Decision {
	d := v.Statements[0]
	for _, s := range v.Statements {
		if !s.Allow && s.Rule != "batch" {
			return s
		}
	}
	return d
}

// CheckCase checks v, the verdict on c's message, against c.
func CheckCase(t *testing.T, c Case, v authz.Verdict) {
	t.Helper()
	if len(v.Statements) == 0 {
		if c.Verdict != "allow" || c.Kind != "-" {
			t.Errorf("%s: no statements (allow=%v); want %s %s", c, v.Allow, c.Verdict, c.Kind)
		}
		return
	}
	d := Deciding(v)
	got := "allow"
	if !v.Allow {
		got = "deny:" + d.Rule
	}
	tables := "-"
	if c.Tables != "-" {
		tables = "r=" + strings.Join(d.Class.TablesRead, ",") + ";w=" + strings.Join(d.Class.TablesWritten, ",")
	}
	if got != c.Verdict || d.Class.Kind != c.Kind || d.Class.Required != c.Req || tables != c.Tables {
		t.Errorf("%s: %q under %s:\n got %s %s %s %s (why %q, reason %q)\nwant %s %s %s %s",
			c, c.SQL, c.Grant, got, d.Class.Kind, d.Class.Required, tables, d.Class.Why, d.Reason,
			c.Verdict, c.Kind, c.Req, c.Tables)
	}
	for _, s := range v.Statements {
		if s.Allow != v.Allow {
			t.Errorf("%s: statement %q allow=%v in a verdict of %v", c, s.Text, s.Allow, v.Allow)
		}
		if !s.Allow && s.Reason == "" {
			t.Errorf("%s: statement %q refused without a reason", c, s.Text)
		}
	}
}

// NewGrant is an active grant at access level a, with no scope.
func NewGrant(a authz.Access) *authz.Grant {
	return &authz.Grant{
		ID:       "gr_123",
		Agent:    "agent-1",
		Resource: "demo-pg",
		Task:     "INC-42: count yesterday's failed orders",
		Access:   a,
		State:    authz.StateActive,
	}
}

// The differential oracle: every corpus statement the authorizer allows
// under a plain read grant is run on the real server inside a read-only
// transaction, and must not fail with the server's read-only error
// (Postgres SQLSTATE 25006, MariaDB error 1792). Such a failure means the
// server found a write that airlock took for a read.
//
// The session also defaults to read-only transactions, so a COMMIT inside
// a message does not let what follows it write. Statements that fail for
// other reasons (a missing object, an argument the server rejects) are
// counted and logged; the schema below creates what the corpus names so
// that most of them run for real.
//
// OracleTally counts what the server said.
type OracleTally struct {
	Ran, Failed   int
	Errs          map[string]int
	Disagreements []string
}

// Log logs the tally and fails t for each disagreement.
func (o *OracleTally) Log(t *testing.T, name string, allowed int) {
	t.Helper()
	keys := make([]string, 0, len(o.Errs))
	for k := range o.Errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, o.Errs[k]))
	}
	t.Logf("%s oracle: %d corpus messages allowed under read; %d ran without error, %d failed with other errors (%s); %d read-only violations",
		name, allowed, o.Ran, o.Failed, strings.Join(parts, " "), len(o.Disagreements))
	for _, d := range o.Disagreements {
		t.Errorf("%s: read-only transaction refused a statement airlock allows under read: %s", name, d)
	}
}
