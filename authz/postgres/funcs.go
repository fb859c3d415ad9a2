package postgres

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/airlockhq/airlock/authz"
)

// What a function call needs. The lists are consulted in this order: admin,
// write, then read; a function on none of them needs write, because a
// function airlock does not know (user-defined, from an extension, from a
// newer Postgres) may do anything a write grant may do.
//
// Names are matched exactly as Postgres folded them: an unquoted COUNT is
// count, but a quoted "COUNT" is a different, user-defined function.

// adminFuncs reach outside the database's data: the server's files and
// processes, replication, other servers, or the session's identity.
var adminFuncs = setOf(
	// Other sessions and the server process.
	"pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
	"pg_rotate_logfile_old", "pg_promote", "pg_switch_wal", "pg_backup_start", "pg_backup_stop",
	"pg_start_backup", "pg_stop_backup", "pg_wal_replay_pause", "pg_wal_replay_resume",
	"pg_log_backend_memory_contexts", "pg_import_system_collations", "pg_nextoid",
	"pg_stop_making_pinned_objects", "pg_extension_config_dump",
	// The server's file system.
	"pg_read_file", "pg_read_file_old", "pg_read_binary_file", "pg_stat_file",
	"lo_import", "lo_export", "pg_hba_file_rules", "pg_ident_file_mappings",
	"pg_show_all_file_settings", "pg_logdir_ls",
	// Replication slots and origins.
	"pg_drop_replication_slot", "pg_replication_slot_advance", "pg_copy_logical_replication_slot",
	"pg_copy_physical_replication_slot", "pg_logical_slot_get_changes",
	"pg_logical_slot_get_binary_changes", "pg_logical_slot_peek_changes",
	"pg_logical_slot_peek_binary_changes", "pg_sync_replication_slots",
	// Extensions that ship with Postgres.
	"pg_stat_statements_reset",
)

// adminPrefixes are families of admin functions; see adminFuncs.
var adminPrefixes = []string{
	"pg_stat_reset", "dblink", "pg_create_", "pg_ls_", "pg_file_", "pg_replication_origin_",
	"binary_upgrade_",
}

// sqlTextFuncs run SQL (or read whole tables and schemas) named in a string
// argument, which airlock cannot see into: the tables they touch would
// escape both the access level and any table narrowing of the grant.
var sqlTextFuncs = setOf(
	"query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema",
	"table_to_xml", "table_to_xml_and_xmlschema", "table_to_xmlschema",
	"schema_to_xml", "schema_to_xml_and_xmlschema", "schema_to_xmlschema",
	"database_to_xml", "database_to_xml_and_xmlschema", "database_to_xmlschema",
	"ts_stat",
)

// writeFuncs change state that outlives the statement, or hold on to
// resources other sessions wait for. Several are stable in the catalog
// (txid_current assigns a transaction id), so this list must win over it.
var writeFuncs = map[string]string{
	"nextval":                   "writes",
	"setval":                    "writes",
	"pg_notify":                 "notifies other sessions",
	"pg_sleep":                  "ties up a connection",
	"pg_sleep_for":              "ties up a connection",
	"pg_sleep_until":            "ties up a connection",
	"txid_current":              "assigns a transaction id",
	"pg_current_xact_id":        "assigns a transaction id",
	"pg_logical_emit_message":   "writes to the WAL",
	"loread":                    "uses large objects",
	"lowrite":                   "writes large objects",
	"brin_summarize_new_values": "writes an index",
	"brin_summarize_range":      "writes an index",
	"brin_desummarize_range":    "writes an index",
	"gin_clean_pending_list":    "writes an index",
}

// writePrefixes are families of write functions; see writeFuncs.
var writePrefixes = []struct{ prefix, what string }{
	{"pg_advisory_", "takes advisory locks"},
	{"pg_try_advisory_", "takes advisory locks"},
	{"lo_", "uses large objects"},
}

