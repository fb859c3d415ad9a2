package postgres

import (
	"reflect"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/airlockhq/airlock/authz"
)

// classify reads one top-level statement: its kind, its own level and why,
// and in the analysis what is inside.
func classify(stmt *pg_query.Node) (kind string, a *analysis) {
	a = &analysis{}
	kind, a.f.Own, a.f.OwnWhy = a.statement(stmt, scope{})
	if authz.IsDropKind(kind) && a.f.Drops == "" {
		a.f.Drops = kind + " drops it and everything in it"
	}
	return kind, a
}

// nodeMessage unwraps a Node to the statement or expression it holds. Each
// member of the Node oneof is a struct with the message as its only field;
// reading that field with reflect avoids the allocations of protoreflect's
// oneof accessors, which matters on the per-statement path.
func nodeMessage(n *pg_query.Node) protoreflect.Message {
	if n == nil || n.Node == nil {
		return nil
	}
	w := reflect.ValueOf(n.Node).Elem()
	if w.NumField() != 1 {
		return nil
	}
	pm, ok := w.Field(0).Interface().(protoreflect.ProtoMessage)
	if !ok || reflect.ValueOf(pm).IsNil() {
		return nil
	}
	return pm.ProtoReflect()
}

// statement gives a statement's kind and its own level, and walks it so
// that a collects what is nested inside. Statements that wrap another one
// (EXPLAIN, PREPARE, DECLARE, COPY, CREATE TABLE AS) classify the inner one
// as a statement of its own.
func (a *analysis) statement(stmt *pg_query.Node, sc scope) (kind string, level authz.Access, why string) {
	m := nodeMessage(stmt)
	if m == nil {
		return "UNKNOWN", authz.AccessAdmin, "empty statement node"
	}
	kind, level, why, walked := a.wrapper(m, sc)
	if !walked {
		kind, level, why = a.plain(m)
		a.walk(m, sc)
	}
	return kind, level, why
}

// wrapper handles the statements whose level depends on a statement inside
// them, and those that need a look at their options. It walks what it
// handles; walked is false when m is not one of them.
func (a *analysis) wrapper(m protoreflect.Message, sc scope) (kind string, level authz.Access, why string, walked bool) {
	switch n := m.Interface().(type) {
	case *pg_query.ExplainStmt:
		analyze := a.explainAnalyze(n.Options)
		isc := sc
		isc.planOnly = sc.planOnly || !analyze
		ik, il, _ := a.statement(n.Query, isc)
		a.children(m, sc, "query")
		if isc.planOnly || il <= authz.AccessRead {
			return "EXPLAIN", authz.AccessRead, "", true
		}
		return "EXPLAIN", il, "EXPLAIN ANALYZE executes " + ik, true

	case *pg_query.PrepareStmt:
		ik, il, _ := a.statement(n.Query, sc)
		a.children(m, sc, "query")
		a.prepName, a.prepKind, a.prepOwn = n.Name, ik, il
		if il <= authz.AccessRead {
			return "PREPARE", authz.AccessRead, "", true
		}
		return "PREPARE", il, "PREPARE of " + ik, true

	case *pg_query.DeclareCursorStmt:
		ik, il, _ := a.statement(n.Query, sc)
		if il <= authz.AccessRead {
			return "DECLARE CURSOR", authz.AccessRead, "", true
		}
		return "DECLARE CURSOR", il, "DECLARE CURSOR of " + ik, true

	case *pg_query.CreateTableAsStmt:
		kind = "CREATE TABLE AS"
		if n.Objtype == pg_query.ObjectType_OBJECT_MATVIEW {
			kind = "CREATE MATERIALIZED VIEW"
		}
		if n.Into != nil {
			a.markWritten(n.Into.Rel)
		}
		a.statement(n.Query, sc)
		a.children(m, sc.inside("a subquery"), "query")
		return kind, authz.AccessDDL, "", true

	case *pg_query.CopyStmt:
		return a.copyStmt(n, sc)

	case *pg_query.ExecuteStmt:
		// What the prepared statement needs is added by the session, which
		// knows it; without one, the statement is refused.
		if !sc.planOnly {
			a.exec, a.execWhere = n.Name, sc.where
		}
		// EXPLAIN EXECUTE plans without running, but it does evaluate the
		// parameters.
		psc := sc.inside("a subquery")
		psc.planOnly = false
		a.children(m, psc, "")
		return "EXECUTE", authz.AccessRead, "", true
	}
	return "", 0, "", false
}

