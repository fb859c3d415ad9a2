package mysql

import (
	"strings"

	"github.com/pingcap/tidb/pkg/parser/ast"

	"github.com/airlockhq/airlock/authz"
)

// The pieces of a compound statement's body: conditions, cursor fetches,
// SIGNAL and GET DIAGNOSTICS, expressions and plain statements, and how
// what they do is added to the statement's analysis.

// declared reports whether name is a local variable (or parameter) where
// the reader is. Names are case-insensitive.
func (r *myReader) declared(name string) bool {
	for _, s := range r.scopes {
		for _, n := range s {
			if strings.EqualFold(n, name) {
				return true
			}
		}
	}
	return false
}

// conditionValue reads SQLSTATE [VALUE] 'xxxxx' or an error number.
func (r *myReader) conditionValue() *myReadError {
	if r.at("sqlstate") {
		r.i++
		if r.at("value") {
			r.i++
		}
		if t := r.peek(0); t == nil || t.ident || t.text[0] != '\'' && t.text[0] != '"' {
			return r.fail("expected an SQLSTATE string")
		}
		r.i++
		return nil
	}
	if t := r.peek(0); t != nil && t.word && t.text[0] >= '0' && t.text[0] <= '9' {
		r.i++
		return nil
	}
	return r.fail("expected SQLSTATE or an error number")
}

// handlerCondition reads one condition of DECLARE ... HANDLER FOR.
func (r *myReader) handlerCondition() *myReadError {
	switch {
	case r.at("sqlwarning"), r.at("sqlexception"):
		r.i++
		return nil
	case r.at("not"):
		r.i++
		return r.expect("found")
	case r.at("sqlstate"):
		return r.conditionValue()
	}
	if t := r.peek(0); t != nil && t.ident {
		r.i++
		return nil
	}
	return r.fail("expected a condition")
}

// fetch reads FETCH [[NEXT] FROM] cursor INTO targets.
func (r *myReader) fetch() *myReadError {
	r.i++
	if r.at("next") {
		r.i++
		if err := r.expect("from"); err != nil {
			return err
		}
	} else if r.at("from") {
		r.i++
	}
	if _, err := r.ident(); err != nil {
		return err
	}
	if err := r.expect("into"); err != nil {
		return err
	}
	return r.targets()
}

// targets reads a list of variables a statement assigns: local ones or
// @user variables.
func (r *myReader) targets() *myReadError {
	for {
		if r.atText("@") {
			r.i++
			if _, err := r.ident(); err != nil {
				return err
			}
		} else {
			t := r.peek(0)
			if t == nil || !t.ident || !r.declared(t.text) {
				return r.fail("expected a declared variable")
			}
			r.i++
		}
		if !r.atText(",") {
			return nil
		}
		r.i++
	}
}

// signal reads SIGNAL / RESIGNAL [condition] [SET item = value, ...].
func (r *myReader) signal() *myReadError {
	resignal := r.at("resignal")
	r.i++
	switch {
	case r.at("sqlstate"):
		if err := r.conditionValue(); err != nil {
			return err
		}
	case r.at("set"), r.atText(";"), r.peek(0) == nil:
		if !resignal {
			return r.fail("expected SQLSTATE or a condition name")
		}
	default:
		if _, err := r.ident(); err != nil {
			return err
		}
	}
	if !r.at("set") {
		return nil
	}
	r.i++
	for {
		if _, err := r.ident(); err != nil {
			return err
		}
		if err := r.expectText("="); err != nil {
			return err
		}
		if err := r.expr("", ",", ";"); err != nil {
			return err
		}
		if !r.atText(",") {
			return nil
		}
		r.i++
	}
}

// diagnostics reads GET [CURRENT | STACKED] DIAGNOSTICS: assignments of
// diagnostics items (keywords) to variables.
func (r *myReader) diagnostics() *myReadError {
	r.i++
	if r.at("current") || r.at("stacked") {
		r.i++
	}
	if err := r.expect("diagnostics"); err != nil {
		return err
	}
	if r.at("condition") {
		// CONDITION n: a number or a variable.
		r.i++
		if r.atText("@") {
			r.i++
		}
		if t := r.peek(0); t == nil || !t.word && !t.ident {
			return r.fail("expected a condition number")
		}
		r.i++
	}
	for {
		if err := r.targets1(); err != nil {
			return err
		}
		if err := r.expectText("="); err != nil {
			return err
		}
		if _, err := r.ident(); err != nil {
			return err
		}
		if !r.atText(",") {
			return nil
		}
		r.i++
	}
}

