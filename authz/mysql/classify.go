package mysql

import (
	"reflect"
	"strings"

	"github.com/pingcap/tidb/pkg/parser/ast"
	"github.com/pingcap/tidb/pkg/parser/test_driver"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/elide"
)

// myOp is what a MySQL statement does to the session's state, which the
// session applies once the message is allowed.
type myOp int

const (
	myOpNone myOp = iota
	myOpUse
	myOpPrepare
	myOpExecute
	myOpDeallocate
	myOpHandlerOpen
	myOpHandlerRead
	myOpHandlerClose
)

// myTable is a table as a MySQL statement names it; db is empty when the
// name is unqualified.
type myTable struct {
	db, name string
	written  bool
}

// myAnalysis collects what one MySQL statement does while its parse tree
// is walked. Like the Postgres walk it is reflective, over every exported
// field of every node, so a node type the classifier does not name is
// still searched for the function calls and tables inside it.
type myAnalysis struct {
	f      authz.Facts
	tables []myTable
	// dbs are databases the statement names outside tables (USE, SHOW
	// TABLES FROM), checked against the resource's.
	dbs []string

	written map[*ast.TableName]bool
	skip    map[*ast.TableName]bool
	// ctes are the WITH names visible where the walk is.
	ctes []string
	// planOnly is set under EXPLAIN without ANALYZE: nothing is executed
	// but constant subqueries, so only function calls count.
	planOnly bool
	depth    int

	op     myOp
	opName string // prepared statement or handler name
	opText string // PREPARE's statement text
	opDB   string // USE's database
	// handlerTable is the table HANDLER OPEN opens.
	handlerTable *myTable

	// calls are the procedures the statement CALLs, until a
	// myCallResolver decides them.
	calls []myCall
	// localSet marks, for each assignment of a SET in a routine body,
	// the ones that assign a local variable.
	localSet []bool
	// volatile is set when a procedure's definition was read from the
	// server for the decision.
	volatile bool
}

// myCall is a procedure a CALL names; db is empty when unqualified.
type myCall struct{ db, name string }

const maxWalkDepth = 1000

func (a *myAnalysis) need(level authz.Access, why string) {
	if level > authz.AccessRead {
		a.f.Needs = append(a.f.Needs, authz.Need{Level: level, Why: why, Fn: -1})
	}
}

func (a *myAnalysis) refuse(rule, why string) {
	if a.f.Refusal == "" {
		a.f.Refusal, a.f.RefusalRule = why, rule
	}
}

// statement reads one parsed statement: its kind and own level, and,
// through the walk, what is inside.
func (a *myAnalysis) statement(stmt ast.StmtNode) string {
	kind := a.statementKind(stmt)
	if authz.IsDropKind(kind) && a.f.Drops == "" {
		a.f.Drops = kind + " drops it and everything in it"
	}
	return kind
}

