package mysql

import (
	"reflect"

	"github.com/pingcap/tidb/pkg/parser/ast"

	"github.com/airlockhq/airlock/authz"
)

func (a *myAnalysis) myDDL(stmt ast.StmtNode) (kind string, level authz.Access, why string, ok bool) {
	d := func(k string) (string, authz.Access, string, bool) {
		a.walk(reflect.ValueOf(stmt))
		return k, authz.AccessDDL, "", true
	}
	switch n := stmt.(type) {
	case *ast.CreateTableStmt:
		a.markTable(n.Table)
		if n.Select != nil {
			return d("CREATE TABLE AS")
		}
		return d("CREATE TABLE")
	case *ast.CreateViewStmt:
		a.markTable(n.ViewName)
		return d("CREATE VIEW")
	case *ast.CreateIndexStmt:
		a.markTable(n.Table)
		return d("CREATE INDEX")
	case *ast.DropIndexStmt:
		a.markTable(n.Table)
		a.f.Drops = "DROP INDEX drops an index"
		return d("DROP INDEX")
	case *ast.DropTableStmt:
		for _, t := range n.Tables {
			a.markTable(t)
		}
		if n.IsView {
			a.f.Drops = "DROP VIEW drops a view"
			return d("DROP VIEW")
		}
		a.f.Drops = "DROP TABLE drops a table and its rows"
		return d("DROP TABLE")
	case *ast.TruncateTableStmt:
		a.markTable(n.Table)
		a.f.Drops = "TRUNCATE removes every row"
		return d("TRUNCATE")
	case *ast.AlterTableStmt:
		a.markTable(n.Table)
		for _, s := range n.Specs {
			a.markTable(s.NewTable)
			switch s.Tp {
			case ast.AlterTableDropColumn:
				a.f.Drops = "ALTER TABLE DROP COLUMN drops a column and its values"
			case ast.AlterTableDropPartition, ast.AlterTableDropFirstPartition:
				a.f.Drops = "ALTER TABLE DROP PARTITION drops rows"
			case ast.AlterTableTruncatePartition:
				a.f.Drops = "ALTER TABLE TRUNCATE PARTITION removes rows"
			case ast.AlterTableExchangePartition, ast.AlterTableDiscardTablespace,
				ast.AlterTableDiscardPartitionTablespace, ast.AlterTableImportTablespace,
				ast.AlterTableImportPartitionTablespace:
				a.f.Drops = "it replaces a table's data"
			}
		}
		return d("ALTER TABLE")
	case *ast.RenameTableStmt:
		for _, t := range n.TableToTables {
			a.markTable(t.OldTable)
			a.markTable(t.NewTable)
		}
		return d("RENAME TABLE")
	case *ast.AnalyzeTableStmt:
		for _, t := range n.TableNames {
			a.markTable(t)
		}
		return d("ANALYZE TABLE")
	case *ast.OptimizeTableStmt:
		for _, t := range n.Tables {
			a.markTable(t)
		}
		return d("OPTIMIZE TABLE")
	case *ast.CreateSequenceStmt:
		a.markTable(n.Name)
		return d("CREATE SEQUENCE")
	case *ast.AlterSequenceStmt:
		a.markTable(n.Name)
		return d("ALTER SEQUENCE")
	case *ast.DropSequenceStmt:
		for _, t := range n.Sequences {
			a.markTable(t)
		}
		a.f.Drops = "DROP SEQUENCE drops a sequence"
		return d("DROP SEQUENCE")
	case *ast.ProcedureInfo, *ast.DropProcedureStmt:
		// airlock reads routines itself (mycompound.go); one that
		// reaches the TiDB parser's reading is not trusted.
		a.refuse("unparseable", "a routine statement airlock did not read")
		return "PROCEDURE", authz.AccessDDL, "", true
	}
	return "", 0, "", false
}

func myAdmin(stmt ast.StmtNode) (kind string, level authz.Access, why string, ok bool) {
	ad := func(k string) (string, authz.Access, string, bool) { return k, authz.AccessAdmin, "", true }
	switch n := stmt.(type) {
	case *ast.CreateDatabaseStmt:
		return ad("CREATE DATABASE")
	case *ast.AlterDatabaseStmt:
		return ad("ALTER DATABASE")
	case *ast.DropDatabaseStmt:
		return ad("DROP DATABASE")
	case *ast.CreateUserStmt:
		if n.IsCreateRole {
			return ad("CREATE ROLE")
		}
		return ad("CREATE USER")
	case *ast.AlterUserStmt:
		return ad("ALTER USER")
	case *ast.DropUserStmt:
		if n.IsDropRole {
			return ad("DROP ROLE")
		}
		return ad("DROP USER")
	case *ast.RenameUserStmt:
		return ad("RENAME USER")
	case *ast.GrantStmt, *ast.GrantRoleStmt, *ast.GrantProxyStmt:
		return ad("GRANT")
	case *ast.RevokeStmt, *ast.RevokeRoleStmt:
		return ad("REVOKE")
	case *ast.KillStmt:
		return "KILL", authz.AccessAdmin, "KILL ends another connection's statement or session", true
	case *ast.FlushStmt:
		return ad("FLUSH")
	case *ast.ShutdownStmt:
		return ad("SHUTDOWN")
	case *ast.RestartStmt:
		return ad("RESTART")
	case *ast.BinlogStmt:
		return "BINLOG", authz.AccessAdmin, "BINLOG replays replication events airlock cannot read", true
	case *ast.AlterInstanceStmt:
		return ad("ALTER INSTANCE")
	}
	return "", 0, "", false
}
