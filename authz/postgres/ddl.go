package postgres

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/airlockhq/airlock/authz"
)

// ddl classifies statements that change the schema. Most are ddl; those
// that act on objects outside one database's schema (roles, extensions,
// foreign servers) or on privileges are admin, and ddl says so.
func (a *analysis) ddl(m protoreflect.Message) (kind string, level authz.Access, why string, ok bool) {
	d := func(kind string) (string, authz.Access, string, bool) { return kind, authz.AccessDDL, "", true }
	switch n := m.Interface().(type) {
	case *pg_query.CreateStmt:
		a.markWritten(n.Relation)
		return d("CREATE TABLE")
	case *pg_query.CreateForeignTableStmt:
		if n.BaseStmt != nil {
			a.markWritten(n.BaseStmt.Relation)
		}
		return d("CREATE FOREIGN TABLE")
	case *pg_query.AlterTableStmt:
		a.markWritten(n.Relation)
		kind = "ALTER " + objName(n.Objtype)
		for _, c := range n.Cmds {
			switch c.GetAlterTableCmd().GetSubtype() {
			case pg_query.AlterTableType_AT_DropColumn:
				a.f.Drops = "ALTER " + objName(n.Objtype) + " DROP COLUMN drops a column and its values"
			case pg_query.AlterTableType_AT_ChangeOwner:
				return kind, authz.AccessAdmin, "changing an owner changes privileges", true
			}
		}
		return d(kind)
	case *pg_query.IndexStmt:
		a.markWritten(n.Relation)
		return d("CREATE INDEX")
	case *pg_query.ViewStmt:
		a.markWritten(n.View)
		return d("CREATE VIEW")
	case *pg_query.RefreshMatViewStmt:
		a.markWritten(n.Relation)
		return d("REFRESH MATERIALIZED VIEW")
	case *pg_query.CreateSeqStmt:
		a.markWritten(n.Sequence)
		return d("CREATE SEQUENCE")
	case *pg_query.AlterSeqStmt:
		a.markWritten(n.Sequence)
		return d("ALTER SEQUENCE")
	case *pg_query.TruncateStmt:
		a.markNodes(n.Relations)
		return d("TRUNCATE")
	case *pg_query.DropStmt:
		kind = "DROP " + objName(n.RemoveType)
		if isRelation(n.RemoveType) {
			for _, o := range n.Objects {
				a.rels = append(a.rels, relFromParts(o.GetList().GetItems()))
			}
		}
		if n.RemoveType == pg_query.ObjectType_OBJECT_SCHEMA {
			a.f.Unresolved = "DROP SCHEMA drops every table in the schema"
		}
		if adminObject(n.RemoveType) {
			return kind, authz.AccessAdmin, "", true
		}
		return d(kind)
	case *pg_query.RenameStmt:
		a.markWritten(n.Relation)
		return objectLevel("ALTER "+objName(n.RenameType), n.RenameType)
	case *pg_query.AlterObjectSchemaStmt:
		a.markWritten(n.Relation)
		return objectLevel("ALTER "+objName(n.ObjectType), n.ObjectType)
	case *pg_query.AlterObjectDependsStmt:
		a.markWritten(n.Relation)
		return objectLevel("ALTER "+objName(n.ObjectType), n.ObjectType)
	case *pg_query.CommentStmt:
		if isRelation(n.Objtype) || n.Objtype == pg_query.ObjectType_OBJECT_COLUMN {
			a.f.Unresolved = "COMMENT names its table as an object, not as a table"
		}
		return objectLevel("COMMENT", n.Objtype)
	case *pg_query.CreateSchemaStmt:
		if len(n.SchemaElts) > 0 {
			a.f.Unresolved = "CREATE SCHEMA creates its tables in the new schema"
		}
		return d("CREATE SCHEMA")
	case *pg_query.CreateTrigStmt:
		a.markWritten(n.Relation)
		if n.Isconstraint {
			return d("CREATE CONSTRAINT TRIGGER")
		}
		return d("CREATE TRIGGER")
	case *pg_query.RuleStmt:
		a.markWritten(n.Relation)
		return d("CREATE RULE")
	case *pg_query.CreatePolicyStmt:
		a.markWritten(n.Table)
		return d("CREATE POLICY")
	case *pg_query.AlterPolicyStmt:
		a.markWritten(n.Table)
		return d("ALTER POLICY")
	case *pg_query.CreateFunctionStmt:
		if n.IsProcedure {
			return d("CREATE PROCEDURE")
		}
		return d("CREATE FUNCTION")
	case *pg_query.AlterFunctionStmt:
		return d("ALTER " + objName(n.Objtype))
	case *pg_query.DefineStmt:
		return d("CREATE " + objName(n.Kind))
	case *pg_query.CompositeTypeStmt, *pg_query.CreateEnumStmt, *pg_query.CreateRangeStmt:
		return d("CREATE TYPE")
	case *pg_query.AlterEnumStmt, *pg_query.AlterTypeStmt:
		return d("ALTER TYPE")
	case *pg_query.CreateDomainStmt:
		return d("CREATE DOMAIN")
	case *pg_query.AlterDomainStmt:
		return d("ALTER DOMAIN")
	case *pg_query.CreateOpClassStmt:
		return d("CREATE OPERATOR CLASS")
	case *pg_query.CreateOpFamilyStmt:
		return d("CREATE OPERATOR FAMILY")
	case *pg_query.AlterOpFamilyStmt:
		return d("ALTER OPERATOR FAMILY")
	case *pg_query.AlterOperatorStmt:
		return d("ALTER OPERATOR")
	case *pg_query.CreateStatsStmt:
		return d("CREATE STATISTICS")
	case *pg_query.AlterStatsStmt:
		return d("ALTER STATISTICS")
	case *pg_query.AlterCollationStmt:
		return d("ALTER COLLATION")
	case *pg_query.AlterTSDictionaryStmt:
		return d("ALTER TEXT SEARCH DICTIONARY")
	case *pg_query.AlterTSConfigurationStmt:
		return d("ALTER TEXT SEARCH CONFIGURATION")
	case *pg_query.CreateConversionStmt:
		return d("CREATE CONVERSION")
	case *pg_query.CreateCastStmt:
		return d("CREATE CAST")
	case *pg_query.CreateTransformStmt:
		return d("CREATE TRANSFORM")
	case *pg_query.ImportForeignSchemaStmt:
		a.f.Unresolved = "IMPORT FOREIGN SCHEMA creates tables it does not name"
		return d("IMPORT FOREIGN SCHEMA")
	case *pg_query.VacuumStmt:
		for _, r := range n.Rels {
			a.markWritten(r.GetVacuumRelation().GetRelation())
		}
		if len(n.Rels) == 0 {
			a.f.Unresolved = "without a table list it acts on every table"
		}
		if n.IsVacuumcmd {
			return d("VACUUM")
		}
		return d("ANALYZE")
	case *pg_query.ClusterStmt:
		a.markWritten(n.Relation)
		if n.Relation == nil {
			a.f.Unresolved = "without a table it acts on every clustered table"
		}
		return d("CLUSTER")
	case *pg_query.ReindexStmt:
		a.markWritten(n.Relation)
		if n.Relation == nil {
			a.f.Unresolved = "REINDEX of a schema, database or system acts on every table in it"
		}
		return d("REINDEX")
	}
	return "", 0, "", false
}

