package postgres

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
)

// TestPGSyntaxError: an unparseable message is refused with the error the
// server would give: its message, its 1-based character position (counted
// from the start of the whole message, so for a later statement too), its
// SQLSTATE when not 42601, and its hint.
func TestPGSyntaxError(t *testing.T) {
	g := &authz.Grant{ID: "gr_1", Access: authz.AccessAdmin, State: authz.StateActive}
	cases := []struct {
		sql           string
		msg           string
		pos           int
		code, hint    string
		file, routine string
	}{
		{sql: "SELEC 1", msg: `syntax error at or near "SELEC"`, pos: 1, file: "scan.l", routine: "scanner_yyerror"},
		// Characters, not bytes: é and ü are two bytes each in UTF-8.
		{sql: "select 'é', 'ü' frm orders", msg: `syntax error at or near "orders"`, pos: 21},
		{sql: "select '日本語' frm t", msg: `syntax error at or near "t"`, pos: 18},
		// A later statement of the message: counted from the message's start.
		{sql: "select 1; select 'é'; selec 2", msg: `syntax error at or near "selec"`, pos: 23},
		{sql: "select *\nfrom orders\nwher id = 1", msg: `syntax error at or near "id"`, pos: 27},
		{sql: "select 1 +", msg: "syntax error at end of input", pos: 11},
		{sql: "select 'abc", msg: `unterminated quoted string at or near "'abc"`, pos: 8},
		{sql: "create assertion a check (true)", msg: "CREATE ASSERTION is not yet implemented", code: "0A000", file: "gram.y"},
		{sql: "select count(*) over (rows between unbounded following and current row) from t", msg: "frame start cannot be UNBOUNDED FOLLOWING", pos: 36, code: "42P20"},
		{sql: "select 1 limit 1, 2", msg: "LIMIT #,# syntax is not supported", pos: 10, hint: "Use separate LIMIT and OFFSET clauses."},
		// The same message from two places, with two codes.
		{sql: `select U&'\00'`, msg: "invalid Unicode escape", pos: 11, hint: `Unicode escapes must be \XXXX or \+XXXXXX.`, file: "parser.c", routine: "str_udeescape"},
		{sql: `select E'\u00'`, msg: "invalid Unicode escape", pos: 10, code: "22025", hint: `Unicode escapes must be \uXXXX or \UXXXXXXXX.`},
	}
	for _, c := range cases {
		for _, parse := range []bool{false, true} {
			s := NewSession(Options{})
			var v authz.Verdict
			if parse {
				v = s.Parse(g, "", c.sql)
			} else {
				v = s.Query(g, c.sql)
			}
			if v.Allow || len(v.Statements) != 1 || v.Statements[0].Rule != "unparseable" {
				t.Errorf("%q: %+v, want one unparseable refusal", c.sql, v)
				continue
			}
			se := v.Statements[0].Syntax
			if se == nil {
				t.Errorf("%q: no syntax error in the decision", c.sql)
				continue
			}
			if se.Msg != c.msg || se.Pos != c.pos || se.Code != c.code || se.Hint != c.hint {
				t.Errorf("%q (parse %v): %+v, want msg %q pos %d code %q hint %q", c.sql, parse, se, c.msg, c.pos, c.code, c.hint)
			}
			if c.file != "" && (se.File != c.file || se.Line == 0) || c.routine != "" && se.Routine != c.routine {
				t.Errorf("%q: raised at %s %s:%d, want %s in %s", c.sql, se.Routine, se.File, se.Line, c.routine, c.file)
			}
		}
	}
	// Several statements in one Parse: the server's own refusal.
	v := NewSession(Options{}).Parse(g, "", "select 1; select 2")
	if v.Allow || v.Statements[0].Syntax == nil || v.Statements[0].Syntax.Msg != "cannot insert multiple commands into a prepared statement" {
		t.Errorf("multi-statement Parse: %+v", v)
	}
	// A refusal that is not the parser's carries no syntax error.
	v = Query(&authz.Grant{ID: "gr_2", Access: authz.AccessRead, State: authz.StateActive}, "delete from orders")
	if v.Allow || v.Statements[0].Syntax != nil {
		t.Errorf("policy refusal: %+v", v)
	}
}