// targets1 reads one assigned variable.
func (r *myReader) targets1() *myReadError {
	if r.atText("@") {
		r.i++
		_, err := r.ident()
		return err
	}
	t := r.peek(0)
	if t == nil || !t.ident || !r.declared(t.text) {
		return r.fail("expected a declared variable")
	}
	r.i++
	return nil
}

// expr reads an expression up to one of the stop keywords (or ';', ','
// when listed) outside parentheses and CASE ... END, leaves the reader on
// the stop, and classifies the expression as prefix + expression, the
// select list of a SELECT.
func (r *myReader) expr(prefix string, stops ...string) *myReadError {
	start := r.i
	depth, cases := 0, 0
	// missing says where the expression went wrong when no stop came:
	// where the TiDB parser gives up on it, as the server's grammar
	// would, or else where the reader stands.
	missing := func() *myReadError {
		if r.i > start {
			if err := r.analyzeExpr(prefix, r.toks[start].start, r.toks[r.i-1].end); err != nil && err.pos >= 0 && err.pos < r.pos() {
				return err
			}
		}
		return r.fail("expected " + strings.ToUpper(stops[0]))
	}
	for t := r.peek(0); ; t = r.peek(0) {
		if t == nil {
			if len(stops) > 0 && stops[len(stops)-1] == ";" {
				break
			}
			return missing()
		}
		stop := false
		if depth == 0 && cases == 0 {
			for _, s := range stops {
				if t.is(s) || !t.ident && !t.word && t.text == s {
					stop = true
				}
			}
		}
		if stop {
			break
		}
		switch {
		case !t.ident && t.text == "(":
			depth++
		case !t.ident && t.text == ")":
			if depth == 0 {
				return r.fail("unbalanced parenthesis")
			}
			depth--
		case !t.ident && t.text == ";":
			return missing()
		case t.is("case"):
			cases++
		case t.is("end") && cases > 0:
			cases--
		}
		r.i++
	}
	if r.i == start {
		return r.fail("expected an expression")
	}
	from, to := r.toks[start].start, r.toks[r.i-1].end
	return r.atStop(r.analyzeExpr(prefix, from, to), to)
}

// atStop places an error at the end of a piece of text (the parser ran
// out of it) on the token after it, where the server's lexer stands.
func (r *myReader) atStop(err *myReadError, end int) *myReadError {
	if err != nil && err.pos >= end {
		err.pos = r.pos()
	}
	return err
}

// analyzeExpr parses clean[from:to] as the select list of a SELECT and
// adds what it does to the statement's analysis.
func (r *myReader) analyzeExpr(prefix string, from, to int) *myReadError {
	head := "SELECT " + prefix
	text := head + r.clean[from:to]
	stmt, err := parseMySQL(text, r.set.parserMode)
	if err != nil {
		pos := -1
		if off, ok := tidbSyntaxOffset(err, text); ok {
			pos = max(from, from+off-len(head))
		}
		return &myReadError{pos: pos, err: err}
	}
	sel, ok := stmt.(*ast.SelectStmt)
	if !ok || sel.From != nil || sel.Where != nil || sel.GroupBy != nil || sel.Having != nil || sel.OrderBy != nil ||
		sel.Limit != nil || sel.LockInfo != nil || sel.SelectIntoOpt != nil || sel.With != nil || sel.Fields == nil || len(sel.Fields.Fields) != 1 {
		return &myReadError{pos: from, msg: "not an expression"}
	}
	b := &myAnalysis{}
	b.statement(sel)
	r.absorb(b, "")
	return nil
}

