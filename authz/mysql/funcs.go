package mysql

import (
	"slices"
	"strings"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/elide"
)

// MySQL and MariaDB functions by what a call needs. As for Postgres, a
// function on none of the lists needs write: it may be a stored function
// or a loadable (UDF) one, which can do anything. A stored function with a
// built-in's name can only be called qualified (db.now()), and qualified
// calls are never taken for built-ins, so the read list cannot be shadowed.
//
// Names are lower case; MySQL function names are case-insensitive.

// myServerFileFuncs read the database server's files.
var myServerFileFuncs = setOf("load_file")

// myWriteFuncs change state outside the statement, take locks other
// sessions wait for, or tie up the connection or the server.
var myWriteFuncs = map[string]string{
	"get_lock":                          "takes a named lock other sessions wait for",
	"release_lock":                      "releases a named lock",
	"release_all_locks":                 "releases named locks",
	"sleep":                             "ties up a connection",
	"benchmark":                         "burns server CPU",
	"nextval":                           "advances a sequence",
	"setval":                            "sets a sequence",
	"master_pos_wait":                   "ties up a connection",
	"source_pos_wait":                   "ties up a connection",
	"master_gtid_wait":                  "ties up a connection",
	"wait_for_executed_gtid_set":        "ties up a connection",
	"wait_until_sql_thread_after_gtids": "ties up a connection",
}

// myReadFuncs are built-in functions without effects outside the
// statement (MySQL 8 and MariaDB 10/11), including the names the TiDB
// parser gives operators and special forms (POSITION(a IN b) is locate,
// NEXT VALUE FOR is nextval).
var myReadFuncs = setOf(strings.Fields(`
abs acos adddate addtime aes_decrypt aes_encrypt any_value ascii asin atan atan2 avg
bin bin_to_uuid binlog_gtid_pos bit_and bit_count bit_length bit_or bit_xor
cast ceil ceiling char char_func char_length character_length charset chr coalesce coercibility
collation column_add column_check column_create column_delete column_exists column_get column_json
column_list compress concat concat_ws connection_id conv convert convert_tz cos cot count crc32
crc32c cume_dist curdate current_date current_role current_time current_timestamp current_user
curtime database date date_add date_format date_sub datediff day dayname dayofmonth dayofweek
dayofyear decode default_func degrees dense_rank des_decrypt des_encrypt elt encode encrypt exp
export_set extract extractvalue field find_in_set first_value floor format format_bytes
format_pico_time found_rows from_base64 from_days from_unixtime geometrycollection get_format
getvar greatest group_concat grouping gtid_subset gtid_subtract hex hour icu_version if ifnull
inet6_aton inet6_ntoa inet_aton inet_ntoa insert insert_func instr interval is_free_lock is_ipv4
is_ipv4_compat is_ipv4_mapped is_ipv6 is_used_lock is_uuid isnull json_array json_array_append
json_array_insert json_arrayagg json_compact json_contains json_contains_path json_depth
json_detailed json_equals json_exists json_extract json_insert json_keys json_length json_loose
json_merge json_merge_patch json_merge_preserve json_normalize json_object json_objectagg
json_overlaps json_pretty json_query json_quote json_remove json_replace json_schema_valid
json_schema_validation_report json_search json_set json_storage_free json_storage_size json_type
json_unquote json_valid json_value json_memberof kdf lag last_day last_insert_id last_value lastval
lcase lead least left length linestring ln localtime localtimestamp locate log log10 log2 lower
lpad ltrim make_set makedate maketime max md5 microsecond mid min minute mod month monthname
multilinestring multipoint multipolygon name_const natural_sort_key now nth_value ntile nullif
oct octet_length ord percent_rank percentile_cont percentile_disc period_add period_diff pi point
polygon position pow power ps_current_thread_id ps_thread_id quarter quote radians rand
random_bytes rank regexp regexp_instr regexp_like regexp_replace regexp_substr
repeat replace reverse right roles_graphml round row_count row_number rpad rtrim schema
sec_to_time second session_user sformat sha sha1 sha2 sign sin soundex space sqrt statement_digest
statement_digest_text std stddev stddev_pop stddev_samp str_to_date strcmp subdate substr
substring substring_index subtime sum sys_guid sysdate system_user tan time time_format
time_to_sec timediff timestamp timestampadd timestampdiff to_base64 to_char to_days to_seconds
trim truncate ucase uncompress uncompressed_length unhex unix_timestamp updatexml upper user
utc_date utc_time utc_timestamp uuid uuid_short uuid_to_bin validate_password_strength values
var_pop var_samp variance version week weekday weekofyear weight_string year yearweek
st_area st_asbinary st_asgeojson st_astext st_aswkb st_aswkt st_buffer st_centroid st_contains
st_convexhull st_crosses st_difference st_dimension st_disjoint st_distance st_distance_sphere
st_endpoint st_envelope st_equals st_exteriorring st_geomfromgeojson st_geomfromtext
st_geomfromwkb st_geometryn st_geometrytype st_interiorringn st_intersection st_intersects
st_isclosed st_isempty st_isvalid st_latitude st_length st_longitude st_numgeometries
st_numinteriorrings st_numpoints st_overlaps st_pointn st_srid st_startpoint st_symdifference
st_touches st_union st_within st_x st_y
`)...)

