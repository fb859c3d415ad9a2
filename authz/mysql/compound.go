package mysql

import (
	"strings"

	"github.com/pingcap/tidb/pkg/parser/ast"

	"github.com/airlockhq/airlock/authz"
)

// MySQL compound statements. Stored procedures, functions, triggers and
// events have bodies in the compound-statement syntax (BEGIN ... END with
// DECLAREd variables, conditions, cursors and handlers; IF, CASE, LOOP,
// WHILE, REPEAT, labels, LEAVE, ITERATE, RETURN, OPEN/FETCH/CLOSE,
// SIGNAL/RESIGNAL, GET DIAGNOSTICS), with ';' inside. The TiDB parser
// reads little of it, so airlock reads the compound syntax itself: this
// reader splits it, hands each plain SQL statement of a body to the TiDB
// parser as it does any statement, and each expression (a condition, a
// DEFAULT, a RETURN value) as the select list of a SELECT. What it cannot
// read is refused.
//
// A routine's body is what runs when it is called, a trigger's on every
// row its table changes, an event's on its schedule: so creating one needs
// ddl access and whatever its body's statements need, and the body's
// tables count against the grant's table scope. MariaDB's anonymous
// blocks (BEGIN NOT ATOMIC ... END) and compound statements outside a
// routine run at once and need what their statements need; SIGNAL,
// RESIGNAL and GET DIAGNOSTICS need read.
//
// A CALL is decided by what the procedure runs (see Routines).

// myCompoundLead reports whether a cleaned statement is one this reader
// reads rather than the TiDB parser. Every statement passes here, so it
// looks at one word unless the statement starts with CREATE, ALTER or
// DROP.
func myCompoundLead(clean string) bool {
	i := 0
	for i < len(clean) && isMySpace(clean[i]) {
		i++
	}
	w, i := myWordAt(clean, i)
	if len(w) < 2 || len(w) > 8 {
		return false
	}
	var low [8]byte
	for k := 0; k < len(w); k++ {
		low[k] = w[k] | 0x20 // ASCII letters to lower case; others do not match below
	}
	switch string(low[:len(w)]) {
	case "if", "case", "loop", "while", "repeat", "signal", "resignal":
		return true
	case "get":
		w, _ := myWordAt(clean, mySkipSpace(clean, i))
		return strings.EqualFold(w, "diagnostics") || strings.EqualFold(w, "current") || strings.EqualFold(w, "stacked")
	case "begin":
		w, _ := myWordAt(clean, mySkipSpace(clean, i))
		return strings.EqualFold(w, "not")
	case "create", "alter", "drop":
		return myRoutineDDL(strings.ToLower(w), clean[i:min(len(clean), i+400)])
	}
	// A label outside a routine is a syntax error for the server too;
	// the TiDB parser says so.
	return false
}

// myRoutineDDL reports whether the text after CREATE, ALTER or DROP (the
// lead word) names a procedure, function, trigger or event: CREATE [OR
// REPLACE] [DEFINER = who] [AGGREGATE] PROCEDURE ..., ALTER [DEFINER =
// who] EVENT ..., DROP FUNCTION ...
func myRoutineDDL(lead, rest string) bool {
	toks, err := myTokens(rest, myLexOpts{})
	if err != nil {
		return false
	}
	k := 0
	at := func(kw string) bool { return k < len(toks) && toks[k].is(kw) }
	text := func(s string) bool { return k < len(toks) && !toks[k].ident && toks[k].text == s }
	if lead == "create" && at("or") {
		k += 2
	}
	if lead != "drop" && at("definer") {
		k++
		if !text("=") {
			return false
		}
		k++
		if at("current_user") {
			k++
			if text("(") {
				k += 2
			}
		} else {
			k++
			if text("@") {
				k += 2
			}
		}
	}
	if lead == "create" && at("aggregate") {
		k++
	}
	return at("procedure") || at("function") || at("event") || lead != "alter" && at("trigger")
}

