package postgres

import (
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/postgres/pgparse"
)

// analysis collects what one top-level statement does while its parse tree
// is walked. The walk is reflective, over every populated field of every
// message, so a node type added by a new Postgres release is still searched
// for the function calls and data-modifying statements inside it; only the
// handful of node types that decide a level are named here.
type analysis struct {
	// f collects what the policy needs: the requirements found inside the
	// statement (a nested DELETE, a function call, a row lock), guardrail
	// facts, and the refusal of what airlock cannot see into. The
	// statement's own level is kept by the caller.
	f authz.Facts
	// rels are the relations named, before resolution against the
	// default schema.
	rels []pgRel
	// writtenRV are the RangeVars that name a statement's target; every
	// other RangeVar is read.
	writtenRV []*pg_query.RangeVar

	// exec names the prepared statement an EXECUTE runs ("" for none);
	// execWhere is where it sits ("" at the top level).
	exec, execWhere string
	// prepName, prepKind and prepOwn describe what a PREPARE prepares.
	prepName, prepKind string
	prepOwn            authz.Access
	// dealloc names what a DEALLOCATE drops; deallocAll is DEALLOCATE ALL
	// (or DISCARD ALL).
	dealloc    string
	deallocAll bool

	// literal is set when the walk read the value of a constant of the
	// message (through literal.go): the decision then holds for this
	// text only, not for every message of the same masked key.
	literal bool
}

// pgRel is a relation as a statement names it.
type pgRel struct {
	catalog, schema, name string
	written               bool
}

// scope is where in the tree a node sits.
type scope struct {
	// where is what encloses the node, for reasons ("a WITH clause"); empty
	// at the root of a statement, so the root's own kind is not mistaken for
	// a nested one.
	where string
	// planOnly is set under EXPLAIN without ANALYZE. Nothing is executed
	// then, except function calls the planner makes itself: it folds
	// immutable calls with constant arguments and evaluates stable ones
	// for its estimates. So only functions that are not volatile, or not
	// known at all (a user-defined one may be declared anything), and
	// unknown operators count there.
	planOnly bool
	// ctes are the WITH names visible here; a RangeVar naming one is not a
	// table.
	ctes []string
}

func (sc scope) inside(where string) scope {
	if sc.where == "" || where == "a WITH clause" {
		sc.where = where
	}
	return sc
}

// need records that something inside the statement requires level.
func (a *analysis) need(level authz.Access, why string) {
	if level > authz.AccessRead {
		a.f.Needs = append(a.f.Needs, authz.Need{Level: level, Why: why, Fn: -1})
	}
}

// refuse refuses the statement under every grant, for the first reason
// found.
func (a *analysis) refuse(why string) {
	if a.f.Refusal == "" {
		a.f.Refusal, a.f.RefusalRule = why, "indirection"
	}
}

func (a *analysis) markWritten(rv *pg_query.RangeVar) {
	if rv != nil {
		a.writtenRV = append(a.writtenRV, rv)
	}
}

// walk visits m and everything below it.
func (a *analysis) walk(m protoreflect.Message, sc scope) {
	switch n := m.Interface().(type) {
	case *pg_query.Node:
		// A Node is a oneof of some 270 node types; unwrapping it directly
		// is much cheaper than ranging over its fields.
		if inner := nodeMessage(n); inner != nil {
			a.walk(inner, sc)
		}
		return
	case *pg_query.RangeVar:
		a.table(n, sc)
		return
	case *pg_query.A_Const, *pg_query.String, *pg_query.Integer, *pg_query.Float, *pg_query.Boolean,
		*pg_query.BitString, *pg_query.A_Star, *pg_query.ParamRef, *pg_query.ColumnRef:
		// Leaves: nothing below them calls a function or names a table
		// (a ColumnRef's fields are names), and skipping them saves most
		// of the walk's reflection.
		return
	case *pg_query.FuncCall:
		a.funcCall(n, sc)
	case *pg_query.A_Expr:
		switch n.Kind {
		case pg_query.A_Expr_Kind_AEXPR_BETWEEN, pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN,
			pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
			// Named by keyword; the comparisons inside are the built-in
			// <= and >=.
		default:
			a.operator(n.Name)
		}
	case *pg_query.SubLink:
		a.operator(n.OperName)
	case *pg_query.SortBy:
		a.operator(n.UseOp)
	case *pg_query.SelectStmt:
		a.selectEffects(n, sc)
		if n.WithClause != nil {
			a.withStmt(m, n.WithClause, sc)
			return
		}
	case *pg_query.InsertStmt:
		a.dml("INSERT", n.Relation, sc)
		if n.WithClause != nil {
			a.withStmt(m, n.WithClause, sc)
			return
		}
	case *pg_query.UpdateStmt:
		a.dml("UPDATE", n.Relation, sc)
		a.filtered("UPDATE", n.WhereClause, sc)
		if n.WithClause != nil {
			a.withStmt(m, n.WithClause, sc)
			return
		}
	case *pg_query.DeleteStmt:
		a.dml("DELETE", n.Relation, sc)
		a.filtered("DELETE", n.WhereClause, sc)
		if n.WithClause != nil {
			a.withStmt(m, n.WithClause, sc)
			return
		}
	case *pg_query.MergeStmt:
		a.dml("MERGE", n.Relation, sc)
		if n.WithClause != nil {
			a.withStmt(m, n.WithClause, sc)
			return
		}
	case *pg_query.ExecuteStmt:
		// statement handles EXECUTE where Postgres accepts it (top level,
		// EXPLAIN, CREATE TABLE AS); anywhere else, refuse rather than guess
		// what the prepared statement does.
		if !sc.planOnly {
			a.refuse("EXECUTE " + n.Name + " where airlock does not expect it")
		}
	}
	a.children(m, sc.inside("a subquery"), "")
}

