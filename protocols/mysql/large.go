package mysql

import (
	"errors"
	"fmt"
	"io"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/proxy"
)

// errTooLargeAnswered ends the handling of a command that was larger than
// recorder.max_statement_bytes: it was read through, refused, recorded and
// answered, and the session goes on.
var errTooLargeAnswered = errors.New("mysql: command over the statement cap answered")

// oversized reads the rest of a command larger than
// recorder.max_statement_bytes through a digest, without holding it: head
// is what was read of it (from its command byte on), next the header of
// the physical packet whose payload comes next. The refusal is recorded
// with the size, SHA-256 and first bytes of the payload after the command
// byte (a COM_QUERY's or COM_STMT_PREPARE's statement text), and answered
// as MySQL answers a packet over max_allowed_packet (1153), on a session
// that stays open.
func (s *session) oversized(head []byte, next header) error {
	d := proxy.NewDigest()
	var cmd byte
	if len(head) > 0 {
		cmd = head[0]
		d.Write(head[1:])
	} else {
		b, err := s.cr.ReadByte()
		if err != nil {
			return eofIsUnexpected(err)
		}
		cmd, next.n = b, next.n-1
	}
	h := next
	for {
		if _, err := io.CopyN(d, s.cr, int64(h.n)); err != nil {
			return eofIsUnexpected(err)
		}
		if h.last() {
			break
		}
		nh, err := readHeader(s.cr)
		if err != nil {
			return eofIsUnexpected(err)
		}
		if nh.seq != h.seq+1 {
			return &frameError{msg: fmt.Sprintf("command continues with sequence id %d, want %d", nh.seq, h.seq+1), outOfOrder: true}
		}
		h = nh
	}
	what := fmt.Sprintf("command 0x%02x", cmd)
	switch cmd {
	case comQuery:
		what = "COM_QUERY statement"
	case comStmtPrepare:
		what = "COM_STMT_PREPARE statement"
	case comStmtExecute:
		what = "COM_STMT_EXECUTE command"
	}
	ref := s.sess.RefuseTooLarge(what, d)
	if err := s.refuse(h, authz.Verdict{}, ref); err != nil {
		return err
	}
	return errTooLargeAnswered
}