func mySkipSpace(s string, i int) int {
	for i < len(s) && isMySpace(s[i]) {
		i++
	}
	return i
}

// myWordAt returns the unquoted word at i and the offset after it.
func myWordAt(s string, i int) (string, int) {
	j := i
	for j < len(s) && isWordByte(s[j]) {
		j++
	}
	return s[i:j], j
}

// myReadError is where and why the compound reader stopped. pos is an
// offset in the message, or -1 when the text is valid MySQL that airlock
// does not read (no syntax error is owed then).
type myReadError struct {
	pos int
	msg string
	err error // the TiDB parser's error, when it gave up on a piece
}

func (e *myReadError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return e.msg
}

// myReader reads one compound statement.
type myReader struct {
	sql   string // the message, and the message with comments blanked
	clean string
	toks  []myToken // offsets in the message
	i     int
	set   *mySettings
	// a collects what the statement and everything in its body do.
	a *myAnalysis
	// what names the routine in reasons, "procedure app.p"; db is its
	// database ("" when unqualified: the current one).
	what, db string
	// scopes are the local variables visible, innermost last: routine
	// parameters, then each BEGIN block's DECLAREs.
	scopes [][]string
	// trigger is set in a trigger's body, where NEW and OLD are its row.
	trigger bool
	// calls looks up procedures for CALL; nil leaves CALL unresolved.
	calls *myCallResolver
	// call is set when reading a definition for a CALL.
	call bool
	// inRoutine is set in the body of a routine, trigger or event (not
	// of a compound statement that runs at once).
	inRoutine bool
}

func (r *myReader) peek(k int) *myToken {
	if r.i+k < len(r.toks) {
		return &r.toks[r.i+k]
	}
	return nil
}

func (r *myReader) at(kw string) bool {
	t := r.peek(0)
	return t != nil && t.is(kw)
}

func (r *myReader) atText(s string) bool {
	t := r.peek(0)
	return t != nil && !t.ident && t.text == s
}

// pos is the offset of the next token, or the end of the text.
func (r *myReader) pos() int {
	if t := r.peek(0); t != nil {
		return t.start
	}
	return len(r.clean)
}

func (r *myReader) fail(msg string) *myReadError {
	return &myReadError{pos: r.pos(), msg: msg}
}

func (r *myReader) expect(kw string) *myReadError {
	if !r.at(kw) {
		return r.fail("expected " + strings.ToUpper(kw))
	}
	r.i++
	return nil
}

func (r *myReader) expectText(s string) *myReadError {
	if !r.atText(s) {
		return r.fail("expected " + s)
	}
	r.i++
	return nil
}

// str reads a string literal.
func (r *myReader) str() *myReadError {
	t := r.peek(0)
	if t == nil || t.ident || t.word || t.text[0] != '\'' && t.text[0] != '"' {
		return r.fail("expected a string")
	}
	r.i++
	return nil
}

// ident reads an identifier (a word or a `quoted` one).
func (r *myReader) ident() (string, *myReadError) {
	t := r.peek(0)
	if t == nil || !t.ident {
		return "", r.fail("expected a name")
	}
	r.i++
	return t.text, nil
}

// qualified reads name or db.name.
func (r *myReader) qualified() (db, name string, err *myReadError) {
	if name, err = r.ident(); err != nil {
		return
	}
	if r.atText(".") {
		r.i++
		db = name
		name, err = r.ident()
	}
	return
}