func (a *analysis) copyStmt(n *pg_query.CopyStmt, sc scope) (kind string, level authz.Access, why string, walked bool) {
	level = authz.AccessRead
	if n.Query != nil {
		ik, il, _ := a.statement(n.Query, sc)
		if il > authz.AccessRead {
			level, why = il, "COPY of "+ik
		}
	} else if n.IsFrom {
		a.markWritten(n.Relation)
		level = authz.AccessWrite
	}
	file := a.copyFile(n)
	switch {
	case n.IsProgram:
		level, why = authz.AccessAdmin, "COPY PROGRAM runs a command on the database server"
	case file && n.IsFrom:
		level, why = authz.AccessAdmin, "COPY FROM a file reads the database server's files"
	case file:
		level, why = authz.AccessAdmin, "COPY TO a file writes the database server's files"
	}
	if n.IsProgram || file {
		a.f.ServerFiles = why
	}
	a.children(n.ProtoReflect(), sc.inside("a subquery"), "query")
	return "COPY", level, why, true
}

// explainAnalyze reports whether EXPLAIN's options ask it to execute. An
// option value it cannot read counts as yes.
func (a *analysis) explainAnalyze(opts []*pg_query.Node) bool {
	analyze := false
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || !strings.EqualFold(d.Defname, "analyze") {
			continue
		}
		analyze = a.optionTrue(d.Arg)
	}
	return analyze
}

// plain gives the kind and level of a statement that stands on its own. It
// marks the RangeVars a statement writes before the walk reaches them.
func (a *analysis) plain(m protoreflect.Message) (kind string, level authz.Access, why string) {
	switch n := m.Interface().(type) {
	case *pg_query.SelectStmt:
		if len(n.ValuesLists) > 0 {
			return "VALUES", authz.AccessRead, ""
		}
		return "SELECT", authz.AccessRead, ""
	case *pg_query.InsertStmt:
		return "INSERT", authz.AccessWrite, ""
	case *pg_query.UpdateStmt:
		return "UPDATE", authz.AccessWrite, ""
	case *pg_query.DeleteStmt:
		return "DELETE", authz.AccessWrite, ""
	case *pg_query.MergeStmt:
		return "MERGE", authz.AccessWrite, ""

	case *pg_query.VariableSetStmt:
		return a.setStmt(n)
	case *pg_query.VariableShowStmt:
		return "SHOW", authz.AccessRead, ""
	case *pg_query.TransactionStmt:
		return transactionStmt(n)
	case *pg_query.ConstraintsSetStmt:
		return "SET CONSTRAINTS", authz.AccessRead, ""
	case *pg_query.FetchStmt:
		if n.Ismove {
			return "MOVE", authz.AccessRead, ""
		}
		return "FETCH", authz.AccessRead, ""
	case *pg_query.ClosePortalStmt:
		return "CLOSE", authz.AccessRead, ""
	case *pg_query.DeallocateStmt:
		a.dealloc, a.deallocAll = n.Name, n.Isall || n.Name == ""
		return "DEALLOCATE", authz.AccessRead, ""
	case *pg_query.DiscardStmt:
		if n.Target == pg_query.DiscardMode_DISCARD_ALL {
			a.deallocAll = true
			// DISCARD ALL includes RESET ALL and SET SESSION
			// AUTHORIZATION DEFAULT, and those are admin on their own.
			return "DISCARD", authz.AccessAdmin, "DISCARD ALL also resets the role and every setting"
		}
		return "DISCARD", authz.AccessRead, ""
	case *pg_query.ListenStmt:
		return "LISTEN", authz.AccessRead, ""
	case *pg_query.UnlistenStmt:
		return "UNLISTEN", authz.AccessRead, ""
	case *pg_query.NotifyStmt:
		return "NOTIFY", authz.AccessWrite, ""
	case *pg_query.LockStmt:
		a.markNodes(n.Relations)
		return "LOCK", authz.AccessWrite, ""
	}
	if kind, level, why, ok := a.ddl(m); ok {
		return kind, level, why
	}
	if kind, level, why, ok := a.admin(m); ok {
		return kind, level, why
	}
	name := string(m.Descriptor().Name())
	return strings.ToUpper(name), authz.AccessAdmin, "unrecognized statement type " + name
}