// children walks every populated message field of m but skip: through
// pgparse's generated lister for the parse tree's messages, with
// reflection for any other (none today; a message a newer pg_query_go adds
// before the code is generated again).
func (a *analysis) children(m protoreflect.Message, sc scope, skip protoreflect.Name) {
	if pgparse.Children(m.Interface(), skip, func(c protoreflect.Message) { a.walk(c, sc) }) {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() == skip || fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				a.walk(l.Get(i).Message(), sc)
			}
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				a.walk(mv.Message(), sc)
				return true
			})
		default:
			a.walk(v.Message(), sc)
		}
		return true
	})
}

// withStmt walks a statement that has a WITH clause, giving each part the
// CTE names it can see: a non-recursive CTE sees only the CTEs before it (so
// in "WITH orders AS (SELECT * FROM orders)" the inner orders is the table),
// a recursive one sees all of them, and the statement body sees all.
func (a *analysis) withStmt(m protoreflect.Message, w *pg_query.WithClause, sc scope) {
	all := slices.Clone(sc.ctes)
	for _, c := range w.Ctes {
		if cte := c.GetCommonTableExpr(); cte != nil {
			all = append(all, cte.Ctename)
		}
	}
	visible := slices.Clone(sc.ctes)
	for _, c := range w.Ctes {
		cte := c.GetCommonTableExpr()
		if cte == nil {
			a.walk(c.ProtoReflect(), sc.inside("a WITH clause"))
			continue
		}
		csc := sc.inside("a WITH clause")
		csc.ctes = visible
		if w.Recursive {
			csc.ctes = all
		}
		a.children(cte.ProtoReflect(), csc, "")
		visible = append(slices.Clone(visible), cte.Ctename)
	}
	body := sc.inside("a subquery")
	body.ctes = all
	a.children(m, body, "with_clause")
}

// dml handles INSERT, UPDATE, DELETE and MERGE wherever they sit.
func (a *analysis) dml(kind string, target *pg_query.RangeVar, sc scope) {
	a.markWritten(target)
	if sc.where != "" && !sc.planOnly {
		a.need(authz.AccessWrite, kind+" inside "+sc.where)
	}
}

// filtered notes an UPDATE or DELETE that changes every row: no WHERE
// clause, or one that reads no column (WHERE true, WHERE 1 = 1), which
// filters all rows or none. WHERE CURRENT OF changes one row.
func (a *analysis) filtered(kind string, where *pg_query.Node, sc scope) {
	if sc.planOnly || a.f.Unfiltered != "" {
		return
	}
	switch {
	case where == nil:
		a.f.Unfiltered = kind + " without WHERE"
	case !readsColumn(nodeMessage(where)):
		a.f.Unfiltered = kind + " whose WHERE clause reads no column"
	}
}

// readsColumn reports whether an expression refers to a column (or is
// WHERE CURRENT OF).
func readsColumn(m protoreflect.Message) bool {
	if m == nil {
		return false
	}
	switch n := m.Interface().(type) {
	case *pg_query.ColumnRef, *pg_query.CurrentOfExpr:
		return true
	case *pg_query.Node:
		return readsColumn(nodeMessage(n))
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len() && !found; i++ {
				found = readsColumn(l.Get(i).Message())
			}
		} else if !fd.IsMap() {
			found = readsColumn(v.Message())
		}
		return !found
	})
	return found
}

