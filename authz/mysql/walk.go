package mysql

import (
	"reflect"
	"strings"
	"sync"

	"github.com/pingcap/tidb/pkg/parser/ast"
	tidbmysql "github.com/pingcap/tidb/pkg/parser/mysql"
	"github.com/pingcap/tidb/pkg/parser/test_driver"

	"github.com/airlockhq/airlock/authz"
)

// markTable marks t as written.
func (a *myAnalysis) markTable(t *ast.TableName) {
	if t != nil {
		a.written[t] = true
	}
}

// markAll marks every table of a FROM clause as written.
func (a *myAnalysis) markAll(refs *ast.TableRefsClause) {
	for _, ts := range tableSources(refs) {
		if tn, ok := ts.Source.(*ast.TableName); ok {
			a.markTable(tn)
		}
	}
}

// tableSources lists the tables and derived tables of a FROM clause.
func tableSources(refs *ast.TableRefsClause) []*ast.TableSource {
	var out []*ast.TableSource
	var rec func(n ast.ResultSetNode)
	rec = func(n ast.ResultSetNode) {
		switch x := n.(type) {
		case *ast.Join:
			if x == nil {
				return
			}
			rec(x.Left)
			rec(x.Right)
		case *ast.TableSource:
			out = append(out, x)
		}
	}
	if refs != nil && refs.TableRefs != nil {
		rec(refs.TableRefs)
	}
	return out
}

// findSource finds the table of FROM named (or aliased) name.
func findSource(sources []*ast.TableSource, db, name string) *ast.TableName {
	for _, ts := range sources {
		tn, ok := ts.Source.(*ast.TableName)
		if !ok {
			continue
		}
		if ts.AsName.O != "" {
			if db == "" && strings.EqualFold(ts.AsName.O, name) {
				return tn
			}
			continue
		}
		if tn.Name.O == name && (db == "" || tn.Schema.O == db) {
			return tn
		}
	}
	return nil
}

// updateTargets marks the tables an UPDATE assigns to: the one named by a
// qualified column, or, for an unqualified column in a multi-table UPDATE,
// every table (MySQL would say which; airlock over-counts).
func (a *myAnalysis) updateTargets(n *ast.UpdateStmt) {
	sources := tableSources(n.TableRefs)
	for _, as := range n.List {
		if as.Column == nil {
			continue
		}
		if t := as.Column.Table.O; t != "" {
			if tn := findSource(sources, as.Column.Schema.O, t); tn != nil {
				a.markTable(tn)
				continue
			}
		}
		a.markAll(n.TableRefs)
	}
}

// deleteTargets marks what a DELETE deletes from. In the multi-table form
// the targets name tables of the FROM clause, usually by alias; those
// names are not tables of their own.
func (a *myAnalysis) deleteTargets(n *ast.DeleteStmt) {
	if !n.IsMultiTable || n.Tables == nil {
		a.markAll(n.TableRefs)
		return
	}
	sources := tableSources(n.TableRefs)
	for _, t := range n.Tables.Tables {
		if tn := findSource(sources, t.Schema.O, t.Name.O); tn != nil {
			a.markTable(tn)
			a.skip[t] = true
			continue
		}
		// Not found in FROM: the server will refuse it; count it as a
		// written table so the scope is still checked.
		a.markTable(t)
	}
}

// filtered notes an UPDATE or DELETE that changes every row: no WHERE, or
// a WHERE that reads no column (WHERE 1=1), and no join condition that
// does.
func (a *myAnalysis) filtered(kind string, where ast.ExprNode, refs *ast.TableRefsClause) {
	if where != nil && myHasColumn(where) {
		return
	}
	var joinFilter bool
	var rec func(n ast.ResultSetNode)
	rec = func(n ast.ResultSetNode) {
		if j, ok := n.(*ast.Join); ok && j != nil {
			if j.On != nil && myHasColumn(j.On.Expr) {
				joinFilter = true
			}
			if len(j.Using) > 0 || j.NaturalJoin {
				joinFilter = true
			}
			rec(j.Left)
			rec(j.Right)
		}
	}
	if refs != nil && refs.TableRefs != nil {
		rec(refs.TableRefs)
	}
	if joinFilter {
		return
	}
	if where == nil {
		a.f.Unfiltered = kind + " without WHERE"
	} else {
		a.f.Unfiltered = kind + " whose WHERE clause reads no column"
	}
}

type columnFinder struct{ found bool }

func (c *columnFinder) Enter(n ast.Node) (ast.Node, bool) {
	if _, ok := n.(*ast.ColumnNameExpr); ok {
		c.found = true
	}
	return n, c.found
}
func (c *columnFinder) Leave(n ast.Node) (ast.Node, bool) { return n, true }

func myHasColumn(e ast.ExprNode) bool {
	var c columnFinder
	e.Accept(&c)
	return c.found
}

// walk visits v and everything below it.
func (a *myAnalysis) walk(v reflect.Value) {
	a.depth++
	defer func() { a.depth-- }()
	if a.depth > maxWalkDepth {
		a.refuse("unparseable", "the statement nests too deeply for airlock to read")
		return
	}
	switch v.Kind() {
	case reflect.Interface:
		if !v.IsNil() {
			a.walk(v.Elem())
		}
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		if !a.node(v.Interface()) {
			return
		}
		if v.Elem().Kind() == reflect.Struct {
			a.walkStruct(v.Elem(), -1)
		}
	case reflect.Struct:
		a.walkStruct(v, -1)
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			a.walk(v.Index(i))
		}
	}
}

