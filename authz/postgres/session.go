package postgres

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/airlockhq/airlock/authz"
)

// Options is what the Postgres authorizer needs to know about the
// resource and the session.
type Options struct {
	// DefaultSchema is where unqualified table names resolve (after the
	// pg_catalog relations, which Postgres searches first); "public" when
	// empty. SET search_path is admin, so it stays true for the session.
	DefaultSchema string
	// Cache, when set, keeps decisions on whole messages (see
	// DecisionCache); share one across sessions.
	Cache *authz.DecisionCache
}

// Session authorizes the statements of one Postgres client session and
// keeps what later statements depend on: what each prepared statement
// (SQL PREPARE, or a named Parse message) runs, so that EXECUTE inherits
// the decision on what was prepared. The gateway must use one per client
// session and give it every Query and Parse of that session, in order. The
// state changes only when a whole message is allowed. It is safe for
// concurrent use.
type Session struct {
	mu sync.Mutex
	o  Options
	// prepared maps a prepared statement's name to what it may run. A
	// name prepared again without DEALLOCATE has more than one candidate:
	// the server refuses the second PREPARE (or Parse) unless the first
	// failed, and airlock does not see which, so an EXECUTE must be
	// allowed as every candidate.
	prepared map[string][]*pgPrepared
	// stateless is set for the package-level Query, which has no
	// session to remember statements in.
	stateless bool

	// settings names the session's settings in cache keys.
	settings string
	// keyBuf and consts are the masked key of the message being decided
	// and its constants (mask.go), buffers kept from message to message.
	keyBuf []byte
	consts []maskConst
	// decisions holds the statements of the verdict Query last returned
	// from the cache, kept for the next.
	decisions []authz.Decision
	// parsed counts the messages this session parsed, and maskedHits
	// those it found under their masked key, for tests.
	parsed, maskedHits int
	// maskAll makes the session keep verdicts under the masked key even
	// when a decision read a constant: a broken cache, for tests to show
	// that the oracle catches one.
	maskAll bool
}

// maxCandidates bounds the statements one name may stand for; see
// Session.prepared.
const maxCandidates = 4

// pgPrepared is what a prepared statement runs, resolved.
type pgPrepared struct {
	kind string
	// text is the PREPARE (or the Parse's query) that made it.
	text string
	f    authz.Facts
}

// NewSession starts the authorizer's state for one client session.
func NewSession(o Options) *Session { return &Session{o: o} }

// Query decides on one Query message under g; see the package-level
// Query for the verdict's shape. PREPARE, EXECUTE and DEALLOCATE follow
// the session: EXECUTE of a statement this session prepared is decided as
// that statement (with the grant in force now), EXECUTE of any other name
// is refused.
//
// So that a repeated message is decided without allocating, sql may be a
// view of the caller's buffer when it is no longer than
// authz.MaxCachedText: the session keeps copies of what it keeps. The
// verdict's texts are views of sql, and its Statements may be the
// session's own slice, which its next Query reuses: use the verdict
// before then, or copy it.
func (s *Session) Query(g *authz.Grant, sql string) authz.Verdict {
	return s.message(g, "", sql, false)
}

// Parse decides on an extended-protocol Parse message: one statement,
// remembered under name (when not empty and allowed) so that a later SQL
// EXECUTE of that name is decided as it.
func (s *Session) Parse(g *authz.Grant, name, sql string) authz.Verdict {
	return s.message(g, name, sql, true)
}

// CloseStatement forgets a named statement, for a Close message that
// closes it; forward the Close, then call this.
func (s *Session) CloseStatement(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.prepared[name]; ok {
		s.prepared = maps.Clone(s.prepared)
		delete(s.prepared, name)
	}
}

// Prepared decides, under g, on running the statement prepared under
// name, as an EXECUTE of it would be decided: for a Bind of a statement
// made with SQL PREPARE, which the gateway did not see as a Parse. ok is
// false when this session prepared nothing under that name.
func (s *Session) Prepared(g *authz.Grant, name string) (v authz.Verdict, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cands := s.prepared[name]
	if len(cands) == 0 {
		return authz.Verdict{}, false
	}
	st := &authz.Statement{Text: cands[len(cands)-1].text, Class: authz.Classification{Kind: "EXECUTE"}}
	st.Facts.Own = authz.AccessRead
	for _, c := range cands {
		mergeExecuted(st, c)
	}
	d := authz.Decide(g, st, &authz.DecideOptions{FoldPatterns: true, DefaultSchema: s.schema()})
	return authz.Verdict{Allow: d.Allow, Statements: []authz.Decision{d}}, true
}