// readFuncs are read-only functions the generated catalog list misses:
// volatile ones whose only effect is their result, and additions of Postgres
// releases newer than the one the catalog list was read from.
var readFuncs = setOf(
	"clock_timestamp", "timeofday", "random", "random_normal", "setseed", "gen_random_uuid",
	"currval", "lastval", "current_query", "pg_is_in_recovery", "pg_jit_available",
	"pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size",
	"pg_database_size", "pg_tablespace_size", "pg_sequence_last_value",
	"pg_blocking_pids", "pg_safe_snapshot_blocking_pids", "pg_lock_status",
	"pg_partition_tree", "pg_partition_ancestors", "pg_prepared_xact",
	"pg_xact_status", "txid_status", "pg_xact_commit_timestamp",
	"pg_xact_commit_timestamp_origin", "pg_last_committed_xact",
	"pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
	"pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn", "pg_last_xact_replay_timestamp",
	"pg_is_wal_replay_paused", "pg_get_wal_replay_pause_state", "pg_notification_queue_usage",
	"pg_stat_have_stats", "pg_stat_clear_snapshot", "pg_stat_force_next_flush",
	"pg_control_checkpoint", "pg_control_init", "pg_control_recovery", "pg_control_system",
	"pg_collation_actual_version", "pg_database_collation_actual_version", "pg_current_logfile",
	"pg_isolation_test_session_is_blocked", "pg_show_replication_origin_status",
	"cursor_to_xml", "cursor_to_xmlschema",
	// Postgres 16 and 17.
	"any_value", "array_sample", "array_shuffle", "pg_input_is_valid", "pg_input_error_info",
	"date_add", "date_subtract", "uuid_extract_timestamp", "uuid_extract_version", "to_bin",
	"to_oct", "crc32", "crc32c", "erf", "erfc", "pg_split_walfile_name", "pg_basetype",
	"pg_column_toast_chunk_id", "pg_available_wal_summaries", "pg_wal_summary_contents",
	"pg_get_wal_summarizer_state", "unistr", "trim_array", "system_user",
)

// readPrefixes are getter families: catalog deparsers, privilege checks,
// statistics counters. The admin and write lists are consulted first, so
// pg_stat_reset is not caught here.
var readPrefixes = []string{"pg_get_", "pg_stat_get_", "has_"}

// infoSchemaFuncs are the helper functions of information_schema that
// drivers (JDBC's metadata calls) use by their qualified name.
var infoSchemaFuncs = setOf(
	"_pg_expandarray", "_pg_index_position", "_pg_truetypid", "_pg_truetypmod",
	"_pg_char_max_length", "_pg_char_octet_length", "_pg_numeric_precision",
	"_pg_numeric_precision_radix", "_pg_numeric_scale", "_pg_datetime_precision",
	"_pg_interval_type",
)

// catalogReadOnly is pgCatalogNonVolatile as a set.
var catalogReadOnly = setOf(strings.Fields(pgCatalogNonVolatile)...)

// funcEffect is what one function call needs.
type funcEffect struct {
	level authz.Access
	// why is set when level is above read.
	why string
	// plannerMayRun is set when the planner may call the function while
	// merely planning (EXPLAIN without ANALYZE): it folds immutable calls
	// and evaluates stable ones for its estimates. So a function the catalog
	// marks stable or immutable, or one airlock does not know (which could
	// be declared either), counts under plain EXPLAIN too.
	plannerMayRun bool
	// opaque is set when airlock cannot see what the function touches; see
	// funcUse.
	opaque bool
	// serverFiles is set for functions that reach the server's files.
	serverFiles bool
}

// serverFileFuncs and serverFilePrefixes reach the database server's file
// system; like COPY to or from a file they need --allow-server-files.
var serverFileFuncs = setOf(
	"pg_read_file", "pg_read_file_old", "pg_read_binary_file", "pg_stat_file", "lo_import",
	"lo_export", "pg_logdir_ls", "pg_hba_file_rules", "pg_ident_file_mappings",
	"pg_show_all_file_settings",
)

var serverFilePrefixes = []string{"pg_ls_", "pg_file_"}

