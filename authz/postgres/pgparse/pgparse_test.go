package pgparse

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// samples exercise the decoder's corners: escapes, non-ASCII, every
// constant kind, extreme numbers, nesting, empty input.
var samples = []string{
	"select E'a\\nb\\\"c\\\\d\\u00e9\\U0001F600\\x01\\t', 'x\u2028y', U&'\\0041', $$dollar \"quoted\"$$",
	"select 1.5, -9223372036854775808, 9223372036854775807, 2147483648, 1e400, true, false, null, B'101', X'ff'::bit(8)",
	"select (((((((((((1)))))))))))",
	"select \"quoted \"\"ident\"\"\" from \"Odd Table\"",
	"create table t (a int default 1, b numeric(10,2), c text collate \"C\")",
	"copy t (a, b) from stdin with (format csv, header true)",
	"select * from t where a in (1,2,3) and b between 1 and 2 order by 1 desc nulls last limit 5 offset 2 for update skip locked",
	"with recursive r(n) as (select 1 union all select n+1 from r where n < 10) select * from r",
	"explain (analyze, buffers, format json) select 1",
	"select array[1,2][1], row(1,'a'), a->>'k', a #> '{x,y}' from t",
	"prepare p(int) as select $1; execute p(1); deallocate p",
	"create function f() returns int language sql as $$ select 1 $$; do $$ begin perform 1; end $$",
	"select xmlelement(name a, xmlattributes(1 as b)), json_object('a': 1), merge_action() from t",
	"",
	"  -- only a comment\n",
	"select 1; select 2;;",
}

// inputs are the statements the differential test runs: the samples,
// authz's corpus and psql catalog queries, pg_query's own test inputs, and
// the SQL scripts of the PostgreSQL installed here (its extensions and
// information_schema: thousands of real DDL and DML statements).
func inputs(tb testing.TB) (out []string) {
	out = append(out, samples...)
	f, err := os.Open(filepath.Join("..", "testdata", "corpus", "postgres.tsv"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "\t", 6)
		if len(parts) != 6 || strings.HasPrefix(parts[0], "#") {
			continue
		}
		sql := parts[5]
		if u, err := strconv.Unquote(sql); err == nil && strings.HasPrefix(sql, `"`) {
			sql = u
		}
		out = append(out, sql)
	}
	psql, _ := filepath.Glob(filepath.Join("..", "testdata", "psql15", "*.sql"))
	for _, p := range psql {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// bigInputs adds pg_query's fingerprint test inputs and the installed
// PostgreSQL's SQL scripts, one statement list per file (psql
// meta-command lines dropped).
func bigInputs(tb testing.TB) (out []string, files int) {
	mod, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/pganalyze/pg_query_go/v6").Output()
	if err != nil {
		tb.Fatalf("go list pg_query_go: %v", err)
	}
	fp, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(mod)), "testdata", "fingerprint.json"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`"input":\s*("(?:[^"\\]|\\.)*")`).FindAllSubmatch(fp, -1) {
		var s string
		if json.Unmarshal(m[1], &s) == nil {
			out = append(out, s)
		}
	}
	share := ""
	if out, err := exec.Command("pg_config", "--sharedir").Output(); err == nil {
		share = strings.TrimSpace(string(out))
	} else if dirs, _ := filepath.Glob("/usr/share/postgresql/*/extension"); len(dirs) > 0 {
		share = filepath.Dir(dirs[len(dirs)-1])
	} else {
		tb.Fatalf("no PostgreSQL share directory (pg_config --sharedir: %v): apt-get install -y postgresql", err)
	}
	scripts, _ := filepath.Glob(filepath.Join(share, "*.sql"))
	ext, _ := filepath.Glob(filepath.Join(share, "extension", "*.sql"))
	for _, p := range append(scripts, ext...) {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		var keep []string
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "\\") {
				keep = append(keep, strings.ReplaceAll(line, "@extschema@", "ext"))
			}
		}
		out = append(out, strings.Join(keep, "\n"))
		files++
	}
	return out, files
}

