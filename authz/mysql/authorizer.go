// Package mysql is the authorizer of MySQL and MariaDB SQL: it reads a
// message with the TiDB parser (and its own lexer, for what that parser
// does not read) into the facts package authz decides on. The MySQL
// listener calls, for every COM_QUERY:
//
//	func Query(g *authz.Grant, sql string, o Options) authz.Verdict
//
// or, to follow PREPARE/EXECUTE, USE and HANDLER within one client
// session (recommended), the same on one value per client session:
//
//	func NewSession(o Options) *Session
//	func (s *Session) Query(g *authz.Grant, sql string) authz.Verdict   // COM_QUERY
//	func (s *Session) Prepare(g *authz.Grant, sql string) authz.Verdict // COM_STMT_PREPARE
//	func (s *Session) InitDB(g *authz.Grant, db string) authz.Verdict   // COM_INIT_DB
//	func (s *Session) SetDatabase(db string)                            // the server confirmed the current database
//
// and refuses COM_CHANGE_USER itself. SafeCharset says which
// handshake character sets the listener may accept.
package mysql

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
	tidbmysql "github.com/pingcap/tidb/pkg/parser/mysql"
	// The parser needs a driver for literal values; this is the one its
	// documentation names for users outside TiDB.
	_ "github.com/pingcap/tidb/pkg/parser/test_driver"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/elide"
)

// Options is what the MySQL authorizer needs to know about the
// resource and the session.
type Options struct {
	// Database is the session's current database: unqualified table names
	// resolve against it. Empty means none is selected; a statement
	// naming an unqualified table then cannot be held to a table scope.
	Database string
	// Databases are the databases of the resource: tables, USE and
	// COM_INIT_DB may reach only these (and information_schema). Empty
	// means Database alone; both empty means no restriction.
	Databases []string
	// SQLMode is the session's sql_mode as the server reports it
	// (SELECT @@SESSION.sql_mode once connected). ANSI_QUOTES and
	// NO_BACKSLASH_ESCAPES change where strings end, so airlock must read
	// with the same; empty means the default (neither).
	SQLMode string
	// ServerVersion is the version string of the server's handshake
	// ("8.0.36", "5.5.5-10.11.6-MariaDB"). Executable comments
	// (/*!NNNNN ... */, /*M! ... */) run or not depending on it; when it
	// is empty, those whose effect differs between servers are refused.
	ServerVersion string
	// Cache, when set, keeps decisions on whole messages (see
	// DecisionCache); share one across sessions.
	Cache *authz.DecisionCache
	// Routines, when set, reads stored procedures from the server, so a
	// CALL in a COM_QUERY is decided by what the procedure runs; without
	// it (and for prepared statements) CALL needs admin.
	Routines Routines
}

// mySettings are Options read once per session.
type mySettings struct {
	lex        myLexOpts
	parserMode tidbmysql.SQLMode
	// badMode, when set, refuses every message: the session's sql_mode
	// makes the server read statements in a way airlock does not.
	badMode   string
	databases []string
	cacheKey  string
}

func readMySQLOptions(o *Options) mySettings {
	s := mySettings{lex: myLexOpts{server: parseServerVersion(o.ServerVersion)}}
	for _, m := range strings.Split(strings.ToUpper(o.SQLMode), ",") {
		switch m = strings.TrimSpace(m); m {
		case "ORACLE":
			s.badMode = "sql_mode ORACLE switches MariaDB to a grammar airlock does not read"
		case "ANSI_QUOTES", "ANSI", "MSSQL", "DB2", "POSTGRESQL", "MAXDB":
			s.lex.ansiQuotes = true
			s.parserMode |= tidbmysql.ModeANSIQuotes
		case "NO_BACKSLASH_ESCAPES":
			s.lex.noBackslashEscapes = true
			s.parserMode |= tidbmysql.ModeNoBackslashEscapes
		case "IGNORE_SPACE":
			s.parserMode |= tidbmysql.ModeIgnoreSpace
		case "PIPES_AS_CONCAT":
			s.parserMode |= tidbmysql.ModePipesAsConcat
		case "HIGH_NOT_PRECEDENCE":
			s.parserMode |= tidbmysql.ModeHighNotPrecedence
		}
		if m == "ANSI" || m == "MSSQL" || m == "DB2" || m == "POSTGRESQL" || m == "MAXDB" {
			s.parserMode |= tidbmysql.ModePipesAsConcat | tidbmysql.ModeIgnoreSpace
		}
	}
	s.databases = o.Databases
	if len(s.databases) == 0 && o.Database != "" {
		s.databases = []string{o.Database}
	}
	if o.Cache != nil {
		s.cacheKey = fmt.Sprintf("mysql|%q|%d|%v|%v|%v|%q", s.databases, s.parserMode, s.lex.server, s.lex.ansiQuotes, s.lex.noBackslashEscapes, s.badMode)
	}
	return s
}