// funcCallEffect classifies a call. name is the function's name with any
// pg_catalog qualification removed; schema is the other qualification, if
// any.
func (a *analysis) funcCallEffect(schema, name string, args []*pg_query.Node) funcEffect {
	display := name
	if schema != "" {
		display = schema + "." + name
	}
	unknown := funcEffect{level: authz.AccessWrite, why: "calls " + display + ", which is not known to be read-only", plannerMayRun: true, opaque: true}
	switch schema {
	case "":
	case "information_schema":
		if _, ok := infoSchemaFuncs[name]; ok {
			return funcEffect{level: authz.AccessRead}
		}
		return unknown
	default:
		return unknown
	}
	e := a.builtinEffect(name, args)
	if _, ok := catalogReadOnly[name]; ok {
		e.plannerMayRun = true
	}
	return e
}

// builtinEffect classifies a call of a function that is unqualified or
// qualified with pg_catalog.
func (a *analysis) builtinEffect(name string, args []*pg_query.Node) funcEffect {
	unknown := funcEffect{level: authz.AccessWrite, why: "calls " + name + ", which is not known to be read-only", plannerMayRun: true, opaque: true}
	admin := funcEffect{level: authz.AccessAdmin, why: "calls " + name + ", which needs admin access"}
	sqlText := funcEffect{level: authz.AccessAdmin, why: "calls " + name + ", which runs SQL given as text", opaque: true}
	if name == "set_config" {
		return a.setConfigEffect(args)
	}
	if name == "ts_rewrite" && len(args) == 2 {
		// The two-argument form runs its second argument as a query.
		return sqlText
	}
	if _, ok := serverFileFuncs[name]; ok {
		return funcEffect{level: authz.AccessAdmin, why: "calls " + name + ", which reaches the database server's files", serverFiles: true}
	}
	for _, p := range serverFilePrefixes {
		if strings.HasPrefix(name, p) {
			return funcEffect{level: authz.AccessAdmin, why: "calls " + name + ", which reaches the database server's files", serverFiles: true}
		}
	}
	if _, ok := adminFuncs[name]; ok {
		return admin
	}
	if _, ok := sqlTextFuncs[name]; ok {
		return sqlText
	}
	if strings.HasPrefix(name, "dblink") {
		// Another server, reached with SQL in a string.
		admin.opaque = true
		return admin
	}
	for _, p := range adminPrefixes {
		if strings.HasPrefix(name, p) {
			return admin
		}
	}
	if what, ok := writeFuncs[name]; ok {
		return funcEffect{level: authz.AccessWrite, why: "calls " + name + ", which " + what}
	}
	for _, p := range writePrefixes {
		if strings.HasPrefix(name, p.prefix) {
			return funcEffect{level: authz.AccessWrite, why: "calls " + name + ", which " + p.what}
		}
	}
	if _, ok := catalogReadOnly[name]; ok {
		return funcEffect{level: authz.AccessRead}
	}
	if _, ok := readFuncs[name]; ok {
		return funcEffect{level: authz.AccessRead}
	}
	for _, p := range readPrefixes {
		if strings.HasPrefix(name, p) {
			return funcEffect{level: authz.AccessRead}
		}
	}
	return unknown
}

// setConfigEffect gives set_config the level SET of the same setting has,
// but never less than write: set_config is how a query changes a setting
// without a SET statement. A setting name that is not a literal could be
// anything, role included.
func (a *analysis) setConfigEffect(args []*pg_query.Node) funcEffect {
	var nameArg *pg_query.Node
	if len(args) > 0 && args[0].GetNamedArgExpr() == nil {
		nameArg = args[0]
	}
	for _, a := range args {
		if na := a.GetNamedArgExpr(); na != nil && na.Name == "setting_name" {
			nameArg = na.Arg
		}
	}
	var valueArg *pg_query.Node
	if len(args) > 1 && args[1].GetNamedArgExpr() == nil {
		valueArg = args[1]
	}
	for _, a := range args {
		if na := a.GetNamedArgExpr(); na != nil && na.Name == "new_value" {
			valueArg = na.Arg
		}
	}
	setting, ok := a.stringConst(nameArg)
	if !ok {
		return funcEffect{level: authz.AccessAdmin, why: "calls set_config with a setting name that is not a literal"}
	}
	setting = strings.ToLower(setting)
	switch {
	case setting == "role" || setting == "session_authorization":
		return funcEffect{level: authz.AccessAdmin, why: "calls set_config('" + setting + "'), which switches the role"}
	case a.harmlessSetting(setting, []*pg_query.Node{valueArg}, false):
		return funcEffect{level: authz.AccessWrite, why: "calls set_config, which changes a setting"}
	default:
		return funcEffect{level: authz.AccessAdmin, why: "calls set_config('" + setting + "'), which is not an allow-listed setting"}
	}
}