// same checks that Parse and pg_query.Parse agree on sql: both fail, or
// both give the same tree. It reports whether the SQL parsed.
func same(t testing.TB, sql string) bool {
	t.Helper()
	want, werr := pg_query.Parse(sql)
	got, gerr := Parse(sql)
	switch {
	case werr != nil && gerr != nil:
		// Where the parser itself refused the SQL, Parse must say so
		// (authz reports the parser's message and position).
		var pe *parser.Error
		if errors.As(werr, &pe) && errors.Is(gerr, ErrOutput) {
			t.Fatalf("%.200q: the parser failed (%v) but Parse blames its output: %v", sql, werr, gerr)
		}
		return false
	case werr != nil:
		t.Fatalf("%.200q: protobuf path fails (%v), Parse succeeds", sql, werr)
	case gerr != nil:
		t.Fatalf("%.200q: Parse fails (%v), the protobuf path succeeds", sql, gerr)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("%.200q: trees differ\nParse:          %v\npg_query.Parse: %v", sql, got, want)
	}
	return true
}

// TestSameTreeAsProtobuf: Parse gives exactly pg_query.Parse's tree.
func TestSameTreeAsProtobuf(t *testing.T) {
	in := inputs(t)
	big, files := bigInputs(t)
	parsed := 0
	for _, sql := range append(in, big...) {
		if same(t, sql) {
			parsed++
		}
	}
	t.Logf("%d inputs (%d of them SQL script files of the installed PostgreSQL), %d parsed, identical trees", len(in)+len(big), files, parsed)
	if files < 50 || parsed < 600 {
		t.Fatalf("only %d inputs parsed (%d script files found): the differential test lost its corpus", parsed, files)
	}
}

// TestGeneratedIsCurrent: decode_gen.go and children_gen.go are what the
// generator writes for the pg_query_go in go.mod; after an update, run go
// generate ./authz/postgres/pgparse.
func TestGeneratedIsCurrent(t *testing.T) {
	dir := t.TempDir()
	gen := exec.Command("go", "run", "./gen", "-o", filepath.Join(dir, "decode_gen.go"), "-children", filepath.Join(dir, "children_gen.go"))
	if b, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("go run ./gen: %v\n%s", err, b)
	}
	for _, name := range []string{"decode_gen.go", "children_gen.go"} {
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		have, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if string(have) != string(want) {
			t.Fatalf("%s is stale: run go generate ./authz/postgres/pgparse", name)
		}
	}
}

// TestChildrenAsRange: for every message of every parsed input, Children
// visits exactly the set message fields protoreflect's Range gives (in
// schema order, where Range promises none), and skipping a field leaves
// out exactly that field's messages.
func TestChildrenAsRange(t *testing.T) {
	small := inputs(t)
	big, _ := bigInputs(t)
	nodes := 0
	for i, sql := range append(small, big...) {
		tree, err := Parse(sql)
		if err != nil {
			continue
		}
		var check func(m protoreflect.Message)
		check = func(m protoreflect.Message) {
			nodes++
			var names []protoreflect.Name
			if i < len(small) {
				names = setMessageFields(m)
			}
			for _, skip := range append([]protoreflect.Name{""}, names...) {
				want := rangeChildren(m, skip)
				var got []protoreflect.Message
				if !Children(m.Interface(), skip, func(c protoreflect.Message) { got = append(got, c) }) {
					t.Fatalf("%q: Children does not know %s", sql, m.Descriptor().FullName())
				}
				if !sameMessages(got, want) {
					t.Fatalf("%q: %s skipping %q: Children visited %d messages, Range %d, or others", sql, m.Descriptor().FullName(), skip, len(got), len(want))
				}
			}
			for _, c := range rangeChildren(m, "") {
				check(c)
			}
		}
		check(tree.ProtoReflect())
	}
	t.Logf("%d messages checked", nodes)
	if nodes < 100000 {
		t.Fatalf("only %d messages checked: the test lost its corpus", nodes)
	}
	if Children(&pg_query.ScanResult{}, "", func(protoreflect.Message) {}) {
		t.Fatal("Children claims a message outside the parse tree")
	}
}

