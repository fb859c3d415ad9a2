package authz

import "fmt"

// Decision is the verdict on one statement.
type Decision struct {
	// Text is the statement as the client sent it (one statement of a
	// possibly multi-statement message).
	Text  string `json:"text"`
	Allow bool   `json:"allow"`
	// Rule names what decided, e.g. "access-level", "unparseable",
	// "batch" (refused because another statement of the message was),
	// "table-scope", "unfiltered", "max-tables", "drop", "server-files",
	// "file-load", "database", "indirection", "lexical"; the list is in
	// docs/authorization.md.
	Rule string `json:"rule"`
	// Reason is written for the agent: what was refused, what the grant
	// allows, and what to ask for instead. Empty when allowed.
	Reason string         `json:"reason,omitempty"`
	Class  Classification `json:"class"`
	// Hold is set on an allowed statement that runs only once a person
	// approves it (see Holds and ApplyHolds); Rule and Reason say which
	// hold and why.
	Hold bool `json:"hold,omitempty"`
	// Syntax is set when Rule is "unparseable": what the dialect's parser
	// said, so the client can be given the error the server itself would
	// have given (Postgres 42601 with its position, MySQL 1064).
	Syntax *SyntaxError `json:"syntax,omitempty"`
}

// SyntaxError is a parser's complaint about a client message.
type SyntaxError struct {
	// Msg is the parser's message as the server would word it, e.g.
	// `syntax error at or near "SELEC"`.
	Msg string `json:"msg"`
	// Pos is the 1-based character (not byte) position in the client's
	// message where the error was found; 0 when the parser gave none.
	Pos int `json:"pos,omitempty"`
	// Code is the error code the server gives for it when that is not the
	// dialect's plain syntax error: a Postgres SQLSTATE such as 0A000 for
	// "CREATE ASSERTION is not yet implemented". Empty means 42601 for
	// Postgres.
	Code string `json:"code,omitempty"`
	// Routine, File and Line are where in the parser's source the error
	// was raised, when the parser says (Postgres: scanner_yyerror,
	// scan.l), as the server reports them in its error's R, F and L
	// fields.
	Routine string `json:"routine,omitempty"`
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	// Hint and Detail are what the server adds to this error, when the
	// parser's message is one it adds them to.
	Hint   string `json:"hint,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Classification is what the authorizer read from a statement.
type Classification struct {
	// Kind is the statement's kind in upper case, e.g. "SELECT", "DELETE",
	// "CREATE TABLE".
	Kind string `json:"kind"`
	// Required is the least access level that may run the statement.
	Required Access `json:"required"`
	// Why says what made Required what it is when that is not obvious from
	// Kind, e.g. "DELETE inside a WITH clause".
	Why           string   `json:"why,omitempty"`
	TablesRead    []string `json:"tables_read,omitempty"`
	TablesWritten []string `json:"tables_written,omitempty"`
	Functions     []string `json:"functions,omitempty"`
}

// Verdict is the decision on a whole client message. It is all or nothing:
// Allow is true only if every statement is allowed.
type Verdict struct {
	Allow      bool       `json:"allow"`
	Statements []Decision `json:"statements"`
}

// SingleVerdict wraps one decision as a verdict.
func SingleVerdict(d Decision) Verdict { return Verdict{Allow: d.Allow, Statements: []Decision{d}} }

// Batch makes the verdict on a message of several statements all or
// nothing: the server runs them as one unit (Postgres in an implicit
// transaction, MySQL one after the other until the first error), so when
// one is refused, every statement after or before it that was allowed is
// refused too, with Rule "batch".
func Batch(ds []Decision) Verdict {
	v := Verdict{Allow: true, Statements: ds}
	refused := 0
	for i, d := range ds {
		if !d.Allow {
			refused = i + 1
			break
		}
	}
	if refused == 0 {
		return v
	}
	v.Allow = false
	for i := range v.Statements {
		d := &v.Statements[i]
		if d.Allow {
			d.Allow, d.Rule = false, "batch"
			d.Reason = fmt.Sprintf("not executed: statement %d of this message was refused", refused)
		}
	}
	return v
}