// plain reads a plain SQL statement up to the next ';' and classifies it
// with the TiDB parser.
func (r *myReader) plain() *myReadError {
	start := r.i
	for t := r.peek(0); t != nil && !(t.text == ";" && !t.ident); t = r.peek(0) {
		r.i++
	}
	if r.i == start {
		return r.fail("expected a statement")
	}
	from, to := r.toks[start].start, r.toks[r.i-1].end
	piece := r.toks[start:r.i]
	text := r.clean[from:to]
	if isHandler(text) {
		return &myReadError{pos: -1, msg: "HANDLER inside a routine body is not read by airlock"}
	}
	stmt, err := parseInto(text, from, piece, r.set, r.declared)
	if err != nil {
		if err.pos == from && len(piece) > 1 {
			// In a body a statement may start with a label, so the
			// server takes a first word it does not know for one and
			// stops at the word after it.
			err.pos = piece[1].start
		}
		return r.atStop(err, to)
	}
	b := &myAnalysis{}
	if set, ok := stmt.(*ast.SetStmt); ok {
		locals, err := r.localAssignments(piece, len(set.Variables))
		if err != nil {
			return err
		}
		b.localSet = locals
	}
	kind := b.statement(stmt)
	if b.op != myOpNone {
		b.refuse("indirection", kind+" inside "+r.what+" changes session state airlock cannot follow when the body runs")
	}
	calls := r.calls
	if calls != nil && r.db != "" {
		// An unqualified CALL in a body names the routine's database.
		cp := *calls
		cp.dbs = []string{r.db}
		calls = &cp
	}
	calls.resolve(b, r.set)
	r.absorb(b, kind)
	return nil
}

// localAssignments says, for each assignment of a SET in a body, whether
// it assigns a local variable (a bare declared name) or, in a trigger, a
// column of the NEW row: those change nothing outside the body. The TiDB
// parser reads `SET x = 1` as a system variable, and does not say
// whether the name was bare or written @@SESSION.x, so the assignments
// are split here.
func (r *myReader) localAssignments(piece []myToken, n int) ([]bool, *myReadError) {
	var out []bool
	// A scope keyword (or @@) carries over to the assignments after it
	// that have none, so a bare name after one may be the session's: such
	// a SET is refused when the name is also a local variable's.
	scoped := false
	depth, cases := 0, 0
	start := 1 // after SET
	var err *myReadError
	flush := func(end int) {
		target := piece[start:end]
		for k, t := range target {
			if !t.ident && (t.text == "=" || t.text == ":") {
				target = target[:k]
				break
			}
		}
		for k, t := range target {
			if t.is("global") || t.is("session") || t.is("local") || t.is("persist") || t.is("persist_only") ||
				!t.ident && t.text == "@" && k+1 < len(target) && target[k+1].text == "@" {
				scoped = true
			}
		}
		local := len(target) == 1 && target[0].ident && r.declared(target[0].text) ||
			r.trigger && len(target) == 3 && (target[0].is("new") || target[0].is("old")) && target[1].text == "." && target[2].ident
		if local && scoped && err == nil {
			err = &myReadError{pos: -1, msg: "a SET that assigns a local variable after a SESSION, GLOBAL or @@ variable, which may set the session's instead; split it"}
		}
		out = append(out, local)
	}
	for k := 1; k < len(piece); k++ {
		t := piece[k]
		switch {
		case !t.ident && t.text == "(":
			depth++
		case !t.ident && t.text == ")":
			depth--
		case t.is("case"):
			cases++
		case t.is("end") && cases > 0:
			cases--
		case depth == 0 && cases == 0 && !t.ident && t.text == ",":
			flush(k)
			start = k + 1
		}
	}
	flush(len(piece))
	if err != nil {
		return nil, err
	}
	if len(out) != n {
		return nil, &myReadError{pos: -1, msg: "a SET statement airlock cannot split into its assignments"}
	}
	return out, nil
}

// absorb adds what a statement of the body does to the statement's
// analysis: the body runs it, so its level is a need, its tables count
// (an unqualified one is in the routine's database), and its flags hold.
func (r *myReader) absorb(b *myAnalysis, kind string) {
	a := r.a
	if kind != "" && b.f.Own > authz.AccessRead {
		why := r.what + " runs " + kind
		if b.f.OwnWhy != "" {
			why += " (" + b.f.OwnWhy + ")"
		}
		a.f.Needs = append(a.f.Needs, authz.Need{Level: b.f.Own, Why: why, Fn: -1})
	}
	if r.inRoutine {
		// Say whose body it is.
		prefix := "in " + r.what + ": "
		for i := range b.f.Needs {
			b.f.Needs[i].Why = prefix + b.f.Needs[i].Why
		}
		for _, f := range []*string{&b.f.Unresolved, &b.f.Unfiltered, &b.f.Drops, &b.f.ServerFiles, &b.f.FileLoad} {
			if *f != "" {
				*f = prefix + *f
			}
		}
	}
	a.merge(b, r.db)
}