// Session authorizes the statements of one MySQL client session and
// keeps the state that later statements depend on: what each prepared
// statement runs, the current database, the open HANDLERs. The listener
// must use one per client session and give it every COM_QUERY, so the
// state follows the server's. State changes only when a whole message is
// allowed. It is safe for concurrent use, though a session's messages
// arrive in order on one connection.
type Session struct {
	mu sync.Mutex
	o  Options
	s  mySettings
	st myState
}

// myState is what a session's statements leave behind.
type myState struct {
	// dbs are the databases that may be current, the most likely first:
	// after a USE the server may have refused, both the old and the new
	// one. Unqualified names must be allowed in each.
	dbs []string
	// prepared maps a name to what it may run: MySQL replaces a prepared
	// statement of the same name, but a PREPARE after a failed statement
	// of its message never runs, so the old one may still be there. An
	// EXECUTE must be allowed as every candidate.
	prepared map[string][]*myPrepared
	// handlers maps an open HANDLER's name to its table.
	handlers map[string]myTable
}

// myPrepared is a statement prepared with PREPARE.
type myPrepared struct {
	stmt *myStmt
	// dbs were the possible current databases at PREPARE.
	dbs []string
}

// maxCandidates bounds the statements one name may stand for; see
// myState.prepared.
const maxCandidates = 4

// maxPossibleDBs bounds how many databases a session keeps as possibly
// current before it resolves unqualified names against none.
const maxPossibleDBs = 8

// NewSession starts the authorizer's state for one client session.
func NewSession(o Options) *Session {
	s := &Session{o: o, s: readMySQLOptions(&o)}
	if o.Database != "" {
		s.st.dbs = []string{o.Database}
	}
	return s
}

// Query decides on one client message of MySQL SQL (possibly several
// statements separated by ';') under grant g, without session state:
// EXECUTE of a prepared statement is refused, and HANDLER READ names a
// table, not a handler. Listeners should prefer a Session.
func Query(g *authz.Grant, sql string, o Options) authz.Verdict {
	return NewSession(o).Query(g, sql)
}

// Query decides on one COM_QUERY message under g. Every statement gets a
// Decision and the verdict is all or nothing, as for Postgres (see authz.Batch): the server
// runs the statements of a multi-statement message one after the other
// and stops at the first error, so when any is refused none is sent.
func (s *Session) Query(g *authz.Grant, sql string) authz.Verdict {
	return s.message(g, sql, false)
}

// Prepare decides on a COM_STMT_PREPARE. It must hold exactly one
// statement, and one that changes session state (USE, PREPARE, EXECUTE,
// DEALLOCATE, HANDLER) is refused: its effect would come at
// COM_STMT_EXECUTE, where airlock does not see it. The listener keeps the
// verdict under the statement id and re-uses it for each
// COM_STMT_EXECUTE, as the Postgres relay does for Parse.
func (s *Session) Prepare(g *authz.Grant, sql string) authz.Verdict {
	return s.message(g, sql, true)
}

// InitDB decides on COM_INIT_DB: the database must be one of the
// resource's. Once allowed, db may be current; call SetDatabase when the
// server's OK confirms it.
func (s *Session) InitDB(g *authz.Grant, db string) authz.Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &authz.Statement{Text: db, Class: authz.Classification{Kind: "USE", Required: authz.AccessRead}}
	if !s.databaseAllowed(db) {
		st.Facts.Database, st.Facts.DatabaseWhat = db, "switches to"
	}
	d := authz.Decide(g, st, s.decideOptsFor(&s.st))
	if d.Allow {
		s.st.dbs = addPossible(s.st.dbs, db)
	}
	return authz.Verdict{Allow: d.Allow, Statements: []authz.Decision{d}}
}