// admin classifies statements that act on the server, on roles and
// privileges, or run code airlock cannot inspect.
func (a *analysis) admin(m protoreflect.Message) (kind string, level authz.Access, why string, ok bool) {
	ad := func(kind string) (string, authz.Access, string, bool) { return kind, authz.AccessAdmin, "", true }
	switch n := m.Interface().(type) {
	case *pg_query.GrantStmt:
		if n.Targtype != pg_query.GrantTargetType_ACL_TARGET_OBJECT {
			a.f.Unresolved = "it acts on every table of a schema"
		}
		if n.IsGrant {
			return ad("GRANT")
		}
		return ad("REVOKE")
	case *pg_query.GrantRoleStmt:
		if n.IsGrant {
			return ad("GRANT")
		}
		return ad("REVOKE")
	case *pg_query.AlterDefaultPrivilegesStmt:
		return ad("ALTER DEFAULT PRIVILEGES")
	case *pg_query.CreateRoleStmt:
		switch n.StmtType {
		case pg_query.RoleStmtType_ROLESTMT_USER:
			return ad("CREATE USER")
		case pg_query.RoleStmtType_ROLESTMT_GROUP:
			return ad("CREATE GROUP")
		}
		return ad("CREATE ROLE")
	case *pg_query.AlterRoleStmt, *pg_query.AlterRoleSetStmt:
		return ad("ALTER ROLE")
	case *pg_query.DropRoleStmt:
		return ad("DROP ROLE")
	case *pg_query.CreatedbStmt:
		return ad("CREATE DATABASE")
	case *pg_query.AlterDatabaseStmt, *pg_query.AlterDatabaseSetStmt, *pg_query.AlterDatabaseRefreshCollStmt:
		return ad("ALTER DATABASE")
	case *pg_query.DropdbStmt:
		return ad("DROP DATABASE")
	case *pg_query.CreateExtensionStmt:
		return ad("CREATE EXTENSION")
	case *pg_query.AlterExtensionStmt, *pg_query.AlterExtensionContentsStmt:
		return ad("ALTER EXTENSION")
	case *pg_query.CreateTableSpaceStmt:
		return ad("CREATE TABLESPACE")
	case *pg_query.DropTableSpaceStmt:
		return ad("DROP TABLESPACE")
	case *pg_query.AlterTableSpaceOptionsStmt:
		return ad("ALTER TABLESPACE")
	case *pg_query.AlterTableMoveAllStmt:
		a.f.Unresolved = "it moves every table of a tablespace"
		return ad("ALTER TABLE")
	case *pg_query.CreateSubscriptionStmt:
		return ad("CREATE SUBSCRIPTION")
	case *pg_query.AlterSubscriptionStmt:
		return ad("ALTER SUBSCRIPTION")
	case *pg_query.DropSubscriptionStmt:
		return ad("DROP SUBSCRIPTION")
	case *pg_query.CreatePublicationStmt:
		return ad("CREATE PUBLICATION")
	case *pg_query.AlterPublicationStmt:
		return ad("ALTER PUBLICATION")
	case *pg_query.CreateFdwStmt:
		return ad("CREATE FOREIGN DATA WRAPPER")
	case *pg_query.AlterFdwStmt:
		return ad("ALTER FOREIGN DATA WRAPPER")
	case *pg_query.CreateForeignServerStmt:
		return ad("CREATE SERVER")
	case *pg_query.AlterForeignServerStmt:
		return ad("ALTER SERVER")
	case *pg_query.CreateUserMappingStmt:
		return ad("CREATE USER MAPPING")
	case *pg_query.AlterUserMappingStmt:
		return ad("ALTER USER MAPPING")
	case *pg_query.DropUserMappingStmt:
		return ad("DROP USER MAPPING")
	case *pg_query.CreatePLangStmt:
		return ad("CREATE LANGUAGE")
	case *pg_query.CreateEventTrigStmt:
		return ad("CREATE EVENT TRIGGER")
	case *pg_query.AlterEventTrigStmt:
		return ad("ALTER EVENT TRIGGER")
	case *pg_query.CreateAmStmt:
		return ad("CREATE ACCESS METHOD")
	case *pg_query.SecLabelStmt:
		return ad("SECURITY LABEL")
	case *pg_query.AlterOwnerStmt:
		return "ALTER " + objName(n.ObjectType), authz.AccessAdmin, "changing an owner changes privileges", true
	case *pg_query.DropOwnedStmt:
		a.f.Unresolved = "it drops every object a role owns"
		return ad("DROP OWNED")
	case *pg_query.ReassignOwnedStmt:
		a.f.Unresolved = "it acts on every object a role owns"
		return ad("REASSIGN OWNED")
	case *pg_query.AlterSystemStmt:
		return ad("ALTER SYSTEM")
	case *pg_query.LoadStmt:
		return ad("LOAD")
	case *pg_query.CheckPointStmt:
		return ad("CHECKPOINT")
	case *pg_query.DoStmt:
		a.f.Unresolved = "a DO block may touch any table"
		return "DO", authz.AccessAdmin, "a DO block runs code airlock cannot inspect", true
	case *pg_query.CallStmt:
		a.f.Unresolved = "a procedure may touch any table"
		return "CALL", authz.AccessAdmin, "CALL runs a procedure airlock cannot inspect", true
	}
	return "", 0, "", false
}

