package postgres

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// constantFields are the parse tree's fields (and their getters) that
// hold a constant's value or position, or a value the grammar takes from
// a string constant: A_Const's value and the String, Integer, Float,
// Boolean and BitString nodes, COPY's file name, PREPARE TRANSACTION's
// id, NOTIFY's payload, a subscription's connection string, COMMENT's
// text, and every node's location (constants before a node shift it).
var constantFields = setOf("Sval", "Ival", "Fval", "Boolval", "Bsval", "Val", "Filename", "Gid",
	"Payload", "Conninfo", "Comment", "Location", "Label", "NewVal", "OldVal", "Version")

// literalReaders are the functions outside literal.go allowed to read
// them, and why.
var literalReaders = map[string]string{
	// The elision check (elide.go) looks for its placeholders, at their
	// offsets; it decides only whether the elided parse is used.
	"elide.go:foundPG": "elision check",
	// A parser error (parser.Error.Filename is the C source file).
	"syntax.go:pgSyntaxError": "parser error",
}

// TestLiteralReadsMarked: outside literal.go, no code of the package
// reads a field that may hold a constant's value, so every such read
// marks the statement (see literal.go). A new read must go through an
// accessor there.
func TestLiteralReadsMarked(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "literal.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			where := name + ":"
			if ok {
				where += fn.Name.Name
			}
			ast.Inspect(d, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				field := strings.TrimPrefix(sel.Sel.Name, "Get")
				if _, bad := constantFields[field]; bad && literalReaders[where] == "" {
					t.Errorf("%s: %s reads .%s outside literal.go; read it through an accessor there that marks the statement", fset.Position(sel.Pos()), where, sel.Sel.Name)
				}
				return true
			})
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d files", checked)
	}
}

// TestLiteralMarks: statements whose decision reads a constant are
// marked, and those that only carry constants are not.
func TestLiteralMarks(t *testing.T) {
	for _, tc := range []struct {
		sql    string
		marked bool
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 48213", false},
		{"SELECT 'x'::regclass, interval '1 day', B'101', X'1F', 1.5, $$d$$", false},
		{"SELECT set_config(x, 'y', false) FROM t", false},
		{"SET application_name = 'x'", false},
		{"EXPLAIN (ANALYZE) SELECT 1", false},
		{"EXPLAIN (FORMAT 'json') SELECT 1", false},
		{"SELECT set_config('role', 'x', false)", true},
		{"SELECT set_config('application_name'::text, 'x', false)", true},
		{"SET client_encoding = 'UTF8'", true},
		{"SET NAMES 'SJIS'", true},
		{"EXPLAIN (ANALYZE 'off') DELETE FROM t", true},
		{"EXPLAIN (ANALYZE 0) DELETE FROM t", true},
		{"EXPLAIN (ANALYZE false) DELETE FROM t", true},
		{"COPY t FROM '/etc/passwd'", true},
		{"COPY t TO STDOUT", true},
		{"SELECT 1; SELECT set_config('role', 'x', false)", true},
	} {
		stmts, err := classifyPG(tc.sql)
		if err != nil {
			t.Fatalf("%q: %v", tc.sql, err)
		}
		marked := false
		for _, m := range stmts {
			marked = marked || m.a.literal
		}
		if marked != tc.marked {
			t.Errorf("%q: marked %v, want %v", tc.sql, marked, tc.marked)
		}
	}
}

// TestLiteralMarksCorpus: the statements of the corpus whose decision
// names a setting (set_config, SET client_encoding) are marked.
func TestLiteralMarksCorpus(t *testing.T) {
	for _, c := range authztest.ReadCorpus(t, "postgres.tsv") {
		stmts, err := classifyPG(c.SQL)
		if err != nil {
			continue
		}
		for _, m := range stmts {
			st := m.resolve(defaultPGSchema)
			d := authz.Decide(authztest.NewGrant(authz.AccessRead), st, &authz.DecideOptions{FoldPatterns: true, DefaultSchema: defaultPGSchema})
			if strings.Contains(d.Reason, "set_config('") && !m.a.literal {
				t.Errorf("%s: %q names a setting but is not marked", c, m.text)
			}
		}
	}
}