// myEffect is what one MySQL function call needs.
type myEffect struct {
	use         authz.FuncUse
	why         string
	serverFiles string
}

// myFuncEffect classifies a call of name (lower case), qualified with db
// when db is not empty.
func myFuncEffect(db, name string) myEffect {
	display := name
	if db != "" {
		display = db + "." + name
	}
	e := myEffect{use: authz.FuncUse{Schema: db, Name: name}}
	switch {
	case db != "":
		e.use.Level, e.use.Opaque, e.use.Lowerable = authz.AccessWrite, true, true
		e.why = "calls " + display + ", a stored function that is not known to be read-only"
	case has(myServerFileFuncs, name):
		e.use.Level = authz.AccessAdmin
		e.serverFiles = "calls " + name + ", which reads the database server's files"
		e.why = e.serverFiles
	case myWriteFuncs[name] != "":
		e.use.Level, e.use.Lowerable = authz.AccessWrite, true
		e.why = "calls " + name + ", which " + myWriteFuncs[name]
	case has(myReadFuncs, name):
		e.use.Level = authz.AccessRead
	default:
		e.use.Level, e.use.Opaque, e.use.Lowerable = authz.AccessWrite, true, true
		e.why = "calls " + name + ", which is not known to be read-only"
	}
	return e
}

func setOf(names ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}

// sortedSet sorts and deduplicates in place.
func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	slices.Sort(s)
	return slices.Compact(s)
}

func has(set map[string]struct{}, name string) bool {
	_, ok := set[name]
	return ok
}

// mySessionVars are session variables that change only how this session
// formats, times out, labels or limits its own work; setting them is
// read. Missing on purpose: sql_log_bin (hides writes from replication),
// foreign_key_checks and unique_checks (let writes break constraints),
// session_track_* (the gateway may rely on them), pseudo_thread_id,
// gtid_next, insert_id and timestamp (they forge what writes record),
// and character_set_client, collation_connection and sql_mode, which get
// the checks in mySessionVarWhy.
var mySessionVars = setOf(
	"autocommit", "tx_isolation_one_shot", "time_zone", "wait_timeout", "interactive_timeout", "net_read_timeout",
	"net_write_timeout", "max_execution_time", "max_statement_time", "lock_wait_timeout",
	"innodb_lock_wait_timeout", "transaction_isolation", "tx_isolation", "transaction_read_only",
	"tx_read_only", "sql_select_limit", "group_concat_max_len", "sql_safe_updates", "sql_notes",
	"sql_warnings", "sql_quote_show_create", "sql_big_selects", "max_join_size", "div_precision_increment",
	"lc_time_names", "lc_messages", "profiling", "profiling_history_size", "cte_max_recursion_depth",
	"max_sort_length", "sort_buffer_size", "join_buffer_size", "tmp_table_size", "max_heap_table_size",
	"optimizer_switch", "optimizer_search_depth", "optimizer_prune_level", "eq_range_index_dive_limit",
	"end_markers_in_json", "explain_format", "default_week_format", "character_set_results",
	"collation_database", "sql_auto_is_null", "big_tables", "sql_buffer_result", "max_error_count",
	"net_buffer_length", "transaction_prealloc_size", "resultset_metadata", "long_query_time",
	"default_storage_engine", "default_tmp_storage_engine", "windowing_use_high_precision",
)