// objectLevel is ddl, or admin for objects outside the schema.
func objectLevel(kind string, t pg_query.ObjectType) (string, authz.Access, string, bool) {
	if adminObject(t) {
		return kind, authz.AccessAdmin, "", true
	}
	return kind, authz.AccessDDL, "", true
}

func adminObject(t pg_query.ObjectType) bool {
	switch t {
	case pg_query.ObjectType_OBJECT_ROLE, pg_query.ObjectType_OBJECT_DATABASE,
		pg_query.ObjectType_OBJECT_TABLESPACE, pg_query.ObjectType_OBJECT_SUBSCRIPTION,
		pg_query.ObjectType_OBJECT_PUBLICATION, pg_query.ObjectType_OBJECT_PUBLICATION_NAMESPACE,
		pg_query.ObjectType_OBJECT_PUBLICATION_REL, pg_query.ObjectType_OBJECT_EXTENSION,
		pg_query.ObjectType_OBJECT_FDW, pg_query.ObjectType_OBJECT_FOREIGN_SERVER,
		pg_query.ObjectType_OBJECT_USER_MAPPING, pg_query.ObjectType_OBJECT_EVENT_TRIGGER,
		pg_query.ObjectType_OBJECT_LANGUAGE, pg_query.ObjectType_OBJECT_ACCESS_METHOD,
		pg_query.ObjectType_OBJECT_PARAMETER_ACL, pg_query.ObjectType_OBJECT_LARGEOBJECT:
		return true
	}
	return false
}