func (a *analysis) selectEffects(n *pg_query.SelectStmt, sc scope) {
	if n.IntoClause != nil {
		a.markWritten(n.IntoClause.Rel)
		if !sc.planOnly {
			a.need(authz.AccessDDL, "SELECT INTO creates a table")
		}
	}
	if sc.planOnly {
		return
	}
	for _, l := range n.LockingClause {
		if lc := l.GetLockingClause(); lc != nil {
			a.need(authz.AccessWrite, lockName(lc.Strength)+" takes row locks")
		}
	}
}

func lockName(s pg_query.LockClauseStrength) string {
	switch s {
	case pg_query.LockClauseStrength_LCS_FORKEYSHARE:
		return "FOR KEY SHARE"
	case pg_query.LockClauseStrength_LCS_FORSHARE:
		return "FOR SHARE"
	case pg_query.LockClauseStrength_LCS_FORNOKEYUPDATE:
		return "FOR NO KEY UPDATE"
	default:
		return "FOR UPDATE"
	}
}

func (a *analysis) table(rv *pg_query.RangeVar, sc scope) {
	for _, w := range a.writtenRV {
		if w == rv {
			a.rels = append(a.rels, pgRel{rv.Catalogname, rv.Schemaname, rv.Relname, true})
			return
		}
	}
	if rv.Schemaname == "" && rv.Catalogname == "" && slices.Contains(sc.ctes, rv.Relname) {
		return
	}
	a.rels = append(a.rels, pgRel{rv.Catalogname, rv.Schemaname, rv.Relname, false})
}

func rangeVarName(rv *pg_query.RangeVar) string {
	switch {
	case rv.Catalogname != "":
		return rv.Catalogname + "." + rv.Schemaname + "." + rv.Relname
	case rv.Schemaname != "":
		return rv.Schemaname + "." + rv.Relname
	}
	return rv.Relname
}

func (a *analysis) funcCall(fc *pg_query.FuncCall, sc scope) {
	schema, name := splitFuncName(fc.Funcname)
	e := a.funcCallEffect(schema, name, fc.Args)
	counts := !sc.planOnly || e.plannerMayRun
	use := authz.FuncUse{Schema: schema, Name: name, Level: authz.AccessRead, Opaque: e.opaque, Lowerable: e.level == authz.AccessWrite}
	if counts {
		use.Level = e.level
		if e.serverFiles {
			a.f.ServerFiles = e.why
		}
	}
	a.f.Funcs = append(a.f.Funcs, use)
	if counts && e.level > authz.AccessRead {
		a.f.Needs = append(a.f.Needs, authz.Need{Level: e.level, Why: e.why, Fn: len(a.f.Funcs) - 1})
	}
}

// splitFuncName splits a qualified function name, dropping pg_catalog: it is
// where built-ins live, and an unqualified name finds it first anyway. The
// name of a malformed call (no parts) is empty, which no list holds.
// sortedSet sorts and deduplicates in place.
func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	slices.Sort(s)
	return slices.Compact(s)
}

func splitFuncName(parts []*pg_query.Node) (schema, name string) {
	names := make([]string, 0, 3)
	for _, p := range parts {
		names = append(names, identName(p))
	}
	switch len(names) {
	case 0:
		return "", ""
	case 1:
		return "", names[0]
	}
	name = names[len(names)-1]
	schema = strings.Join(names[:len(names)-1], ".")
	if schema == "pg_catalog" {
		schema = ""
	}
	return schema, name
}

// operator checks an operator name, given as the parser's name parts (empty
// when there is none, as in EXISTS). Unknown operators count even under
// plain EXPLAIN, for the same reason unknown functions do.
func (a *analysis) operator(parts []*pg_query.Node) {
	if len(parts) == 0 {
		return
	}
	schema, name := splitFuncName(parts)
	if _, ok := builtinOperators[name]; ok && schema == "" {
		return
	}
	display := name
	if schema != "" {
		display = "OPERATOR(" + schema + "." + name + ")"
	}
	// An operator is a function call in disguise: one airlock does not
	// know may read any table, like an unknown function. It cannot be
	// listed with --function.
	a.f.Funcs = append(a.f.Funcs, authz.FuncUse{Name: display, Level: authz.AccessWrite, Opaque: true})
	a.f.Needs = append(a.f.Needs, authz.Need{Level: authz.AccessWrite, Why: "uses operator " + display + ", which is not known to be read-only", Fn: len(a.f.Funcs) - 1})
}