func (a *myAnalysis) walkStruct(v reflect.Value, skip int) {
	for _, i := range nodeFields(v.Type()) {
		if i != skip {
			a.walk(v.Field(i))
		}
	}
}

// node handles the node types that matter, and says whether to walk into
// the node.
func (a *myAnalysis) node(x any) bool {
	switch n := x.(type) {
	case *ast.TableName:
		a.table(n)
		return false
	case *ast.FuncCallExpr:
		a.funcCall(n)
	case *ast.SelectStmt:
		if !a.planOnly {
			if n.LockInfo != nil && n.LockInfo.LockType != ast.SelectLockNone {
				a.need(authz.AccessWrite, strings.ToUpper(n.LockInfo.LockType.String())+" takes row locks")
			}
			if n.SelectIntoOpt != nil && n.SelectIntoOpt.Tp != ast.SelectIntoVars {
				a.f.ServerFiles = "SELECT INTO OUTFILE and DUMPFILE write the database server's files"
				a.need(authz.AccessAdmin, a.f.ServerFiles)
			}
		}
		if n.LockInfo != nil {
			for _, t := range n.LockInfo.Tables {
				a.skip[t] = true // FOR UPDATE OF names a table of FROM
			}
		}
		if n.With != nil {
			a.with(reflect.ValueOf(n), n.With)
			return false
		}
	case *ast.SetOprStmt:
		if n.With != nil {
			a.with(reflect.ValueOf(n), n.With)
			return false
		}
	case *ast.UpdateStmt:
		if n.With != nil {
			a.with(reflect.ValueOf(n), n.With)
			return false
		}
	case *ast.DeleteStmt:
		if n.With != nil {
			a.with(reflect.ValueOf(n), n.With)
			return false
		}
	case *ast.VariableExpr:
		if n.IsSystem && n.Value != nil {
			a.need(authz.AccessAdmin, "it sets a system variable")
		}
	case *ast.TableOptimizerHint:
		// Hints are blanked before parsing; one that arrives anyway is
		// refused rather than read.
		a.refuse("lexical", "an optimizer hint airlock did not expect")
		return false
	}
	return true
}

// with walks a statement with a WITH clause: each CTE sees the CTEs
// before it (and itself, when recursive), the body sees all of them. A
// CTE that sees less than MySQL lets it only over-counts tables.
func (a *myAnalysis) with(v reflect.Value, w *ast.WithClause) {
	saved := a.ctes
	visible := append([]string(nil), saved...)
	for _, c := range w.CTEs {
		a.ctes = visible
		if w.IsRecursive {
			a.ctes = append(append([]string(nil), visible...), c.Name.O)
		}
		a.walk(reflect.ValueOf(c.Query))
		visible = append(visible, c.Name.O)
	}
	a.ctes = visible
	a.walkStruct(v.Elem(), withField(v.Elem().Type()))
	a.ctes = saved
}

func (a *myAnalysis) table(n *ast.TableName) {
	if a.skip[n] {
		return
	}
	written := a.written[n]
	if n.Schema.O == "" && !written {
		for _, c := range a.ctes {
			if c == n.Name.O {
				return
			}
		}
	}
	a.tables = append(a.tables, myTable{db: n.Schema.O, name: n.Name.O, written: written})
}

func (a *myAnalysis) funcCall(n *ast.FuncCallExpr) {
	fu := myFuncEffect(n.Schema.O, n.FnName.L)
	a.f.Funcs = append(a.f.Funcs, fu.use)
	if fu.serverFiles != "" && !a.planOnly {
		a.f.ServerFiles = fu.serverFiles
	}
	if fu.use.Level > authz.AccessRead {
		a.f.Needs = append(a.f.Needs, authz.Need{Level: fu.use.Level, Why: fu.why, Fn: len(a.f.Funcs) - 1})
	}
}

// nodeFields lists the fields of a struct type that can hold a node:
// exported, and of a kind that can reach a pointer or interface. The
// walk visits only those; the list is computed once per type.
func nodeFields(t reflect.Type) []int {
	if f, ok := fieldCache.Load(t); ok {
		return f.([]int)
	}
	var out []int
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if sf.IsExported() && mayHoldNode(sf.Type, map[reflect.Type]bool{}) {
			out = append(out, i)
		}
	}
	fieldCache.Store(t, out)
	return out
}

var fieldCache sync.Map // reflect.Type -> []int

var (
	ciStrType     = reflect.TypeOf(ast.CIStr{})
	datumType     = reflect.TypeOf(test_driver.Datum{})
	sqlModeType   = reflect.TypeOf(tidbmysql.SQLMode(0))
	withClausePtr = reflect.TypeOf(&ast.WithClause{})
)

func mayHoldNode(t reflect.Type, seen map[reflect.Type]bool) bool {
	if t == ciStrType || t == datumType || t == sqlModeType {
		return false
	}
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return mayHoldNode(t.Elem(), seen)
	case reflect.Struct:
		if seen[t] {
			return true
		}
		seen[t] = true
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if sf.IsExported() && mayHoldNode(sf.Type, seen) {
				return true
			}
		}
	}
	return false
}

// withField is the index of the With field of a statement type.
func withField(t reflect.Type) int {
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Type == withClausePtr {
			return i
		}
	}
	return -1
}