// mySafeSQLModes are the sql_mode flags a session may set. The others
// change how the server reads statement text (ANSI_QUOTES,
// NO_BACKSLASH_ESCAPES, IGNORE_SPACE, PIPES_AS_CONCAT, and the
// combinations ANSI, ORACLE, MSSQL, DB2, POSTGRESQL, MAXDB that include
// them), which airlock would then read differently.
var mySafeSQLModes = setOf(
	"", "allow_invalid_dates", "error_for_division_by_zero", "high_not_precedence",
	"no_auto_create_user", "no_auto_value_on_zero", "no_dir_in_create", "no_engine_substitution",
	"no_field_options", "no_key_options", "no_table_options", "no_unsigned_subtraction",
	"no_zero_date", "no_zero_in_date", "only_full_group_by", "pad_char_to_full_length",
	"real_as_float", "strict_all_tables", "strict_trans_tables", "time_truncate_fractional",
	"traditional", "simultaneous_assignment", "time_round_fractional", "empty_string_is_null",
	"no_zero_date", "mysql323", "mysql40",
)

// mySessionVarWhy says why setting a session variable to value needs
// admin, or "" when it is harmless.
func mySessionVarWhy(name string, value any) string {
	v, _ := value.(interface{ GetValue() any })
	literal := func() (string, bool) {
		if v == nil {
			return "", false
		}
		s, ok := v.GetValue().(string)
		if !ok {
			return "", false
		}
		return elide.LiteralValue(s)
	}
	switch name {
	case "sql_mode":
		s, ok := literal()
		if !ok {
			return "SET sql_mode needs a literal list of modes"
		}
		for _, m := range strings.Split(s, ",") {
			if !has(mySafeSQLModes, strings.ToLower(strings.TrimSpace(m))) {
				return "sql_mode " + strings.ToUpper(strings.TrimSpace(m)) + " changes how the server reads statements"
			}
		}
		return ""
	case "character_set_client", "character_set_connection", "collation_connection":
		s, ok := literal()
		if ok {
			if cs, _, _ := strings.Cut(s, "_"); name != "collation_connection" && SafeCharset(s) || name == "collation_connection" && SafeCharset(cs) {
				return ""
			}
		}
		return name + " " + s + " could make the server read text differently from airlock"
	}
	if has(mySessionVars, name) {
		return ""
	}
	return "SET " + name + " changes a setting that is not allow-listed"
}

// SafeCharset reports whether a MySQL client character set keeps the
// authorizer's reading of statement text the same as the server's: every
// byte below 0x80 is the ASCII character, and no multi-byte character
// holds a byte that could be a quote or a backslash. Not so in big5,
// cp932, gbk, gb18030 and sjis, where the second byte of a character may
// be a backslash (0x5c), nor in the UCS-2 family. A gateway must refuse a
// handshake with any other.
func SafeCharset(cs string) bool {
	switch strings.ToLower(cs) {
	case "utf8mb4", "utf8", "utf8mb3", "latin1", "latin2", "latin5", "latin7", "ascii", "binary",
		"cp1250", "cp1251", "cp1256", "cp1257", "cp850", "cp852", "cp866", "dec8", "greek", "hebrew",
		"hp8", "keybcs2", "koi8r", "koi8u", "macce", "macroman", "swe7", "armscii8", "geostd8", "tis620",
		"ujis", "eucjpms", "euckr":
		return true
	}
	return false
}