func (s *Session) schema() string {
	if s.o.DefaultSchema != "" {
		return s.o.DefaultSchema
	}
	return defaultPGSchema
}

func (s *Session) message(g *authz.Grant, name, sql string, parse bool) authz.Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	opts := &authz.DecideOptions{FoldPatterns: true, DefaultSchema: s.schema()}
	var key authz.CacheKey
	cache := s.o.Cache
	cacheable := cache != nil && !(parse && name != "")
	if cacheable {
		if s.settings == "" {
			s.settings = "postgres|" + opts.DefaultSchema
		}
		key = authz.CacheKey{Settings: s.settings, Text: sql, Prepare: parse}
		var dst []authz.Decision
		if !parse {
			// A Parse's verdict is kept with its statement; a Query's
			// is used before the next.
			dst = s.decisions
		}
		if v, ok := s.cached(cache, &key, g, sql, dst); ok {
			if !parse && v.Statements != nil {
				s.decisions = v.Statements[:0]
			}
			return v
		}
	}
	if len(sql) <= authz.MaxCachedText {
		// Perhaps a view of the caller's buffer (see Query), and the
		// session keeps parts of it: prepared statements' texts. (The
		// cache copies what it keeps itself.)
		sql = strings.Clone(sql)
	}
	s.parsed++
	stmts, err := classifyPG(sql)
	if err != nil {
		return unparseablePG(sql, err)
	}
	if len(stmts) == 0 {
		return authz.Verdict{Allow: true}
	}
	if parse && len(stmts) > 1 {
		// The server refuses it too, with this error.
		return authz.Verdict{Statements: []authz.Decision{{Text: sql, Rule: "multi-statement-parse",
			Reason: "a prepared statement must hold exactly one statement",
			Class:  authz.Classification{Kind: "UNPARSEABLE", Required: authz.AccessAdmin},
			Syntax: &authz.SyntaxError{Msg: "cannot insert multiple commands into a prepared statement", Routine: "exec_parse_message", File: "postgres.c"}}}}
	}
	prepared := s.prepared // copied before any change
	changed := false
	stateful := false
	decisions := make([]authz.Decision, len(stmts))
	resolved := make([]*authz.Statement, len(stmts))
	for i := range stmts {
		m := &stmts[i]
		a := m.a
		st := m.resolve(opts.DefaultSchema)
		if a.exec != "" || a.prepName != "" || a.dealloc != "" || a.deallocAll {
			stateful = true
		}
		if a.exec != "" {
			p, ok := prepared[a.exec]
			ok = ok && len(p) > 0
			switch {
			case s.stateless && !ok:
				st.Facts.Refusal, st.Facts.RefusalRule = "EXECUTE "+a.exec+": airlock cannot tell what a prepared statement runs without the session's state; "+
					"PREPARE and EXECUTE it in one session through airlock, or use the extended protocol", "indirection"
			case !ok:
				st.Facts.Refusal, st.Facts.RefusalRule = "EXECUTE "+a.exec+": no statement of that name was prepared in this session through airlock, so airlock cannot tell what it runs; PREPARE it again", "indirection"
			default:
				for _, c := range p {
					mergeExecuted(st, c)
				}
			}
		}
		for _, n := range []string{a.prepName, name} {
			if n != "" && len(prepared[n]) >= maxCandidates {
				st.Facts.Refusal, st.Facts.RefusalRule = "prepared statement "+n+" was prepared "+strconv.Itoa(maxCandidates)+" times without DEALLOCATE or Close; deallocate it first", "indirection"
			}
		}
		resolved[i] = st
		decisions[i] = authz.Decide(g, st, opts)
		if !decisions[i].Allow {
			continue
		}
		// Apply what the statement leaves behind, for the statements after
		// it in this message.
		if !changed && (a.prepName != "" || a.dealloc != "" || a.deallocAll || parse && name != "") {
			prepared = maps.Clone(prepared)
			if prepared == nil {
				prepared = map[string][]*pgPrepared{}
			}
			changed = true
		}
		switch {
		case a.deallocAll:
			clear(prepared)
		case a.dealloc != "":
			delete(prepared, a.dealloc)
		case a.prepName != "":
			f := st.Facts
			f.Own, f.OwnWhy = a.prepOwn, ""
			prepared[a.prepName] = append(slices.Clone(prepared[a.prepName]), &pgPrepared{kind: a.prepKind, text: m.text, f: f})
		}
		if parse && name != "" {
			prepared[name] = append(slices.Clone(prepared[name]), &pgPrepared{kind: m.kind, text: m.text, f: st.Facts})
		}
	}
	v := authz.Batch(decisions)
	if v.Allow && changed {
		s.prepared = prepared
	}
	if cacheable && !stateful {
		s.keep(cache, key, g, v, stmts)
	}
	return v
}