// SetDatabase records the current database as the server reports it
// (after COM_INIT_DB, or from session-state tracking), ending any doubt a
// USE left.
func (s *Session) SetDatabase(db string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.dbs = nil
	if db != "" {
		s.st.dbs = []string{db}
	}
}

func addPossible(dbs []string, db string) []string {
	out := append([]string{db}, slices.DeleteFunc(slices.Clone(dbs), func(d string) bool { return d == db })...)
	if len(out) > maxPossibleDBs {
		out = out[:maxPossibleDBs]
	}
	return out
}

func (s *Session) databaseAllowed(db string) bool {
	return len(s.s.databases) == 0 || slices.Contains(s.s.databases, db) || strings.EqualFold(db, "information_schema")
}

// cacheKey is the cache's key for a message in the session's present
// state: unqualified names resolve against the possible databases.
func (s *Session) cacheKey(sql string, prepare bool) authz.CacheKey {
	return authz.CacheKey{Settings: s.s.cacheKey + "|" + strings.Join(s.st.dbs, "\x00"), Text: sql, Prepare: prepare}
}

// myStmt is one statement as the classifier read it, before session
// state and grant are applied.
type myStmt struct {
	text string
	kind string
	a    *myAnalysis
	// volatile is set when the decision depends on what the server
	// showed (a procedure's definition): it is not cached.
	volatile bool
}

// elideLiterals turns literal elision on; tests turn it off to compare.
var elideLiterals = true

// myCallEnv is what a message's CALLs are decided with: off (the zero
// value) leaves them needing admin.
type myCallEnv struct {
	on  bool
	src Routines
	dbs []string // the possible current databases
}

// resolver is the myCallResolver of the environment, nil when off.
func (e myCallEnv) resolver() *myCallResolver {
	if !e.on {
		return nil
	}
	return &myCallResolver{src: e.src, dbs: e.dbs}
}

// classifyMySQL lexes, parses and classifies a message. A statement the
// parser cannot read comes back as a *myParseError. env decides CALLs.
func classifyMySQL(sql string, set *mySettings, env myCallEnv) ([]*myStmt, *myLexError, error) {
	if set.badMode != "" {
		return nil, &myLexError{rule: "lexical", msg: set.badMode}, nil
	}
	if len(sql) >= elide.Min && elideLiterals {
		if out, ok := classifyMySQLElided(sql, set); ok {
			return out, nil, nil
		}
	}
	segs, cl, lerr := myLexClean(sql, set.lex)
	if lerr != nil {
		return nil, lerr, nil
	}
	out := make([]*myStmt, 0, len(segs))
	for i := 0; i < len(segs); i++ {
		seg := segs[i]
		a := &myAnalysis{}
		var kind string
		end, hint := seg.end, seg.setVarHint
		switch {
		case isHandler(seg.clean):
			var err error
			kind, err = a.handler(seg.clean, set)
			if err != nil {
				return nil, nil, &myParseError{err: err, stmt: i, n: len(segs), start: seg.start, pos: -1}
			}
		case myCompoundLead(seg.clean):
			k, e, rerr := readCompound(sql, cl, seg.start, set, env.resolver(), a, false)
			if rerr != nil {
				return nil, nil, &myParseError{err: rerr, stmt: i, n: len(segs), start: seg.start, pos: rerr.pos}
			}
			// The statement runs over the ';'s inside it, to the one
			// after it (or the end).
			kind, end = k, e
			for end > seg.start && isMySpace(sql[end-1]) {
				end--
			}
			for i+1 < len(segs) && segs[i+1].start < e {
				i++
				hint = hint || segs[i].setVarHint
			}
		default:
			stmt, err := parseMySQL(seg.clean, set.parserMode)
			if err != nil {
				// SELECT ... INTO @var, which the TiDB parser does not
				// read, is read without its INTO.
				toks, _ := myTokens(seg.clean, set.lex)
				for k := range toks {
					toks[k].start += seg.start
					toks[k].end += seg.start
				}
				var rerr *myReadError
				if stmt, rerr = parseInto(seg.clean, seg.start, toks, set, nil); rerr != nil {
					return nil, nil, parseErrorAt(err, i, len(segs), seg)
				}
			}
			kind = a.statement(stmt)
		}
		if len(a.calls) > 0 {
			env.resolver().resolve(a, set)
		}
		if a.op == myOpUse {
			// The statements after a USE run only if it succeeded.
			env.dbs = []string{a.opDB}
		}
		if hint {
			a.need(authz.AccessAdmin, "a SET_VAR optimizer hint sets a server variable")
		}
		out = append(out, &myStmt{text: sql[seg.start:end], kind: kind, a: a, volatile: a.volatile})
	}
	return out, nil, nil
}

