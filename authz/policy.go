package authz

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Facts are what the policy needs to know about one statement beyond its
// Classification: the pieces a grant's scope and guardrails act on. The
// SQL dialects' classifiers (authz/postgres, authz/mysql) fill them;
// Decide applies a grant to them.
type Facts struct {
	// Own is the statement's own level (that of its kind) and why.
	Own    Access
	OwnWhy string
	// Needs are what something inside the statement requires, in the
	// order found: a nested write, a row lock, a function call. The first
	// need of the highest level gives the reason.
	Needs []Need
	// Funcs are the function calls, in order.
	Funcs []FuncUse
	// Tables are the tables the statement reads or writes, resolved
	// against the session's default schema or database.
	Tables []TableRef
	// Unresolved says why the statement acts on tables it does not name
	// (VACUUM of a whole database, a function that runs SQL from a
	// string); such a statement cannot be held to a table scope.
	Unresolved string
	// Unfiltered names an UPDATE or DELETE that changes every row.
	Unfiltered string
	// Drops says what the statement drops (DROP, TRUNCATE, DROP COLUMN).
	Drops string
	// ServerFiles says how the statement reads or writes the database
	// server's files or runs its programs.
	ServerFiles string
	// FileLoad says how the statement reads a client's file (MySQL LOAD
	// DATA LOCAL INFILE).
	FileLoad string
	// Database names a database outside the resource that the statement
	// reaches (MySQL), with what reaches it.
	Database, DatabaseWhat string
	// Refusal refuses the statement whatever the grant, under RefusalRule
	// (default "indirection").
	Refusal, RefusalRule string
}

// Need is one requirement found inside a statement.
type Need struct {
	Level Access
	Why   string
	// Fn indexes Facts.Funcs when a function call is the cause, else -1.
	Fn int
}

// FuncUse is one function call.
type FuncUse struct {
	// Schema is the qualification as written ("" when unqualified, and
	// for Postgres built-ins qualified with pg_catalog); Name the name as
	// the server folds it.
	Schema, Name string
	Level        Access
	// Opaque is set when airlock cannot see what the function touches: a
	// user-defined or unknown function, or one that runs SQL from a
	// string. Under a table scope such a call needs --function.
	Opaque bool
	// Lowerable is set when a grant may list the function with --function
	// to allow it at read: unknown functions and those that merely write.
	// Functions that reach outside the database (files, other sessions,
	// replication) stay at admin whatever the grant lists.
	Lowerable bool
}

// TableRef is one table as the statement names it, resolved.
type TableRef struct {
	Schema, Name string
	Written      bool
	// System is set for catalog tables (pg_catalog, information_schema):
	// they describe the schema, not the data, so table scopes and
	// --max-tables leave them out.
	System bool
}

func (t TableRef) String() string { return t.Schema + "." + t.Name }

// Statement is one statement of a client message as the classifier read
// it, before any grant is applied.
type Statement struct {
	// Text is the statement's slice of the message, trimmed of surrounding
	// whitespace.
	Text  string
	Class Classification
	// Facts is what the grant's scope and guardrails act on.
	Facts Facts
}

// DecideOptions are the parts of a session's options the policy needs.
// Table and function names fold differently in each dialect; the two
// Fold fields say how.
type DecideOptions struct {
	// FoldPatterns lowers the unquoted parts of --table and --function
	// patterns, as Postgres folds unquoted identifiers.
	FoldPatterns bool
	// FoldFunctions compares function names without regard to case, as
	// MySQL does.
	FoldFunctions bool
	// DefaultSchema is where unqualified names in --table and --function
	// patterns point.
	DefaultSchema string
	// Databases (MySQL) are the databases of the resource; empty means
	// no restriction.
	Databases []string
}