func TestMatchFormat(t *testing.T) {
	for _, c := range []struct {
		f, msg string
		want   bool
	}{
		{"missing argument", "missing argument", true},
		{"missing argument", "missing argument!", false},
		{`role name "%s" is reserved`, `role name "public" is reserved`, true},
		{`role name "%s" is reserved`, `role name "x" is not reserved`, false},
		{"%s constraints cannot be marked DEFERRABLE", "CHECK constraints cannot be marked DEFERRABLE", true},
		{"column number must be in range from 1 to %d", "column number must be in range from 1 to 32767", true},
		{"a %s b %.*s c", "a x b y c", true},
		{"100%% sure", "100% sure", true},
	} {
		if got := matchFormat(c.f, c.msg); got != c.want {
			t.Errorf("matchFormat(%q, %q) = %v", c.f, c.msg, got)
		}
	}
}

// TestPGParserErrorsComplete reads the PostgreSQL sources that pg_query
// (the version in go.mod) compiles and checks that every error the raw
// parser raises with a SQLSTATE other than 42601, or with a constant HINT
// or DETAIL, is in pgParserErrors with that code, hint and detail: an
// upgrade of pg_query that adds or changes one fails here.
func TestPGParserErrorsComplete(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/pganalyze/pg_query_go/v6").Output()
	if err != nil {
		t.Fatalf("locating pg_query_go's sources: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "parser")
	codes := sqlstates(t, filepath.Join(dir, "include", "postgres", "utils", "errcodes.h"))
	files, _ := filepath.Glob(filepath.Join(dir, "src_backend_parser_*.c"))
	files = append(files, filepath.Join(dir, "src_backend_tcop_postgres.c"))
	if len(files) < 4 {
		t.Fatalf("found only %v in %s", files, dir)
	}
	ereport := regexp.MustCompile(`(?s)ereport\s*\(\s*ERROR\s*,(.*?)\)\s*;`)
	found := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ereport.FindAllSubmatch(src, -1) {
			body := string(m[1])
			msg, ok := cCall(body, "errmsg")
			if !ok {
				continue
			}
			code := "XX000"
			if c := regexp.MustCompile(`errcode\((ERRCODE_[A-Z0-9_]+)\)`).FindStringSubmatch(body); c != nil {
				code = codes[c[1]]
			}
			hint, hok := cCall(body, "errhint")
			detail, dok := cCall(body, "errdetail")
			if !hok || strings.Contains(hint, "%") {
				hint = "" // none, or one with arguments airlock cannot know
			}
			if !dok || strings.Contains(detail, "%") {
				detail = ""
			}
			if code == "42601" && hint == "" && detail == "" {
				continue // the default
			}
			found++
			ok = false
			for _, pe := range pgParserErrors {
				want := pe.code
				if pe.format == msg && want == code && pe.hint == hint && pe.detail == detail {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s: %q (%s, hint %q, detail %q) is not in pgParserErrors", filepath.Base(f), msg, code, hint, detail)
			}
		}
	}
	if found < 30 {
		t.Errorf("found only %d errors with their own code in the parser's sources: is the pattern still right?", found)
	}
}

// cCall returns the string literal argument (concatenated, unescaped) of
// the first call of fn in a C ereport body.
func cCall(body, fn string) (string, bool) {
	re := regexp.MustCompile(`\b` + fn + `\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return "", false
	}
	var b strings.Builder
	for _, lit := range regexp.MustCompile(`"(?:[^"\\]|\\.)*"`).FindAllString(m[1], -1) {
		s, err := strconv.Unquote(lit)
		if err != nil {
			return "", false
		}
		b.WriteString(s)
	}
	return b.String(), true
}

// sqlstates reads errcodes.h: ERRCODE_ name to SQLSTATE.
func sqlstates(t *testing.T, path string) map[string]string {
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	re := regexp.MustCompile(`#define (ERRCODE_[A-Z0-9_]+) MAKE_SQLSTATE\('(.)','(.)','(.)','(.)','(.)'\)`)
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		out[m[1]] = m[2] + m[3] + m[4] + m[5] + m[6]
	}
	if len(out) < 100 {
		t.Fatalf("read only %d codes from %s", len(out), path)
	}
	return out
}