// rangeChildren is the reference: the set message fields Range gives but
// skip, in field order.
func rangeChildren(m protoreflect.Message, skip protoreflect.Name) []protoreflect.Message {
	type child struct {
		index int
		m     protoreflect.Message
	}
	var cs []child
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.Name() == skip {
			return true
		}
		if fd.IsList() {
			for i := 0; i < v.List().Len(); i++ {
				cs = append(cs, child{fd.Index(), v.List().Get(i).Message()})
			}
			return true
		}
		cs = append(cs, child{fd.Index(), v.Message()})
		return true
	})
	slices.SortStableFunc(cs, func(a, b child) int { return a.index - b.index })
	out := make([]protoreflect.Message, len(cs))
	for i, c := range cs {
		out[i] = c.m
	}
	return out
}

func setMessageFields(m protoreflect.Message) (names []protoreflect.Name) {
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if fd.Message() != nil {
			names = append(names, fd.Name())
		}
		return true
	})
	return names
}

// sameMessages: the same messages (not equal copies) in the same order.
func sameMessages(a, b []protoreflect.Message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Interface() != b[i].Interface() {
			return false
		}
	}
	return true
}

// TestFailsClosed: output the generated code does not know is an error.
func TestFailsClosed(t *testing.T) {
	for _, js := range []string{
		`{"version":170007,"stmts":[{"stmt":{"SelectStmt":{"noSuchMember":1}}}]}`,
		`{"version":170007,"stmts":[{"stmt":{"NoSuchNode":{}}}]}`,
		`{"version":170007,"stmts":[{"stmt":{"SelectStmt":{"op":"SETOP_NEW"}}}]}`,
		`{"version":170007,"stmts":[{"stmt":{"SelectStmt":{"op":"SETOP_NONE"}}}]`,
		`{"version":"x"}`,
		`{"version":170007} trailing`,
		`{"version":170007,}`,
		`{"stmts":[{"stmt_len":99999999999}]}`,
		`{"stmts":[{"stmt":{"String":{"sval":"unterminated}}}]}`,
		`{"stmts":[{"stmt":{"String":{"sval":"bad \q escape"}}}]}`,
		`{"stmts":[{"stmt":{"String":{"sval":"ctl ` + "\x01" + `"}}}]}`,
		`{"stmts":[{"stmt":{"A_Const":{"isnull":tru}}}]}`,
		`{"stmts":[1]}`,
		`{"stmts":[{},]}`,
		"{\"stmts\":[{\"stmt\":{\"String\":{\"sval\":\"\xff\"}}}]}",
		strings.Repeat(`{"stmts":[{"stmt":{"SelectStmt":{"whereClause":`, 5000),
	} {
		if tree, err := decode(js); err == nil || !errors.Is(err, ErrOutput) {
			t.Errorf("%.80s: %v, %v; want an ErrOutput", js, tree, err)
		}
	}
}

// FuzzSameTree: for any input the two paths agree.
func FuzzSameTree(f *testing.F) {
	for _, s := range inputs(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.IndexByte(s, 0) >= 0 {
			return // both read up to the NUL; authz refuses such text first
		}
		same(t, s)
	})
}

// BenchmarkParse compares the two paths on a pgbench point SELECT.
func BenchmarkParse(b *testing.B) {
	const q = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"
	b.Run("pg_query.Parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := pg_query.Parse(q); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pgparse.Parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Parse(q); err != nil {
				b.Fatal(err)
			}
		}
	})
}