// classifyMySQLElided is classifyMySQL on the message with its long
// literals elided (see elide.go); false when there are none, or anything
// about the reduced message differs from the plain path's expectations
// (myLex refuses it, a statement does not parse, a placeholder did not
// come back where it was put): the caller classifies the message whole.
func classifyMySQLElided(sql string, set *mySettings) ([]*myStmt, bool) {
	e, ok := elideMySQL(sql, set.lex)
	if !ok {
		return nil, false
	}
	segs, lerr := myLex(e.Text, set.lex)
	if lerr != nil {
		return nil, false
	}
	out := make([]*myStmt, 0, len(segs))
	found := 0
	for _, seg := range segs {
		// HANDLER, compound statements (routines, BEGIN ... END) and,
		// below, CALLs take the whole path: what they need is read from
		// more than one statement's tree.
		if isHandler(seg.clean) || myCompoundLead(seg.clean) {
			return nil, false
		}
		stmt, err := parseMySQL(seg.clean, set.parserMode)
		if err != nil {
			return nil, false
		}
		n, ok := foundMySQL(e, stmt, seg.start, seg.end)
		if !ok {
			return nil, false
		}
		found += n
		a := &myAnalysis{}
		kind := a.statement(stmt)
		if len(a.calls) > 0 {
			return nil, false
		}
		if seg.setVarHint {
			a.need(authz.AccessAdmin, "a SET_VAR optimizer hint sets a server variable")
		}
		out = append(out, &myStmt{text: sql[e.ToOrig(seg.start):e.ToOrig(seg.end)], kind: kind, a: a, volatile: a.volatile})
	}
	return out, found == len(e.Spans)
}

// myParseError is a statement of a message the parser could not read.
type myParseError struct {
	err     error
	stmt, n int // the statement's index, and how many the message has
	// start is where the statement starts in the message; pos is where
	// the server's lexer would stand when its grammar gives up, or -1
	// when the parser said nothing of where.
	start, pos int
}

func (e *myParseError) Error() string {
	if e.n > 1 {
		return fmt.Sprintf("statement %d: %v", e.stmt+1, e.err)
	}
	return e.err.Error()
}

func (e *myParseError) Unwrap() error { return e.err }

// parseErrorAt places the parser's error on segment seg of the message.
// Where the parser ran out of text, the server's lexer stands on the ';'
// after the statement, or at the end of the message.
func parseErrorAt(err error, i, n int, seg mySegment) *myParseError {
	e := &myParseError{err: err, stmt: i, n: n, start: seg.start, pos: -1}
	if off, ok := tidbSyntaxOffset(err, seg.clean); ok {
		e.pos = seg.start + off
		if off >= len(seg.clean) {
			e.pos = len(seg.clean) + seg.start
			if seg.semi >= 0 {
				e.pos = seg.semi
			}
		}
	}
	return e
}

var parserPool = sync.Pool{New: func() any { return parser.New() }}

// parseMySQL parses one statement with the TiDB parser.
func parseMySQL(text string, mode tidbmysql.SQLMode) (ast.StmtNode, error) {
	p := parserPool.Get().(*parser.Parser)
	defer parserPool.Put(p)
	p.SetSQLMode(mode)
	stmts, _, err := p.ParseSQL(text)
	if err != nil {
		return nil, err
	}
	if len(stmts) != 1 {
		return nil, fmt.Errorf("expected one statement, found %d", len(stmts))
	}
	return stmts[0], nil
}