// readCompound reads the compound statement starting at offset start of
// the message into a, and returns its kind and the offset after it.
//
// With call set, the statement is a procedure's definition read for a
// CALL: its DEFINER is the procedure's, not the caller's choice.
func readCompound(sql, clean string, start int, set *mySettings, calls *myCallResolver, a *myAnalysis, call bool) (string, int, *myReadError) {
	toks, err := myTokens(clean[start:], set.lex)
	if err != nil {
		return "", 0, &myReadError{pos: start, msg: err.Error()}
	}
	for k := range toks {
		toks[k].start += start
		toks[k].end += start
	}
	r := &myReader{sql: sql, clean: clean, toks: toks, set: set, a: a, calls: calls, call: call}
	a.written = map[*ast.TableName]bool{}
	a.skip = map[*ast.TableName]bool{}
	kind, rerr := r.top()
	if rerr != nil {
		return "", 0, rerr
	}
	end := len(clean)
	if t := r.peek(0); t != nil {
		if t.text != ";" || t.ident {
			return "", 0, r.fail("unexpected text after the statement")
		}
		end = t.start
	}
	return kind, end, nil
}

// top reads the statement a message holds.
func (r *myReader) top() (string, *myReadError) {
	switch {
	case r.at("create"):
		return r.create()
	case r.at("alter"):
		return r.alter()
	case r.at("drop"):
		return r.drop()
	}
	lead := r.peek(0)
	kind := strings.ToUpper(lead.text)
	switch {
	case lead.is("begin"):
		kind = "BEGIN NOT ATOMIC"
	case lead.is("get"):
		kind = "GET DIAGNOSTICS"
	}
	r.what = "the compound statement"
	r.a.f.Own = authz.AccessRead
	if err := r.stmt(); err != nil {
		return "", err
	}
	return kind, nil
}

// stmt reads one statement of a body (without its ';').
func (r *myReader) stmt() *myReadError {
	t := r.peek(0)
	if t == nil || t.text == ";" && !t.ident {
		return r.fail("expected a statement")
	}
	label := ""
	if t.ident && r.peek(1) != nil && r.peek(1).text == ":" && !r.peek(1).ident {
		label = t.text
		r.i += 2
		if !(r.at("begin") || r.at("loop") || r.at("while") || r.at("repeat") || r.at("for")) {
			return r.fail("a label must precede BEGIN, LOOP, WHILE, REPEAT or FOR")
		}
	}
	switch {
	case r.at("begin"):
		return r.block(label)
	case r.at("loop"):
		r.i++
		return r.loopEnd("loop", label, r.list("end"))
	case r.at("while"):
		r.i++
		if err := r.expr("", "do"); err != nil {
			return err
		}
		r.i++
		return r.loopEnd("while", label, r.list("end"))
	case r.at("repeat"):
		r.i++
		if err := r.list("until"); err != nil {
			return err
		}
		r.i++
		if err := r.expr("", "end"); err != nil {
			return err
		}
		return r.loopEnd("repeat", label, nil)
	case r.at("for"):
		return &myReadError{pos: -1, msg: "FOR loops are not read by airlock; use WHILE or a cursor with LOOP"}
	case r.at("if"):
		return r.ifStmt()
	case r.at("case"):
		return r.caseStmt()
	case r.at("leave"), r.at("iterate"):
		r.i++
		_, err := r.ident()
		return err
	case r.at("return"):
		r.i++
		return r.expr("", ";")
	case r.at("open"), r.at("close"):
		r.i++
		_, err := r.ident()
		return err
	case r.at("fetch"):
		return r.fetch()
	case r.at("signal"), r.at("resignal"):
		return r.signal()
	case r.at("get"):
		return r.diagnostics()
	case r.at("declare"):
		return r.fail("DECLARE is allowed only at the start of a BEGIN ... END block")
	}
	return r.plain()
}

// block reads BEGIN [NOT ATOMIC] declarations statements END [label].
func (r *myReader) block(label string) *myReadError {
	r.i++
	if r.at("not") {
		r.i++
		if err := r.expect("atomic"); err != nil {
			return err
		}
	}
	r.scopes = append(r.scopes, nil)
	defer func() { r.scopes = r.scopes[:len(r.scopes)-1] }()
	for r.at("declare") {
		if err := r.declare(); err != nil {
			return err
		}
		if err := r.expectText(";"); err != nil {
			return err
		}
	}
	if err := r.list("end"); err != nil {
		return err
	}
	r.i++
	return r.endLabel(label)
}

