package authz

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The corpus: testdata/corpus/{postgres,mysql}.tsv, one case a line:
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
type corpusCase struct {
	file    string
	line    int
	grant   string
	verdict string
	kind    string
	req     Access
	tables  string
	sql     string
}

func (c corpusCase) String() string { return fmt.Sprintf("%s:%d", c.file, c.line) }

func readCorpus(t testing.TB, name string) []corpusCase {
	t.Helper()
	path := filepath.Join("testdata", "corpus", name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []corpusCase
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
		req, err := ParseAccess(parts[3])
		if err != nil {
			t.Fatalf("%s:%d: %v", path, n, err)
		}
		sql := parts[5]
		if strings.HasPrefix(sql, `"`) {
			if sql, err = strconv.Unquote(sql); err != nil {
				t.Fatalf("%s:%d: sql: %v", path, n, err)
			}
		}
		out = append(out, corpusCase{file: name, line: n, grant: parts[0], verdict: parts[1], kind: parts[2], req: req, tables: parts[4], sql: sql})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// corpusGrant builds the grant and the MySQL options a case names.
func corpusGrant(t testing.TB, spec string) (*Grant, MySQLOptions) {
	t.Helper()
	fields := strings.Split(spec, "+")
	level, err := ParseAccess(fields[0])
	if err != nil {
		t.Fatalf("grant %q: %v", spec, err)
	}
	g := testGrant(level)
	o := MySQLOptions{Database: "app", Databases: []string{"app", "reporting"}}
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
		case "db":
			o.Database = v
		case "dbs":
			o.Databases = strings.Split(v, "|")
		case "mode":
			o.SQLMode = v
		case "server":
			o.ServerVersion = v
		default:
			t.Fatalf("grant %q: unknown %q", spec, k)
		}
	}
	return g, o
}

// deciding is the decision a case's expectations are about.
func deciding(v Verdict) Decision {
	d := v.Statements[0]
	for _, s := range v.Statements {
		if !s.Allow && s.Rule != "batch" {
			return s
		}
	}
	return d
}

func checkCase(t *testing.T, c corpusCase, v Verdict) {
	t.Helper()
	if len(v.Statements) == 0 {
		if c.verdict != "allow" || c.kind != "-" {
			t.Errorf("%s: no statements (allow=%v); want %s %s", c, v.Allow, c.verdict, c.kind)
		}
		return
	}
	d := deciding(v)
	got := "allow"
	if !v.Allow {
		got = "deny:" + d.Rule
	}
	tables := "-"
	if c.tables != "-" {
		tables = "r=" + strings.Join(d.Class.TablesRead, ",") + ";w=" + strings.Join(d.Class.TablesWritten, ",")
	}
	if got != c.verdict || d.Class.Kind != c.kind || d.Class.Required != c.req || tables != c.tables {
		t.Errorf("%s: %q under %s:\n got %s %s %s %s (why %q, reason %q)\nwant %s %s %s %s",
			c, c.sql, c.grant, got, d.Class.Kind, d.Class.Required, tables, d.Class.Why, d.Reason,
			c.verdict, c.kind, c.req, c.tables)
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

func TestCorpus(t *testing.T) {
	pg := readCorpus(t, "postgres.tsv")
	my := readCorpus(t, "mysql.tsv")
	t.Logf("corpus: %d postgres cases, %d mysql cases", len(pg), len(my))
	if len(pg)+len(my) < 400 || len(my) < 150 {
		t.Errorf("corpus too small: %d postgres + %d mysql", len(pg), len(my))
	}
	t.Run("postgres", func(t *testing.T) {
		for _, c := range pg {
			g, _ := corpusGrant(t, c.grant)
			checkCase(t, c, NewPGSession(PGOptions{}).Postgres(g, c.sql))
		}
	})
	t.Run("mysql", func(t *testing.T) {
		for _, c := range my {
			g, o := corpusGrant(t, c.grant)
			checkCase(t, c, NewMySQLSession(o).MySQL(g, c.sql))
		}
	})
}