// message authorizes a COM_QUERY (or, with prepare, a COM_STMT_PREPARE).
func (s *Session) message(g *authz.Grant, sql string, prepare bool) authz.Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	var key authz.CacheKey
	if s.o.Cache != nil {
		key = s.cacheKey(sql, prepare)
		if v, ok := s.o.Cache.Get(key, g, nil); ok {
			return v
		}
	}
	var calls myCallEnv
	if !prepare {
		calls = myCallEnv{src: s.o.Routines, dbs: s.st.dbs, on: true}
	}
	stmts, lerr, err := classifyMySQL(sql, &s.s, calls)
	switch {
	case lerr != nil:
		v := refuseMessage(sql, lerr.rule, myLexReason(lerr))
		if lerr.rule == "unparseable" {
			v.Statements[0].Syntax = mySyntaxAt(sql, lerr.stmt, lerr.pos, s.s.lex)
		}
		return v
	case err != nil:
		return s.unparseable(sql, err, prepare)
	case len(stmts) == 0:
		return authz.Verdict{Allow: true}
	}
	if prepare && len(stmts) > 1 {
		return refuseMessage(sql, "multi-statement-parse", "a prepared statement must hold exactly one statement")
	}
	next := s.st.clone()
	decisions := make([]authz.Decision, len(stmts))
	stateful := false
	for i, m := range stmts {
		st := s.resolve(m, &next, prepare)
		stateful = stateful || m.a.op != myOpNone || m.volatile
		decisions[i] = authz.Decide(g, st, s.decideOptsFor(&next))
		if decisions[i].Allow {
			s.apply(m, &next)
		}
	}
	v := authz.Batch(decisions)
	if v.Allow && !prepare {
		// After a USE the server may still be on the old database (it may
		// have refused the USE): keep both possible until the listener
		// says which (SetDatabase).
		dbs := s.st.dbs
		for i, m := range stmts {
			if m.a.op == myOpUse && decisions[i].Allow {
				dbs = addPossible(dbs, m.a.opDB)
			}
		}
		next.dbs = dbs
		s.st = next
	}
	if s.o.Cache != nil && !stateful {
		s.o.Cache.Put(key, g, v)
	}
	return v
}

func (s *Session) decideOptsFor(st *myState) *authz.DecideOptions {
	def := ""
	if len(st.dbs) > 0 {
		def = st.dbs[0]
	}
	return &authz.DecideOptions{FoldFunctions: true, DefaultSchema: def, Databases: s.s.databases}
}

func (st myState) clone() myState {
	return myState{dbs: slices.Clone(st.dbs), prepared: st.prepared, handlers: st.handlers}
}

// unparseable refuses a message the parser could not read, with the
// error the server would have given for it when the parser said where.
func (s *Session) unparseable(sql string, err error, prepare bool) authz.Verdict {
	var pe *myParseError
	if errors.As(err, &pe) && pe.pos >= 0 {
		pos := pe.pos
		if !prepare {
			if q := myParamMarker(sql, pe.start, pos, s.s.lex); q >= 0 {
				pos = q
			}
		}
		if pos < len(sql) && sql[pos] == ',' {
			// The server's lexer starts the next token at once after a
			// comma, so it shows the text after it.
			pos++
		}
		syn := mySyntaxAt(sql, pe.start, pos, s.s.lex)
		near := syn.Msg[strings.Index(syn.Msg, " near '")+1:]
		v := refuseMessage(sql, "unparseable", "could not parse this message as MySQL SQL (syntax error "+authz.OneLine(near)+"), so none of it was run")
		v.Statements[0].Syntax = syn
		return v
	}
	return refuseMessage(sql, "unparseable", "could not parse this message as MySQL SQL ("+authz.OneLine(err.Error())+"), so none of it was run")
}

// refuseMessage refuses a whole message with one decision.
func refuseMessage(sql, rule, reason string) authz.Verdict {
	return authz.Verdict{Statements: []authz.Decision{{
		Text: sql, Rule: rule, Reason: reason,
		Class: authz.Classification{Kind: "UNPARSEABLE", Required: authz.AccessAdmin},
	}}}
}

func myLexReason(e *myLexError) string {
	if e.rule == "lexical" {
		return "cannot tell how the server would read this message (" + e.msg + fmt.Sprintf(" at position %d", e.pos+1) + "), so none of it was run"
	}
	return "could not parse this message as MySQL SQL (" + e.msg + fmt.Sprintf(" at position %d", e.pos+1) + "), so none of it was run"
}