// cached looks a message up in the cache: under its masked key, when the
// scanner gives it one (set in key), and under its exact text. A verdict
// kept under the masked key gets this message's own statement texts.
//
// The lookup keys are views of sql and of the session's key buffer, which
// keep uses as they are (with s.consts) on a miss: the cache copies the
// key it keeps. The verdict's statements are appended to dst (see
// DecisionCache.Get).
func (s *Session) cached(cache *authz.DecisionCache, key *authz.CacheKey, g *authz.Grant, sql string, dst []authz.Decision) (authz.Verdict, bool) {
	masked := false
	if len(sql) <= authz.MaxCachedText {
		s.keyBuf, s.consts, masked = maskPG(sql, s.keyBuf[:0], s.consts[:0])
	}
	if !masked {
		return cache.Get(*key, g, dst)
	}
	key.Masked = unsafe.String(unsafe.SliceData(s.keyBuf), len(s.keyBuf))
	v, at, ok := cache.GetMasked(*key, g, dst)
	if !ok || at == nil {
		return v, ok
	}
	s.maskedHits++
	for i, sp := range at {
		start, end := maskFromKey(s.consts, sp.Start), maskFromKey(s.consts, sp.End)
		if start > end || end > len(sql) {
			return authz.Verdict{}, false // cannot be: the same key has the same text around its constants
		}
		v.Statements[i].Text = sql[start:end]
	}
	return v, true
}

// keep puts a verdict in the cache: under the message's masked key when
// it has one and no statement's decision read a constant, else under its
// exact text.
func (s *Session) keep(cache *authz.DecisionCache, key authz.CacheKey, g *authz.Grant, v authz.Verdict, stmts []pgStmt) {
	literal := false
	for i := range stmts {
		literal = literal || stmts[i].a.literal
	}
	if key.Masked != "" && (!literal || s.maskAll) {
		at := make([]authz.TextSpan, len(stmts))
		ok := len(v.Statements) == len(stmts)
		for i := 0; ok && i < len(stmts); i++ {
			m := &stmts[i]
			start, ok1 := maskToKey(s.consts, m.start)
			end, ok2 := maskToKey(s.consts, m.end)
			ok = ok1 && ok2 && v.Statements[i].Text == m.text
			at[i] = authz.TextSpan{Start: start, End: end}
		}
		if ok {
			cache.PutMasked(key, g, v, at)
			return
		}
	}
	cache.Put(key, g, v)
}

// mergeExecuted adds to an EXECUTE (or EXPLAIN ANALYZE EXECUTE, or CREATE
// TABLE AS EXECUTE) what the prepared statement needs.
func mergeExecuted(st *authz.Statement, p *pgPrepared) {
	f := &st.Facts
	off := len(f.Funcs)
	f.Funcs = append(slices.Clone(f.Funcs), p.f.Funcs...)
	needs := slices.Clone(f.Needs)
	if p.f.Own > authz.AccessRead {
		needs = append(needs, authz.Need{Level: p.f.Own, Why: "EXECUTE of " + p.kind, Fn: -1})
	}
	for _, n := range p.f.Needs {
		if n.Fn >= 0 {
			n.Fn += off
		}
		needs = append(needs, n)
	}
	f.Needs = needs
	f.Tables = append(slices.Clone(f.Tables), p.f.Tables...)
	for _, x := range []struct {
		dst *string
		src string
	}{
		{&f.Unresolved, p.f.Unresolved}, {&f.Unfiltered, p.f.Unfiltered}, {&f.Drops, p.f.Drops},
		{&f.ServerFiles, p.f.ServerFiles},
	} {
		if *x.dst == "" {
			*x.dst = x.src
		}
	}
	var read, written, funcs []string
	for _, t := range f.Tables {
		if t.Written {
			written = append(written, t.String())
		} else {
			read = append(read, t.String())
		}
	}
	for i := range f.Funcs {
		funcs = append(funcs, f.Funcs[i].Display())
	}
	st.Class.TablesRead, st.Class.TablesWritten, st.Class.Functions = sortedSet(read), sortedSet(written), sortedSet(funcs)
	st.Class.Required, st.Class.Why = f.Required()
}