func (a *myAnalysis) statementKind(stmt ast.StmtNode) (kind string) {
	a.written = map[*ast.TableName]bool{}
	a.skip = map[*ast.TableName]bool{}
	own := func(k string, l authz.Access, why string) string {
		a.f.Own, a.f.OwnWhy = l, why
		return k
	}
	switch n := stmt.(type) {
	case *ast.SelectStmt:
		a.walk(reflect.ValueOf(n))
		switch n.Kind {
		case ast.SelectStmtKindTable:
			return own("TABLE", authz.AccessRead, "")
		case ast.SelectStmtKindValues:
			return own("VALUES", authz.AccessRead, "")
		}
		return own("SELECT", authz.AccessRead, "")
	case *ast.SetOprStmt:
		a.walk(reflect.ValueOf(n))
		return own("SELECT", authz.AccessRead, "")
	case *ast.InsertStmt:
		a.markAll(n.Table)
		a.walk(reflect.ValueOf(n))
		if n.IsReplace {
			return own("REPLACE", authz.AccessWrite, "")
		}
		return own("INSERT", authz.AccessWrite, "")
	case *ast.UpdateStmt:
		a.updateTargets(n)
		a.filtered("UPDATE", n.Where, n.TableRefs)
		a.walk(reflect.ValueOf(n))
		return own("UPDATE", authz.AccessWrite, "")
	case *ast.DeleteStmt:
		a.deleteTargets(n)
		a.filtered("DELETE", n.Where, n.TableRefs)
		a.walk(reflect.ValueOf(n))
		return own("DELETE", authz.AccessWrite, "")
	case *ast.LoadDataStmt:
		a.markTable(n.Table)
		a.walk(reflect.ValueOf(n))
		if n.FileLocRef == ast.FileLocClient {
			a.f.FileLoad = "LOAD DATA LOCAL INFILE reads a file from the client"
			return own("LOAD DATA", authz.AccessWrite, "")
		}
		a.f.ServerFiles = "LOAD DATA INFILE reads the database server's files"
		return own("LOAD DATA", authz.AccessAdmin, a.f.ServerFiles)
	case *ast.ExplainStmt:
		return a.explain(n)
	case *ast.ExplainForStmt:
		return own("EXPLAIN FOR CONNECTION", authz.AccessAdmin, "it reads another connection's statement")
	case *ast.ShowStmt:
		a.show(n)
		return own("SHOW", authz.AccessRead, "")
	case *ast.HelpStmt:
		return own("HELP", authz.AccessRead, "")
	case *ast.UseStmt:
		a.op, a.opDB = myOpUse, n.DBName
		a.dbs = append(a.dbs, n.DBName)
		return own("USE", authz.AccessRead, "")
	case *ast.SetStmt:
		return a.set(n)
	case *ast.SetPwdStmt:
		return own("SET PASSWORD", authz.AccessAdmin, "")
	case *ast.SetRoleStmt:
		return own("SET ROLE", authz.AccessAdmin, "SET ROLE switches the role")
	case *ast.SetDefaultRoleStmt:
		return own("SET DEFAULT ROLE", authz.AccessAdmin, "")
	case *ast.BeginStmt:
		if n.AsOf != nil || n.Mode != "" || n.CausalConsistencyOnly {
			return own("START TRANSACTION", authz.AccessAdmin, "TiDB transaction options that MySQL does not have")
		}
		return own("START TRANSACTION", authz.AccessRead, "")
	case *ast.CommitStmt:
		return own("COMMIT", authz.AccessRead, "")
	case *ast.RollbackStmt:
		if n.SavepointName != "" {
			return own("ROLLBACK TO", authz.AccessRead, "")
		}
		return own("ROLLBACK", authz.AccessRead, "")
	case *ast.SavepointStmt:
		return own("SAVEPOINT", authz.AccessRead, "")
	case *ast.ReleaseSavepointStmt:
		return own("RELEASE SAVEPOINT", authz.AccessRead, "")
	case *ast.PrepareStmt:
		if n.SQLVar != nil {
			a.refuse("indirection", "PREPARE "+n.Name+" FROM @"+n.SQLVar.Name+" prepares SQL held in a user variable, which airlock cannot see; write the statement in the PREPARE itself: PREPARE "+n.Name+" FROM '...'")
			return own("PREPARE", authz.AccessRead, "")
		}
		a.op, a.opName, a.opText = myOpPrepare, strings.ToLower(n.Name), n.SQLText
		return own("PREPARE", authz.AccessRead, "")
	case *ast.ExecuteStmt:
		a.op, a.opName = myOpExecute, strings.ToLower(n.Name)
		if n.BinaryArgs != nil || n.PrepStmt != nil {
			a.refuse("indirection", "EXECUTE with protocol-level arguments")
		}
		a.walk(reflect.ValueOf(n))
		return own("EXECUTE", authz.AccessRead, "")
	case *ast.DeallocateStmt:
		a.op, a.opName = myOpDeallocate, strings.ToLower(n.Name)
		return own("DEALLOCATE PREPARE", authz.AccessRead, "")
	case *ast.DoStmt:
		a.walk(reflect.ValueOf(n))
		return own("DO", authz.AccessRead, "")
	case *ast.CallStmt:
		if n.Procedure != nil {
			// The procedure is not a function call; its arguments are
			// expressions like any other.
			a.walk(reflect.ValueOf(n.Procedure.Args))
			a.calls = append(a.calls, myCall{db: n.Procedure.Schema.O, name: n.Procedure.FnName.O})
			if n.Procedure.Schema.O != "" {
				a.dbs = append(a.dbs, n.Procedure.Schema.O)
			}
		} else {
			a.f.Unresolved = "CALL runs a procedure that may touch any table"
			a.need(authz.AccessAdmin, "CALL runs a procedure airlock cannot inspect")
		}
		// What the procedure runs is added when it is resolved
		// (myCallResolver); until then it needs admin.
		return own("CALL", authz.AccessRead, "")
	case *ast.LockTablesStmt:
		for _, tl := range n.TableLocks {
			if tl.Type != ast.TableLockRead && tl.Type != ast.TableLockReadLocal {
				a.markTable(tl.Table)
			}
		}
		a.walk(reflect.ValueOf(n))
		return own("LOCK TABLES", authz.AccessWrite, "")
	case *ast.UnlockTablesStmt:
		return own("UNLOCK TABLES", authz.AccessRead, "")
	}
	if kind, level, why, ok := a.myDDL(stmt); ok {
		return own(kind, level, why)
	}
	if kind, level, why, ok := myAdmin(stmt); ok {
		return own(kind, level, why)
	}
	name := reflect.TypeOf(stmt).String()
	name = strings.TrimSuffix(strings.TrimPrefix(name, "*ast."), "Stmt")
	return own(strings.ToUpper(name), authz.AccessAdmin, "unrecognized statement type "+reflect.TypeOf(stmt).Elem().Name())
}

