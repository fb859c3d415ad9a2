package authz

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// facts are what the policy needs to know about one statement beyond its
// Classification: the pieces a grant's scope and guardrails act on. Both
// dialects' classifiers fill them; decide applies a grant to them.
type facts struct {
	// own is the statement's own level (that of its kind) and why.
	own    Access
	ownWhy string
	// needs are what something inside the statement requires, in the
	// order found: a nested write, a row lock, a function call. The first
	// need of the highest level gives the reason.
	needs []need
	// funcs are the function calls, in order.
	funcs []funcUse
	// tables are the tables the statement reads or writes, resolved
	// against the session's default schema or database.
	tables []tableRef
	// unresolved says why the statement acts on tables it does not name
	// (VACUUM of a whole database, a function that runs SQL from a
	// string); such a statement cannot be held to a table scope.
	unresolved string
	// unfiltered names an UPDATE or DELETE that changes every row.
	unfiltered string
	// drops says what the statement drops (DROP, TRUNCATE, DROP COLUMN).
	drops string
	// serverFiles says how the statement reads or writes the database
	// server's files or runs its programs.
	serverFiles string
	// fileLoad says how the statement reads a client's file (MySQL LOAD
	// DATA LOCAL INFILE).
	fileLoad string
	// database names a database outside the resource that the statement
	// reaches (MySQL), with what reaches it.
	database, databaseWhat string
	// refusal refuses the statement whatever the grant, under refusalRule
	// (default "indirection").
	refusal, refusalRule string
}

// need is one requirement found inside a statement.
type need struct {
	level Access
	why   string
	// fn indexes facts.funcs when a function call is the cause, else -1.
	fn int
}

// funcUse is one function call.
type funcUse struct {
	// schema is the qualification as written ("" when unqualified, and
	// for Postgres built-ins qualified with pg_catalog); name the name as
	// the server folds it.
	schema, name string
	level        Access
	// opaque is set when airlock cannot see what the function touches: a
	// user-defined or unknown function, or one that runs SQL from a
	// string. Under a table scope such a call needs --function.
	opaque bool
	// lowerable is set when a grant may list the function with --function
	// to allow it at read: unknown functions and those that merely write.
	// Functions that reach outside the database (files, other sessions,
	// replication) stay at admin whatever the grant lists.
	lowerable bool
}

// tableRef is one table as the statement names it, resolved.
type tableRef struct {
	schema, name string
	written      bool
	// system is set for catalog tables (pg_catalog, information_schema):
	// they describe the schema, not the data, so table scopes and
	// --max-tables leave them out.
	system bool
}

func (t tableRef) String() string { return t.schema + "." + t.name }

// decideOpts are the parts of a session's options the policy needs.
type decideOpts struct {
	// dialect is "postgres" or "mysql": table and function names fold
	// differently.
	dialect string
	// defaultSchema is where unqualified names in --table and --function
	// patterns point.
	defaultSchema string
	// databases (MySQL) are the databases of the resource; empty means
	// no restriction.
	databases []string
	// resource names the resource in reasons about databases.
	resource string
}

// decide applies g to one classified statement, ignoring the rest of its
// message.
func decide(g *Grant, s *Statement, o *decideOpts) Decision {
	d := Decision{Text: s.Text, Class: s.Class}
	f := &s.f
	if g == nil || g.Access <= AccessNone || g.State != "" && g.State != StateActive {
		d.Rule, d.Reason = "no-grant", noGrantReason(g, s.Class)
		return d
	}
	if f.refusal != "" {
		d.Rule, d.Reason = f.refusalRule, f.refusal
		if d.Rule == "" {
			d.Rule = "indirection"
		}
		return d
	}
	if len(g.Scope.Functions) > 0 {
		d.Class.Required, d.Class.Why = requiredWith(f, func(fu *funcUse) bool {
			return fu.lowerable && functionListed(g.Scope.Functions, fu, o)
		})
	}
	sc := &g.Scope
	switch {
	case d.Class.Required > g.Access:
		d.Rule, d.Reason = "access-level", accessReason(g, d.Class)
	case f.database != "":
		d.Rule, d.Reason = "database", databaseReason(g, d.Class, f, o)
	case f.serverFiles != "" && !sc.AllowServerFiles:
		d.Rule, d.Reason = "server-files", flagReason(g, d.Class, f.serverFiles, "does not allow the database server's files or programs", "--allow-server-files")
	case f.fileLoad != "" && !sc.AllowFileLoad:
		d.Rule, d.Reason = "file-load", flagReason(g, d.Class, f.fileLoad, "does not allow file loads", "--allow-file-load")
	case f.drops != "" && !sc.AllowDrop:
		d.Rule, d.Reason = "drop", flagReason(g, d.Class, f.drops, "does not allow dropping", "--allow-drop")
	case f.unfiltered != "" && !sc.AllowUnfiltered:
		d.Rule, d.Reason = "unfiltered", unfilteredReason(g, d.Class, f.unfiltered)
	default:
		if rule, reason := scopeCheck(g, s, o); rule != "" {
			d.Rule, d.Reason = rule, reason
			return d
		}
		d.Allow, d.Rule = true, "access-level"
	}
	return d
}