// resolve turns a classified statement into one the policy can decide on,
// with the session's state: its tables resolved against the possible
// current databases, EXECUTE replaced by what was prepared.
func (s *Session) resolve(m *myStmt, st *myState, prepare bool) *authz.Statement {
	a := m.a
	out := &authz.Statement{Text: m.text}
	if prepare && a.op != myOpNone {
		out.Facts = a.f
		out.Facts.Refusal, out.Facts.RefusalRule = m.kind+" cannot be prepared through airlock; send it as a plain query", "indirection"
		out.Class = s.classOf(m.kind, out, a, st.dbs)
		return out
	}
	switch a.op {
	case myOpPrepare:
		inner, why := s.prepareInner(a.opText)
		if inner != nil && len(st.prepared[a.opName]) >= maxCandidates {
			inner, why = nil, "PREPARE "+a.opName+": prepared "+strconv.Itoa(maxCandidates)+" times without DEALLOCATE; deallocate it first"
		}
		if inner == nil {
			out.Facts = a.f
			out.Facts.Refusal, out.Facts.RefusalRule = why, "indirection"
			out.Class = s.classOf(m.kind, out, a, st.dbs)
			return out
		}
		out.Facts = inner.a.f
		if out.Facts.Own > authz.AccessRead {
			out.Facts.OwnWhy = "PREPARE of " + inner.kind
		}
		out.Class = s.classOf(m.kind, out, inner.a, st.dbs)
		return out
	case myOpExecute:
		p := combinePrepared(st.prepared[a.opName])
		if p == nil {
			out.Facts = a.f
			out.Facts.Refusal, out.Facts.RefusalRule = "EXECUTE "+a.opName+": no statement of that name was prepared in this session through airlock, so airlock cannot tell what it runs; PREPARE it again", "indirection"
			out.Class = s.classOf(m.kind, out, a, st.dbs)
			return out
		}
		dbs := slices.Clone(p.dbs)
		for _, d := range st.dbs {
			if !slices.Contains(dbs, d) {
				dbs = append(dbs, d)
			}
		}
		out.Facts = p.stmt.a.f
		out.Facts.Needs = append(slices.Clone(out.Facts.Needs), a.f.Needs...)
		if out.Facts.Own > authz.AccessRead {
			out.Facts.OwnWhy = "EXECUTE of " + p.stmt.kind
		}
		out.Class = s.classOf(m.kind, out, p.stmt.a, dbs)
		return out
	case myOpHandlerRead:
		t, ok := st.handlers[a.opName]
		if !ok && a.handlerTable != nil {
			t = *a.handlerTable
		}
		cp := *a
		cp.tables = append([]myTable{t}, a.tables...)
		a = &cp
	}
	out.Facts = a.f
	out.Class = s.classOf(m.kind, out, a, st.dbs)
	return out
}

// prepareInner classifies the text of PREPARE ... FROM '...'.
func (s *Session) prepareInner(text string) (*myStmt, string) {
	stmts, lerr, err := classifyMySQL(text, &s.s, myCallEnv{})
	switch {
	case lerr != nil:
		return nil, "PREPARE: " + myLexReason(lerr)
	case err != nil:
		return nil, "PREPARE: could not parse the prepared statement (" + authz.OneLine(err.Error()) + ")"
	case len(stmts) != 1:
		return nil, "PREPARE: a prepared statement must hold exactly one statement"
	case stmts[0].a.op != myOpNone:
		return nil, "PREPARE: " + stmts[0].kind + " cannot be prepared through airlock"
	}
	return stmts[0], ""
}

// combinePrepared merges the candidates of a name into one statement
// that needs what any of them needs and touches what any of them touches.
func combinePrepared(cands []*myPrepared) *myPrepared {
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	a := &myAnalysis{}
	var kinds, dbs []string
	for _, c := range cands {
		ca := c.stmt.a
		off := len(a.f.Funcs)
		a.f.Funcs = append(a.f.Funcs, ca.f.Funcs...)
		for _, n := range ca.f.Needs {
			if n.Fn >= 0 {
				n.Fn += off
			}
			a.f.Needs = append(a.f.Needs, n)
		}
		if ca.f.Own > a.f.Own {
			a.f.Own = ca.f.Own
		}
		a.tables = append(a.tables, ca.tables...)
		a.dbs = append(a.dbs, ca.dbs...)
		for _, x := range []struct {
			dst *string
			src string
		}{
			{&a.f.Unresolved, ca.f.Unresolved}, {&a.f.Unfiltered, ca.f.Unfiltered}, {&a.f.Drops, ca.f.Drops},
			{&a.f.ServerFiles, ca.f.ServerFiles}, {&a.f.FileLoad, ca.f.FileLoad},
		} {
			if *x.dst == "" {
				*x.dst = x.src
			}
		}
		if !slices.Contains(kinds, c.stmt.kind) {
			kinds = append(kinds, c.stmt.kind)
		}
		for _, d := range c.dbs {
			if !slices.Contains(dbs, d) {
				dbs = append(dbs, d)
			}
		}
	}
	return &myPrepared{stmt: &myStmt{kind: strings.Join(kinds, " or "), a: a}, dbs: dbs}
}

