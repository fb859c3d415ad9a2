package postgres

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/proxy"
)

// stateProgramLimitExceeded is what PostgreSQL answers a statement too
// large for it (54000); airlock answers it for one larger than
// recorder.max_statement_bytes.
const stateProgramLimitExceeded = "54000"

// readWhole reports whether the gateway reads messages of type typ whole
// (to authorize them) rather than streaming them through.
func readWhole(typ byte) bool {
	switch typ {
	case 'Q', 'P', 'B', 'E', 'C':
		return true
	}
	return false
}

// oversized handles a message the gateway would read whole that is larger
// than recorder.max_statement_bytes. A Query, Parse or Bind is read
// through a digest, never held, recorded as refused with its size, SHA-256
// and first bytes, and replaced upstream by a stand-in that fails, so the
// client gets the refusal where the statement's answer would be and the
// session goes on. An Execute or Close that large is no statement at all
// (their only content is a name): a protocol violation.
func (s *session) oversized(typ byte, n int) error {
	var what string
	switch typ {
	case 'Q':
		what = "Query message's statement"
	case 'P':
		what = "Parse message"
	case 'B':
		what = "Bind message"
	default:
		return &frameError{fmt.Sprintf("%q message of %d bytes is larger than recorder.max_statement_bytes (%d)", typ, n, s.maxStatement)}
	}
	d := proxy.NewDigest()
	text := n
	if typ == 'Q' {
		text-- // the text, without its terminating zero byte
	}
	if _, err := io.CopyN(d, s.cl.r, int64(text)); err != nil {
		return eofUnexpected(err)
	}
	if typ == 'Q' {
		if b, err := s.cl.r.ReadByte(); err != nil {
			return eofUnexpected(err)
		} else if b != 0 {
			return &frameError{"Query message without its terminating zero byte"}
		}
	}
	ref := s.sess.RefuseTooLarge(what, d)
	deny := &authz.Verdict{Statements: []authz.Decision{{Text: what, Rule: "too-large", Reason: ref.Msg}}}
	switch typ {
	case 'P':
		// The statement's name leads the message: kept, so that its
		// Executes are refused with this reason.
		name, _, _ := cutZero(d.Prefix())
		s.stmts[name] = deny
		return s.refuse('P', ref, func() error { return send(s.uw, &pgproto3.Parse{Name: name, Query: refusedSQL}) })
	case 'B':
		portal, rest, _ := cutZero(d.Prefix())
		stmt, _, _ := cutZero(rest)
		s.portals[portal] = &bound{v: deny}
		s.refusedBeforeSync = true // the Execute that follows is answered by this refusal
		s.push(&pending{kind: 'B', refusal: ref, name: portal, stmt: stmt})
		return send(s.uw, &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: refusedSQL})
	}
	return s.refuse('Q', ref, func() error { return send(s.uw, &pgproto3.Query{String: refusedSQL}) })
}

// cutZero splits b at its first zero byte.
func cutZero(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

func eofUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// refusalCode is the SQLSTATE of a refusal of kind, when it is not the
// default 42501.
func refusalCode(kind string) (string, bool) {
	switch kind {
	case "recorder":
		return stateSystemError, true
	case "too-large":
		return stateProgramLimitExceeded, true
	}
	return "", false
}

// bigMessage is the size from which a client message's buffer is let go
// after its statement and the memory returned to the OS at once (see
// release).
const bigMessage = 1 << 20

// release returns the memory of a message of n bytes, once the gateway is
// done with it, to the operating system when it was large: the Go runtime
// keeps freed heap for reuse and gives it back over minutes, so a gateway
// that relayed one 200 MB statement would otherwise stay 200 MB larger
// (docs/architecture.md, "Memory and garbage collection").
func release(n int) {
	if n >= bigMessage {
		debug.FreeOSMemory()
	}
}