// requiredWith recomputes a statement's level when some function calls
// count as read (listed treats them so).
func requiredWith(f *facts, listed func(*funcUse) bool) (Access, string) {
	level, why := f.own, f.ownWhy
	for _, n := range f.needs {
		l := n.level
		if n.fn >= 0 && n.fn < len(f.funcs) && listed(&f.funcs[n.fn]) {
			l = AccessRead
		}
		if l > level {
			level, why = l, n.why
		}
	}
	return level, why
}

// required is the statement's level with every function call counted.
func (f *facts) required() (Access, string) {
	return requiredWith(f, func(*funcUse) bool { return false })
}

// scopeCheck applies the grant's table scope and --max-tables.
func scopeCheck(g *Grant, s *Statement, o *decideOpts) (rule, reason string) {
	sc := &g.Scope
	f := &s.f
	if len(sc.Tables) > 0 {
		if f.unresolved != "" {
			return "table-scope", unresolvedReason(g, s.Class, f.unresolved, "--table")
		}
		for _, t := range f.tables {
			if t.system || tableListed(sc.Tables, t, o) {
				continue
			}
			return "table-scope", tableScopeReason(g, s.Class, t, o)
		}
		for i := range f.funcs {
			fu := &f.funcs[i]
			if fu.opaque && !functionListed(sc.Functions, fu, o) {
				return "table-scope", opaqueFunctionReason(g, s.Class, fu)
			}
		}
	}
	if sc.MaxTables > 0 {
		if f.unresolved != "" {
			return "max-tables", unresolvedReason(g, s.Class, f.unresolved, "--max-tables")
		}
		var names []string
		for _, t := range f.tables {
			if !t.system {
				names = append(names, t.String())
			}
		}
		names = sortedSet(names)
		if len(names) > sc.MaxTables {
			return "max-tables", maxTablesReason(g, s.Class, names)
		}
	}
	return "", ""
}

// A pattern is SCHEMA.NAME (DATABASE.NAME for MySQL) or NAME, each part
// possibly quoted ("..." or `...`) and with * matching any run of
// characters. An unqualified pattern names the default schema. Postgres
// folds unquoted parts to lower case, as it does identifiers; MySQL
// compares names exactly (table names are case-sensitive on Linux).
type pattern struct{ schema, name string }

func parsePattern(p string, o *decideOpts) pattern {
	parts := splitQualified(p)
	fold := func(s string) string {
		if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '`' && s[len(s)-1] == '`') {
			q := s[:1]
			return strings.ReplaceAll(s[1:len(s)-1], q+q, q)
		}
		if o.dialect == "postgres" {
			return strings.ToLower(s)
		}
		return s
	}
	if len(parts) == 1 {
		return pattern{o.defaultSchema, fold(parts[0])}
	}
	return pattern{fold(parts[0]), fold(strings.Join(parts[1:], "."))}
}

// splitQualified splits at dots outside quotes.
func splitQualified(p string) []string {
	var parts []string
	var quote byte
	start := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '`':
			quote = c
		case c == '.':
			parts = append(parts, p[start:i])
			start = i + 1
		}
	}
	return append(parts, p[start:])
}

func (p pattern) matches(schema, name string) bool {
	return globMatch(p.schema, schema) && globMatch(p.name, name)
}

// globMatch matches s against pattern p in which * stands for any run of
// characters.
func globMatch(p, s string) bool {
	star := strings.IndexByte(p, '*')
	if star < 0 {
		return p == s
	}
	if !strings.HasPrefix(s, p[:star]) {
		return false
	}
	s = s[star:]
	p = p[star+1:]
	for {
		if globMatch(p, s) {
			return true
		}
		if s == "" {
			return false
		}
		s = s[1:]
	}
}

func tableListed(patterns []string, t tableRef, o *decideOpts) bool {
	for _, p := range patterns {
		if parsePattern(p, o).matches(t.schema, t.name) {
			return true
		}
	}
	return false
}

// functionListed reports whether a --function pattern names fu. An
// unqualified pattern, like an unqualified call, names the default schema
// (for MySQL, the current database).
func functionListed(patterns []string, fu *funcUse, o *decideOpts) bool {
	schema, name := fu.schema, fu.name
	if schema == "" {
		schema = o.defaultSchema
	}
	if o.dialect == "mysql" {
		name = strings.ToLower(name)
	}
	for _, ps := range patterns {
		p := parsePattern(ps, o)
		if o.dialect == "mysql" {
			p.name = strings.ToLower(p.name)
		}
		if p.matches(schema, name) {
			return true
		}
	}
	return false
}