// classOf fills the statement's resolved tables and database checks from
// the analysis, and gives its Classification.
func (s *Session) classOf(kind string, out *authz.Statement, a *myAnalysis, dbs []string) authz.Classification {
	f := &out.Facts
	f.Tables = nil
	var read, written, funcs []string
	for _, t := range a.tables {
		candidates := []string{t.db}
		if t.db == "" {
			candidates = dbs
			if len(dbs) == 0 {
				if f.Unresolved == "" {
					f.Unresolved = "no database is selected, so " + t.name + " names no table"
				}
				continue
			}
		}
		for i, db := range candidates {
			ref := authz.TableRef{Schema: db, Name: t.name, Written: t.written, System: strings.EqualFold(db, "information_schema")}
			f.Tables = append(f.Tables, ref)
			if !s.databaseAllowed(db) && f.Database == "" {
				f.Database = db
				f.DatabaseWhat = "reads a table in"
				if t.written {
					f.DatabaseWhat = "writes a table in"
				}
			}
			if i == 0 {
				if t.written {
					written = append(written, ref.String())
				} else {
					read = append(read, ref.String())
				}
			}
		}
	}
	for _, db := range a.dbs {
		if !s.databaseAllowed(db) && f.Database == "" {
			f.Database, f.DatabaseWhat = db, "reaches"
			if a.op == myOpUse {
				f.DatabaseWhat = "switches to"
			}
		}
	}
	if len(a.calls) > 0 {
		// A CALL no resolver decided.
		f.Needs = append(slices.Clone(f.Needs), authz.Need{Level: authz.AccessAdmin, Why: "CALL runs a procedure airlock cannot inspect", Fn: -1})
		if f.Unresolved == "" {
			f.Unresolved = "CALL runs a procedure that may touch any table"
		}
	}
	for i := range f.Funcs {
		funcs = append(funcs, f.Funcs[i].Display())
	}
	c := authz.Classification{Kind: kind, TablesRead: sortedSet(read), TablesWritten: sortedSet(written), Functions: sortedSet(funcs)}
	c.Required, c.Why = f.Required()
	return c
}

// apply records what an allowed statement changes in the session.
func (s *Session) apply(m *myStmt, st *myState) {
	a := m.a
	switch a.op {
	case myOpUse:
		// Within the message the statements after a USE run only if it
		// succeeded; after it, the server may still be on the old one.
		st.dbs = []string{a.opDB}
	case myOpPrepare:
		inner, _ := s.prepareInner(a.opText)
		if inner != nil {
			st.prepared = maps1(st.prepared)
			st.prepared[a.opName] = append(slices.Clone(st.prepared[a.opName]), &myPrepared{stmt: inner, dbs: slices.Clone(st.dbs)})
		}
	case myOpDeallocate:
		if _, ok := st.prepared[a.opName]; ok {
			st.prepared = maps1(st.prepared)
			delete(st.prepared, a.opName)
		}
	case myOpHandlerOpen:
		if a.handlerTable != nil {
			st.handlers = mapsT(st.handlers)
			t := *a.handlerTable
			if t.db == "" && len(st.dbs) > 0 {
				t.db = st.dbs[0]
			}
			st.handlers[a.opName] = t
		}
	case myOpHandlerClose:
		if _, ok := st.handlers[a.opName]; ok {
			st.handlers = mapsT(st.handlers)
			delete(st.handlers, a.opName)
		}
	}
}

// maps1 and mapsT copy a map before a change, so a refused message leaves
// the session's maps as they were.
func maps1(m map[string][]*myPrepared) map[string][]*myPrepared {
	out := make(map[string][]*myPrepared, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func mapsT(m map[string]myTable) map[string]myTable {
	out := make(map[string]myTable, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}