// harmlessSettings change only how this session formats, times out or
// labels its work. search_path is missing on purpose: it decides which
// function an unqualified name calls, so it could turn count() into a
// user-defined function. So are standard_conforming_strings and
// backslash_quote, which would make the server read string literals
// differently from airlock's parser, and custom settings (myapp.tenant),
// which row-level security policies often read.
var harmlessSettings = setOf(
	"application_name", "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
	"idle_session_timeout", "client_encoding", "datestyle", "intervalstyle", "timezone",
	"extra_float_digits", "client_min_messages",
)

// harmlessSetting reports whether setting name to the values args (or back
// to its default, when toDefault) leaves the session as safe as it was.
func (a *analysis) harmlessSetting(name string, args []*pg_query.Node, toDefault bool) bool {
	name = strings.ToLower(name)
	if _, ok := harmlessSettings[name]; !ok {
		return false
	}
	if name != "client_encoding" || toDefault {
		return true
	}
	if len(args) != 1 {
		return false
	}
	v, ok := a.stringConst(args[0])
	return ok && asciiSafeEncoding(v)
}

// asciiSafeEncoding reports whether, in the client encoding enc, every byte
// below 0x80 is the ASCII character. Not so in SJIS, BIG5, GBK, GB18030, UHC
// and JOHAB, where the second byte of a character may be a backslash: the
// server would then read E'...' literals differently from airlock's parser,
// which assumes UTF-8. Postgres refuses those as server encodings for the
// same reason.
func asciiSafeEncoding(enc string) bool {
	e := strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(enc))
	switch e {
	case "utf8", "unicode", "sqlascii", "euccn", "eucjp", "eucjis2004", "euckr", "euctw",
		"koi8r", "koi8u", "koi8", "win866", "win874", "alt", "tcvn", "tcvn5712", "abc", "vscii":
		return true
	}
	for _, p := range []string{"latin", "win125", "windows125", "cp125", "iso8859"} {
		if strings.HasPrefix(e, p) {
			return true
		}
	}
	return false
}

// builtinOperators are the operator names pg_catalog defines (Postgres 15).
// An operator is a function call in disguise; one outside this list is
// user-defined and treated like an unknown function.
var builtinOperators = setOf(
	"!!", "!~", "!~*", "!~~", "!~~*", "##", "#", "#-", "#>", "#>>", "%", "&&", "&", "&<", "&<|",
	"&>", "*", "*<", "*<=", "*<>", "*=", "*>", "*>=", "+", "-", "->", "->>", "-|-", "/", "<", "<->",
	"<<", "<<=", "<<|", "<=", "<>", "<@", "<^", "=", ">", ">=", ">>", ">>=", ">^", "?#", "?&", "?",
	"?-", "?-|", "?|", "?||", "@", "@-@", "@>", "@?", "@@", "@@@", "^", "^@", "|&>", "|", "|/",
	"|>>", "||", "||/", "~", "~*", "~<=~", "~<~", "~=", "~>=~", "~>~", "~~", "~~*",
	// The parser spells != as <>, but keep it should that ever change.
	"!=",
)

func has(set map[string]struct{}, name string) bool {
	_, ok := set[name]
	return ok
}

func setOf(names ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}