// merge adds b's needs, function calls, tables, databases and flags to
// a's; b's unqualified tables are in db when it is set.
func (a *myAnalysis) merge(b *myAnalysis, db string) {
	off := len(a.f.Funcs)
	a.f.Funcs = append(a.f.Funcs, b.f.Funcs...)
	for _, n := range b.f.Needs {
		if n.Fn >= 0 {
			n.Fn += off
		}
		a.f.Needs = append(a.f.Needs, n)
	}
	for _, t := range b.tables {
		if t.db == "" {
			t.db = db
		}
		a.tables = append(a.tables, t)
	}
	a.dbs = append(a.dbs, b.dbs...)
	for _, x := range []struct {
		dst *string
		src string
	}{
		{&a.f.Unresolved, b.f.Unresolved}, {&a.f.Unfiltered, b.f.Unfiltered}, {&a.f.Drops, b.f.Drops},
		{&a.f.ServerFiles, b.f.ServerFiles}, {&a.f.FileLoad, b.f.FileLoad},
	} {
		if *x.dst == "" {
			*x.dst = x.src
		}
	}
	if a.f.Refusal == "" && b.f.Refusal != "" {
		a.f.Refusal, a.f.RefusalRule = b.f.Refusal, b.f.RefusalRule
	}
	a.calls = append(a.calls, b.calls...)
	a.volatile = a.volatile || b.volatile
}

// parseInto parses a plain statement. SELECT ... INTO var, ... (which the
// TiDB parser does not read) is parsed without its INTO clause, whose
// targets must be variables: declared ones (declared may be nil) or
// @user variables. from is the statement's offset in the message.
func parseInto(text string, from int, toks []myToken, set *mySettings, declared func(string) bool) (ast.StmtNode, *myReadError) {
	stmt, err := parseMySQL(text, set.parserMode)
	if err == nil {
		return stmt, nil
	}
	pos := -1
	if off, ok := tidbSyntaxOffset(err, text); ok {
		pos = from + off
	}
	fail := &myReadError{pos: pos, err: err}
	if len(toks) == 0 || !(toks[0].is("select") || toks[0].is("with") || toks[0].text == "(" && !toks[0].ident) {
		return nil, fail
	}
	depth, into := 0, -1
	for k, t := range toks {
		switch {
		case !t.ident && t.text == "(":
			depth++
		case !t.ident && t.text == ")":
			depth--
		case depth == 0 && t.is("into"):
			into = k
		}
		if into >= 0 {
			break
		}
	}
	if into < 0 || into+1 >= len(toks) || toks[into+1].is("outfile") || toks[into+1].is("dumpfile") {
		return nil, fail
	}
	k := into + 1
	// at is the error at token k of the INTO list, where the server
	// stops too.
	at := func() *myReadError {
		if k < len(toks) {
			return &myReadError{pos: toks[k].start, err: err, msg: "expected a variable"}
		}
		return &myReadError{pos: from + len(text), err: err, msg: "expected a variable"}
	}
	for {
		if k < len(toks) && !toks[k].ident && toks[k].text == "@" {
			k++
			if k >= len(toks) || !toks[k].ident {
				return nil, at()
			}
		} else if k >= len(toks) || !toks[k].ident || declared == nil || !declared(toks[k].text) {
			switch {
			case k < len(toks) && toks[k].ident && k > into+1:
				return nil, at() // after a comma, a name that is no variable
			case k < len(toks) && toks[k].word:
				// The server reads a name there, and finds no such
				// variable: not a syntax error.
				return nil, &myReadError{pos: -1, msg: "SELECT ... INTO " + toks[k].text + ": no variable " + toks[k].text + " is declared here"}
			}
			return nil, fail
		}
		k++
		if k < len(toks) && !toks[k].ident && toks[k].text == "," {
			k++
			continue
		}
		break
	}
	b := []byte(text)
	end := len(text)
	if k < len(toks) {
		end = toks[k].start - from
	}
	for j := toks[into].start - from; j < end; j++ {
		b[j] = ' '
	}
	stmt, err = parseMySQL(string(b), set.parserMode)
	if err != nil {
		return nil, fail
	}
	return stmt, nil
}