// Decide applies g to one classified statement, ignoring the rest of its
// message.
func Decide(g *Grant, s *Statement, o *DecideOptions) Decision {
	d := Decision{Text: s.Text, Class: s.Class}
	f := &s.Facts
	if g == nil || g.Access <= AccessNone || g.State != "" && g.State != StateActive {
		d.Rule, d.Reason = "no-grant", noGrantReason(g, s.Class)
		return d
	}
	if f.Refusal != "" {
		d.Rule, d.Reason = f.RefusalRule, f.Refusal
		if d.Rule == "" {
			d.Rule = "indirection"
		}
		return d
	}
	if len(g.Scope.Functions) > 0 {
		d.Class.Required, d.Class.Why = requiredWith(f, func(fu *FuncUse) bool {
			return fu.Lowerable && functionListed(g.Scope.Functions, fu, o)
		})
	}
	sc := &g.Scope
	switch {
	case d.Class.Required > g.Access:
		d.Rule, d.Reason = "access-level", accessReason(g, d.Class)
	case f.Database != "":
		d.Rule, d.Reason = "database", databaseReason(g, d.Class, f, o)
	case f.ServerFiles != "" && !sc.AllowServerFiles:
		d.Rule, d.Reason = "server-files", flagReason(g, d.Class, f.ServerFiles, "does not allow the database server's files or programs", "--allow-server-files")
	case f.FileLoad != "" && !sc.AllowFileLoad:
		d.Rule, d.Reason = "file-load", flagReason(g, d.Class, f.FileLoad, "does not allow file loads", "--allow-file-load")
	case f.Drops != "" && !sc.AllowDrop:
		d.Rule, d.Reason = "drop", flagReason(g, d.Class, f.Drops, "does not allow dropping", "--allow-drop")
	case f.Unfiltered != "" && !sc.AllowUnfiltered:
		d.Rule, d.Reason = "unfiltered", unfilteredReason(g, d.Class, f.Unfiltered)
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
func requiredWith(f *Facts, listed func(*FuncUse) bool) (Access, string) {
	level, why := f.Own, f.OwnWhy
	for _, n := range f.Needs {
		l := n.Level
		if n.Fn >= 0 && n.Fn < len(f.Funcs) && listed(&f.Funcs[n.Fn]) {
			l = AccessRead
		}
		if l > level {
			level, why = l, n.Why
		}
	}
	return level, why
}

// Required is the statement's level with every function call counted.
func (f *Facts) Required() (Access, string) {
	return requiredWith(f, func(*FuncUse) bool { return false })
}

// scopeCheck applies the grant's table scope and --max-tables.
func scopeCheck(g *Grant, s *Statement, o *DecideOptions) (rule, reason string) {
	sc := &g.Scope
	f := &s.Facts
	if len(sc.Tables) > 0 {
		if f.Unresolved != "" {
			return "table-scope", unresolvedReason(g, s.Class, f.Unresolved, "--table")
		}
		for _, t := range f.Tables {
			if t.System || tableListed(sc.Tables, t, o) {
				continue
			}
			return "table-scope", tableScopeReason(g, s.Class, t, o)
		}
		for i := range f.Funcs {
			fu := &f.Funcs[i]
			if fu.Opaque && !functionListed(sc.Functions, fu, o) {
				return "table-scope", opaqueFunctionReason(g, s.Class, fu)
			}
		}
	}
	if sc.MaxTables > 0 {
		if f.Unresolved != "" {
			return "max-tables", unresolvedReason(g, s.Class, f.Unresolved, "--max-tables")
		}
		var names []string
		for _, t := range f.Tables {
			if !t.System {
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

func parsePattern(p string, o *DecideOptions) pattern {
	parts := splitQualified(p)
	fold := func(s string) string {
		if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '`' && s[len(s)-1] == '`') {
			q := s[:1]
			return strings.ReplaceAll(s[1:len(s)-1], q+q, q)
		}
		if o.FoldPatterns {
			return strings.ToLower(s)
		}
		return s
	}
	if len(parts) == 1 {
		return pattern{o.DefaultSchema, fold(parts[0])}
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

func tableListed(patterns []string, t TableRef, o *DecideOptions) bool {
	for _, p := range patterns {
		if parsePattern(p, o).matches(t.Schema, t.Name) {
			return true
		}
	}
	return false
}

// functionListed reports whether a --function pattern names fu. An
// unqualified pattern, like an unqualified call, names the default schema
// (for MySQL, the current database).
func functionListed(patterns []string, fu *FuncUse, o *DecideOptions) bool {
	schema, name := fu.Schema, fu.Name
	if schema == "" {
		schema = o.DefaultSchema
	}
	if o.FoldFunctions {
		name = strings.ToLower(name)
	}
	for _, ps := range patterns {
		p := parsePattern(ps, o)
		if o.FoldFunctions {
			p.name = strings.ToLower(p.name)
		}
		if p.matches(schema, name) {
			return true
		}
	}
	return false
}

func (fu *FuncUse) Display() string {
	if fu.Schema != "" {
		return fu.Schema + "." + fu.Name
	}
	return fu.Name
}

// Reasons for the scope and guardrail rules. Each says what was refused,
// what the grant allows and the request that would allow it.

func flagReason(g *Grant, c Classification, what, lacks, flag string) string {
	return fmt.Sprintf("%s: %s; grant %s (%s) %s. To run it, request a grant with %s: %s",
		c.Kind, what, g.ID, DisplayTask(g.Task), lacks, flag, requestCommand(g, max(c.Required, g.Access), flag))
}

func unfilteredReason(g *Grant, c Classification, what string) string {
	return fmt.Sprintf("%s would change every row (%s); grant %s (%s) refuses UPDATE and DELETE without a WHERE clause that filters rows. Add one, or request a grant with --allow-unfiltered: %s",
		c.Kind, what, g.ID, DisplayTask(g.Task), requestCommand(g, max(c.Required, g.Access), "--allow-unfiltered"))
}

func tableScopeReason(g *Grant, c Classification, t TableRef, o *DecideOptions) string {
	verb := "reads"
	if t.Written {
		verb = "writes"
	}
	return fmt.Sprintf("%s %s %s, which is outside the tables of grant %s (%s): %s. To run it, request a grant that includes it: %s",
		c.Kind, verb, t, g.ID, DisplayTask(g.Task), strings.Join(g.Scope.Tables, ", "),
		requestCommand(g, max(c.Required, g.Access), "--table "+ShellQuote(t.String())))
}

func unresolvedReason(g *Grant, c Classification, why, flag string) string {
	return fmt.Sprintf("%s cannot be held to grant %s's %s (%s): %s, so airlock cannot name every table it touches. Name the tables, or request a grant without %s: %s",
		c.Kind, g.ID, flag, DisplayTask(g.Task), why, flag, requestCommandWithout(g, max(c.Required, g.Access), flag))
}

func opaqueFunctionReason(g *Grant, c Classification, fu *FuncUse) string {
	return fmt.Sprintf("%s calls %s, which airlock cannot see into and which may read any table; grant %s (%s) is limited to the tables %s. If %s is safe, request a grant that lists it: %s",
		c.Kind, fu.Display(), g.ID, DisplayTask(g.Task), strings.Join(g.Scope.Tables, ", "), fu.Display(),
		requestCommand(g, max(c.Required, g.Access), "--function "+ShellQuote(fu.Display())))
}

func maxTablesReason(g *Grant, c Classification, names []string) string {
	return fmt.Sprintf("%s touches %d tables (%s); grant %s (%s) allows at most %d. Split the statement, or request a grant with --max-tables %d: %s",
		c.Kind, len(names), strings.Join(names, ", "), g.ID, DisplayTask(g.Task), g.Scope.MaxTables, len(names),
		requestCommand(g, max(c.Required, g.Access), "--max-tables "+strconv.Itoa(len(names))))
}

func databaseReason(g *Grant, c Classification, f *Facts, o *DecideOptions) string {
	return fmt.Sprintf("%s %s database %s, which is not a database of resource %s (%s); airlock allows only those. Ask the operator to add it to the resource",
		c.Kind, f.DatabaseWhat, f.Database, g.Resource, strings.Join(o.Databases, ", "))
}

// scopeFlags are the flags of g's scope as airlock request takes them, so
// a suggested request keeps what the grant already narrows.
func scopeFlags(g *Grant) []string {
	var out []string
	sc := &g.Scope
	for _, t := range sc.Tables {
		out = append(out, "--table "+ShellQuote(t))
	}
	for _, f := range sc.Functions {
		out = append(out, "--function "+ShellQuote(f))
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

// sortedSet sorts and deduplicates in place.
func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// IsDropKind reports whether a statement of kind (Classification.Kind)
// drops something (DROP ..., TRUNCATE); the classifiers then set
// Facts.Drops, which --allow-drop is about.
func IsDropKind(kind string) bool {
	return strings.HasPrefix(kind, "DROP ") || kind == "TRUNCATE"
}