func (fu *funcUse) display() string {
	if fu.schema != "" {
		return fu.schema + "." + fu.name
	}
	return fu.name
}

// Reasons for the scope and guardrail rules. Each says what was refused,
// what the grant allows and the request that would allow it.

func flagReason(g *Grant, c Classification, what, lacks, flag string) string {
	return fmt.Sprintf("%s: %s; grant %s (%s) %s. To run it, request a grant with %s: %s",
		c.Kind, what, g.ID, displayTask(g.Task), lacks, flag, requestCommand(g, max(c.Required, g.Access), flag))
}

func unfilteredReason(g *Grant, c Classification, what string) string {
	return fmt.Sprintf("%s would change every row (%s); grant %s (%s) refuses UPDATE and DELETE without a WHERE clause that filters rows. Add one, or request a grant with --allow-unfiltered: %s",
		c.Kind, what, g.ID, displayTask(g.Task), requestCommand(g, max(c.Required, g.Access), "--allow-unfiltered"))
}

func tableScopeReason(g *Grant, c Classification, t tableRef, o *decideOpts) string {
	verb := "reads"
	if t.written {
		verb = "writes"
	}
	return fmt.Sprintf("%s %s %s, which is outside the tables of grant %s (%s): %s. To run it, request a grant that includes it: %s",
		c.Kind, verb, t, g.ID, displayTask(g.Task), strings.Join(g.Scope.Tables, ", "),
		requestCommand(g, max(c.Required, g.Access), "--table "+shellQuote(t.String())))
}

func unresolvedReason(g *Grant, c Classification, why, flag string) string {
	return fmt.Sprintf("%s cannot be held to grant %s's %s (%s): %s, so airlock cannot name every table it touches. Name the tables, or request a grant without %s: %s",
		c.Kind, g.ID, flag, displayTask(g.Task), why, flag, requestCommandWithout(g, max(c.Required, g.Access), flag))
}

func opaqueFunctionReason(g *Grant, c Classification, fu *funcUse) string {
	return fmt.Sprintf("%s calls %s, which airlock cannot see into and which may read any table; grant %s (%s) is limited to the tables %s. If %s is safe, request a grant that lists it: %s",
		c.Kind, fu.display(), g.ID, displayTask(g.Task), strings.Join(g.Scope.Tables, ", "), fu.display(),
		requestCommand(g, max(c.Required, g.Access), "--function "+shellQuote(fu.display())))
}

func maxTablesReason(g *Grant, c Classification, names []string) string {
	return fmt.Sprintf("%s touches %d tables (%s); grant %s (%s) allows at most %d. Split the statement, or request a grant with --max-tables %d: %s",
		c.Kind, len(names), strings.Join(names, ", "), g.ID, displayTask(g.Task), g.Scope.MaxTables, len(names),
		requestCommand(g, max(c.Required, g.Access), "--max-tables "+strconv.Itoa(len(names))))
}

func databaseReason(g *Grant, c Classification, f *facts, o *decideOpts) string {
	res := o.resource
	if res == "" {
		res = g.Resource
	}
	return fmt.Sprintf("%s %s database %s, which is not a database of resource %s (%s); airlock allows only those. Ask the operator to add it to the resource",
		c.Kind, f.databaseWhat, f.database, res, strings.Join(o.databases, ", "))
}

// scopeFlags are the flags of g's scope as airlock request takes them, so
// a suggested request keeps what the grant already narrows.
func scopeFlags(g *Grant) []string {
	var out []string
	sc := &g.Scope
	for _, t := range sc.Tables {
		out = append(out, "--table "+shellQuote(t))
	}
	for _, f := range sc.Functions {
		out = append(out, "--function "+shellQuote(f))
	}
	if sc.MaxTables > 0 {
		out = append(out, "--max-tables "+strconv.Itoa(sc.MaxTables))
	}
	for _, b := range []struct {
		on   bool
		flag string
	}{
		{sc.AllowDrop, "--allow-drop"}, {sc.AllowUnfiltered, "--allow-unfiltered"},
		{sc.AllowFileLoad, "--allow-file-load"}, {sc.AllowServerFiles, "--allow-server-files"},
	} {
		if b.on {
			out = append(out, b.flag)
		}
	}
	return out
}

// withoutFlag drops every occurrence of flag (and its value) from flags.
func withoutFlag(flags []string, flag string) []string {
	return slices.DeleteFunc(flags, func(s string) bool { return s == flag || strings.HasPrefix(s, flag+" ") })
}