func isRelation(t pg_query.ObjectType) bool {
	switch t {
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_VIEW,
		pg_query.ObjectType_OBJECT_MATVIEW, pg_query.ObjectType_OBJECT_SEQUENCE,
		pg_query.ObjectType_OBJECT_INDEX, pg_query.ObjectType_OBJECT_FOREIGN_TABLE:
		return true
	}
	return false
}

var objNames = map[pg_query.ObjectType]string{
	pg_query.ObjectType_OBJECT_MATVIEW:               "MATERIALIZED VIEW",
	pg_query.ObjectType_OBJECT_FDW:                   "FOREIGN DATA WRAPPER",
	pg_query.ObjectType_OBJECT_FOREIGN_SERVER:        "SERVER",
	pg_query.ObjectType_OBJECT_STATISTIC_EXT:         "STATISTICS",
	pg_query.ObjectType_OBJECT_TSCONFIGURATION:       "TEXT SEARCH CONFIGURATION",
	pg_query.ObjectType_OBJECT_TSDICTIONARY:          "TEXT SEARCH DICTIONARY",
	pg_query.ObjectType_OBJECT_TSPARSER:              "TEXT SEARCH PARSER",
	pg_query.ObjectType_OBJECT_TSTEMPLATE:            "TEXT SEARCH TEMPLATE",
	pg_query.ObjectType_OBJECT_OPCLASS:               "OPERATOR CLASS",
	pg_query.ObjectType_OBJECT_OPFAMILY:              "OPERATOR FAMILY",
	pg_query.ObjectType_OBJECT_TABCONSTRAINT:         "TABLE",
	pg_query.ObjectType_OBJECT_DOMCONSTRAINT:         "DOMAIN",
	pg_query.ObjectType_OBJECT_LARGEOBJECT:           "LARGE OBJECT",
	pg_query.ObjectType_OBJECT_ACCESS_METHOD:         "ACCESS METHOD",
	pg_query.ObjectType_OBJECT_TYPE_UNDEFINED:        "OBJECT",
	pg_query.ObjectType_OBJECT_PARAMETER_ACL:         "PARAMETER",
	pg_query.ObjectType_OBJECT_PUBLICATION_REL:       "PUBLICATION",
	pg_query.ObjectType_OBJECT_ATTRIBUTE:             "TYPE",
	pg_query.ObjectType_OBJECT_COLUMN:                "TABLE",
	pg_query.ObjectType_OBJECT_PUBLICATION_NAMESPACE: "PUBLICATION",
}

// objName spells an object type the way SQL does: OBJECT_FOREIGN_TABLE is
// FOREIGN TABLE.
func objName(t pg_query.ObjectType) string {
	if s, ok := objNames[t]; ok {
		return s
	}
	return strings.ReplaceAll(strings.TrimPrefix(t.String(), "OBJECT_"), "_", " ")
}

// relFromParts reads a dotted name of a relation (DROP TABLE s.t) as
// written to.
func relFromParts(parts []*pg_query.Node) pgRel {
	names := make([]string, 0, len(parts))
	for _, p := range parts {
		names = append(names, identName(p))
	}
	r := pgRel{written: true}
	switch len(names) {
	case 0:
	case 1:
		r.name = names[0]
	case 2:
		r.schema, r.name = names[0], names[1]
	default:
		r.catalog, r.schema, r.name = strings.Join(names[:len(names)-2], "."), names[len(names)-2], names[len(names)-1]
	}
	return r
}