func (a *analysis) markNodes(nodes []*pg_query.Node) {
	for _, r := range nodes {
		a.markWritten(r.GetRangeVar())
	}
}

func transactionStmt(n *pg_query.TransactionStmt) (string, authz.Access, string) {
	switch n.Kind {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN:
		return "BEGIN", authz.AccessRead, ""
	case pg_query.TransactionStmtKind_TRANS_STMT_START:
		return "START TRANSACTION", authz.AccessRead, ""
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:
		return "COMMIT", authz.AccessRead, ""
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		return "ROLLBACK", authz.AccessRead, ""
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		return "SAVEPOINT", authz.AccessRead, ""
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		return "RELEASE", authz.AccessRead, ""
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		return "ROLLBACK TO", authz.AccessRead, ""
	case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		// A prepared transaction outlives the session and keeps its locks.
		return "PREPARE TRANSACTION", authz.AccessAdmin, "a prepared transaction outlives the session"
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		return "COMMIT PREPARED", authz.AccessAdmin, "it finishes a transaction of another session"
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		return "ROLLBACK PREPARED", authz.AccessAdmin, "it finishes a transaction of another session"
	}
	return "TRANSACTION", authz.AccessAdmin, "unrecognized transaction statement " + n.Kind.String()
}

// setStmt classifies SET and RESET. Transaction characteristics (SET
// TRANSACTION READ WRITE, ISOLATION LEVEL) are read: they allow nothing by
// themselves, and every statement of the transaction is still checked.
func (a *analysis) setStmt(n *pg_query.VariableSetStmt) (string, authz.Access, string) {
	kind := "SET"
	if n.Kind == pg_query.VariableSetKind_VAR_RESET || n.Kind == pg_query.VariableSetKind_VAR_RESET_ALL {
		kind = "RESET"
	}
	name := strings.ToLower(n.Name)
	switch n.Kind {
	case pg_query.VariableSetKind_VAR_SET_MULTI:
		return kind, authz.AccessRead, ""
	case pg_query.VariableSetKind_VAR_RESET_ALL:
		return kind, authz.AccessAdmin, "RESET ALL also resets the role"
	}
	switch name {
	case "role", "session_authorization":
		return kind, authz.AccessAdmin, kind + " " + strings.ToUpper(strings.ReplaceAll(name, "_", " ")) + " switches the role"
	case "transaction_isolation", "default_transaction_isolation", "transaction_read_only", "default_transaction_read_only",
		"transaction_deferrable", "default_transaction_deferrable":
		// Transaction characteristics, as SET TRANSACTION and SET SESSION
		// CHARACTERISTICS set them.
		return kind, authz.AccessRead, ""
	}
	toDefault := n.Kind != pg_query.VariableSetKind_VAR_SET_VALUE
	if a.harmlessSetting(name, n.Args, toDefault) {
		return kind, authz.AccessRead, ""
	}
	if name == "client_encoding" {
		return kind, authz.AccessAdmin, "client_encoding " + a.setValue(n.Args) + " could make the server read text differently from airlock"
	}
	return kind, authz.AccessAdmin, kind + " " + name + " changes a setting that is not allow-listed"
}

func (a *analysis) setValue(args []*pg_query.Node) string {
	if len(args) == 1 {
		if v, ok := a.stringConst(args[0]); ok {
			return v
		}
	}
	return "(computed)"
}