// list reads statements, each ended by ';', up to one of the stop
// keywords (not consumed).
func (r *myReader) list(stops ...string) *myReadError {
	for {
		t := r.peek(0)
		if t == nil {
			return r.fail("expected " + strings.ToUpper(stops[0]))
		}
		for _, s := range stops {
			if t.is(s) {
				return nil
			}
		}
		if err := r.stmt(); err != nil {
			return err
		}
		if err := r.expectText(";"); err != nil {
			return err
		}
	}
}

// loopEnd reads END kind [label] after a loop's statements.
func (r *myReader) loopEnd(kind, label string, err *myReadError) *myReadError {
	if err != nil {
		return err
	}
	if err := r.expect("end"); err != nil {
		return err
	}
	if err := r.expect(kind); err != nil {
		return err
	}
	return r.endLabel(label)
}

// endLabel reads the label that may close a labelled block or loop.
func (r *myReader) endLabel(label string) *myReadError {
	t := r.peek(0)
	if t == nil || !t.ident || label == "" {
		return nil
	}
	if !strings.EqualFold(t.text, label) {
		return r.fail("the end label does not match " + label)
	}
	r.i++
	return nil
}

// ifStmt reads IF c THEN ... [ELSEIF c THEN ...] [ELSE ...] END IF.
func (r *myReader) ifStmt() *myReadError {
	return r.arms("if", "if", "elseif")
}

// caseStmt reads CASE [v] WHEN x THEN ... [ELSE ...] END CASE.
func (r *myReader) caseStmt() *myReadError {
	r.i++
	if !r.at("when") {
		if err := r.expr("", "when"); err != nil {
			return err
		}
	}
	if !r.at("when") {
		return r.fail("expected WHEN")
	}
	return r.arms("case", "when", "when")
}

// arms reads the arms of IF and CASE, the first led by first, the others
// by next: a condition, THEN and statements each; then [ELSE statements]
// END kind.
func (r *myReader) arms(kind, first, next string) *myReadError {
	for r.at(first) || r.at(next) {
		r.i++
		if err := r.expr("", "then"); err != nil {
			return err
		}
		r.i++
		if err := r.list(next, "else", "end"); err != nil {
			return err
		}
	}
	if r.at("else") {
		r.i++
		if err := r.list("end"); err != nil {
			return err
		}
	}
	if err := r.expect("end"); err != nil {
		return err
	}
	return r.expect(kind)
}

// declare reads one DECLARE: variables, a condition, a cursor or a
// handler.
func (r *myReader) declare() *myReadError {
	r.i++
	scope := &r.scopes[len(r.scopes)-1]
	switch {
	case r.peek(1) != nil && r.peek(1).is("condition"):
		r.i += 2
		if err := r.expect("for"); err != nil {
			return err
		}
		return r.conditionValue()
	case (r.at("continue") || r.at("exit") || r.at("undo")) && r.peek(1) != nil && r.peek(1).is("handler"):
		r.i += 2
		if err := r.expect("for"); err != nil {
			return err
		}
		for {
			if err := r.handlerCondition(); err != nil {
				return err
			}
			if !r.atText(",") {
				break
			}
			r.i++
		}
		return r.stmt()
	case r.peek(1) != nil && r.peek(1).is("cursor"):
		r.i += 2
		if r.atText("(") {
			return &myReadError{pos: -1, msg: "cursors with parameters are not read by airlock"}
		}
		if err := r.expect("for"); err != nil {
			return err
		}
		return r.plain()
	}
	var names []string
	for {
		name, err := r.ident()
		if err != nil {
			return err
		}
		names = append(names, name)
		if !r.atText(",") {
			break
		}
		r.i++
	}
	if err := r.skipType(";"); err != nil {
		return err
	}
	if r.at("default") {
		r.i++
		if err := r.expr("", ";"); err != nil {
			return err
		}
	}
	*scope = append(*scope, names...)
	return nil
}
