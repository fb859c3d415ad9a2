package postgres

import (
	"bytes"
	"errors"
	"fmt"
	"io"

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
	case 'Q', 'P', 'B', 'E', 'C', 'D':
		return true
	}
	return false
}

// oversized handles a message the gateway would read whole that is larger
// than recorder.max_statement_bytes. A Query, Parse or Bind is read
// through a digest, never held, recorded as refused with its size, SHA-256
// and first bytes, and replaced upstream by a stand-in that fails, so the
// client gets the refusal where the statement's answer would be and the
// session goes on. An Execute, Close or Describe that large is no
// statement at all (their only content is a name): a protocol violation.
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
		return s.refuse('P', ref, &pgproto3.Parse{Name: name, Query: refusedSQL})
	case 'B':
		portal, rest, _ := cutZero(d.Prefix())
		stmt, _, _ := cutZero(rest)
		s.portals[portal] = &bound{v: deny}
		s.refusedBeforeSync = true // the Execute that follows is answered by this refusal
		s.push(pending{kind: 'B', refusal: ref, name: portal, stmt: stmt})
		return send(s.uw, &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: refusedSQL})
	}
	return s.refuse('Q', ref, &pgproto3.Query{String: refusedSQL})
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

// decodeParse reads a Parse message's statement name and text (and checks
// the rest is whole) without copying a large text, which
// pgproto3.Parse.Decode would.
func decodeParse(body []byte) (name, query string, ok bool) {
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		return "", "", false
	}
	rest := body[i+1:]
	j := bytes.IndexByte(rest, 0)
	if j < 0 || len(rest) < j+3 {
		return "", "", false
	}
	types := rest[j+1:]
	n := int(types[0])<<8 | int(types[1])
	if len(types) != 2+4*n {
		return "", "", false
	}
	return string(body[:i]), proxy.TextOf(rest[:j]), true
}