func (a *myAnalysis) explain(n *ast.ExplainStmt) string {
	if n.Stmt == nil {
		return a.ownKind("EXPLAIN", authz.AccessAdmin, "EXPLAIN of a digest")
	}
	if s, ok := n.Stmt.(*ast.ShowStmt); ok {
		a.show(s)
		return a.ownKind("DESCRIBE", authz.AccessRead, "")
	}
	switch n.Stmt.(type) {
	case *ast.SelectStmt, *ast.SetOprStmt, *ast.InsertStmt, *ast.UpdateStmt, *ast.DeleteStmt:
	default:
		a.statement(n.Stmt)
		return a.ownKind("EXPLAIN", authz.AccessAdmin, "EXPLAIN of a statement MySQL does not explain")
	}
	if n.Analyze {
		ik := a.statement(n.Stmt)
		if a.f.Own <= authz.AccessRead {
			return a.ownKind("EXPLAIN", authz.AccessRead, "")
		}
		return a.ownKind("EXPLAIN", a.f.Own, "EXPLAIN ANALYZE executes "+ik)
	}
	a.planOnly = true
	ik := a.statement(n.Stmt)
	a.f.Unfiltered = ""
	if a.f.Own > authz.AccessRead {
		// Nothing is changed, but MariaDB refuses EXPLAIN of a data
		// change in a read-only transaction, as the differential oracle
		// found; a read grant should not be where the two differ.
		return a.ownKind("EXPLAIN", authz.AccessWrite, "the server treats EXPLAIN of "+ik+" as a write")
	}
	return a.ownKind("EXPLAIN", authz.AccessRead, "")
}

func (a *myAnalysis) ownKind(kind string, l authz.Access, why string) string {
	a.f.Own, a.f.OwnWhy = l, why
	return kind
}

func (a *myAnalysis) show(n *ast.ShowStmt) {
	if n.DBName != "" {
		a.dbs = append(a.dbs, n.DBName)
	}
	if n.Table != nil && n.Table.Schema.O != "" {
		a.dbs = append(a.dbs, n.Table.Schema.O)
	}
	if n.Where != nil {
		a.walk(reflect.ValueOf(n.Where))
	}
	if n.Pattern != nil {
		a.walk(reflect.ValueOf(n.Pattern))
	}
}

// set classifies SET. Session variables on an allow-list, user variables
// and transaction characteristics are read; anything global, or a session
// variable that changes how the server reads text, logs or checks, is
// admin.
func (a *myAnalysis) set(n *ast.SetStmt) string {
	a.f.Own = authz.AccessRead
	for i, v := range n.Variables {
		if v.Value != nil {
			a.walk(reflect.ValueOf(v.Value))
		}
		if v.ExtendValue != nil {
			a.walk(reflect.ValueOf(v.ExtendValue))
		}
		if i < len(a.localSet) && a.localSet[i] {
			continue // a routine's local variable
		}
		name := strings.ToLower(v.Name)
		switch {
		case name == strings.ToLower(ast.SetNames) || name == strings.ToLower(ast.SetCharset):
			cs, ok := myConstString(v.Value)
			if v.Value == nil {
				cs, ok = "", true // SET NAMES DEFAULT: the server's default
			}
			if !ok || cs != "" && !SafeCharset(cs) {
				a.need(authz.AccessAdmin, "character set "+cs+" could make the server read text differently from airlock")
			}
		case !v.IsSystem:
			// A user variable lives in the session.
		case v.IsGlobal || v.IsInstance:
			a.need(authz.AccessAdmin, "SET GLOBAL "+name+" changes the server for every session")
		default:
			if why := mySessionVarWhy(name, v.Value); why != "" {
				a.need(authz.AccessAdmin, why)
			}
		}
	}
	return "SET"
}

// myConstString reads a string literal or a bare word (SET NAMES utf8).
func myConstString(e ast.ExprNode) (string, bool) {
	switch x := e.(type) {
	case *test_driver.ValueExpr:
		if s, ok := x.GetValue().(string); ok {
			return elide.LiteralValue(s)
		}
	case *ast.ColumnNameExpr:
		if x.Name.Table.O == "" {
			return x.Name.Name.O, true
		}
	}
	return "", false
}
