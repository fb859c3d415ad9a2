package mysql

import (
	"fmt"
	"time"
)

// ShowCreateProcedure implements authz.MySQLRoutines on the session's own
// upstream connection, so a CALL is decided by what the procedure runs.
// The authorizer asks while it decides a command, before the command is
// forwarded: the connection is between commands then, and nothing the
// client sent is in flight.
func (s *session) ShowCreateProcedure(db, name string) (create, sqlMode string, ok bool, err error) {
	_ = s.up.SetDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = s.up.SetDeadline(time.Time{}) }()
	rows, serr, err := s.upstreamQuery("SHOW CREATE PROCEDURE " + quoteIdent(db) + "." + quoteIdent(name))
	switch {
	case err != nil:
		return "", "", false, err
	case serr != nil:
		// 1305: no such procedure; anything else the server refuses
		// leaves the CALL unread as well.
		return "", "", false, nil
	case len(rows) != 1 || len(rows[0]) < 3 || rows[0][2] == nil || rows[0][1] == nil:
		// No text: the account may not see the body.
		return "", "", false, nil
	}
	return *rows[0][2], *rows[0][1], true, nil
}

// upstreamQuery runs a query of the gateway's own on the upstream
// connection and reads its rows (text protocol, NULL as nil). serr is the
// server's error, if it sent one.
func (s *session) upstreamQuery(q string) (rows [][]*string, serr *serverErr, err error) {
	if err := s.forward(append([]byte{comQuery}, q...)); err != nil {
		return nil, nil, err
	}
	p, err := s.upPacket()
	if err != nil {
		return nil, nil, err
	}
	switch {
	case len(p) > 0 && p[0] == hdrERR:
		e := parseErr(p)
		return nil, &e, nil
	case len(p) > 0 && p[0] == hdrOK:
		return nil, nil, nil
	}
	cols, _, _, ok := lenencInt(p)
	if !ok || cols == 0 || cols > 4096 {
		return nil, nil, &upstreamError{fmt.Errorf("unexpected answer to the gateway's query %q", q)}
	}
	for i := uint64(0); i <= cols; i++ { // the column definitions and their EOF
		if _, err := s.upPacket(); err != nil {
			return nil, nil, err
		}
	}
	for {
		p, err := s.upPacket()
		if err != nil {
			return nil, nil, err
		}
		switch {
		case isEOF(p[0], len(p)):
			return rows, nil, nil
		case p[0] == hdrERR:
			e := parseErr(p)
			return nil, &e, nil
		}
		row := make([]*string, 0, cols)
		for len(p) > 0 {
			if p[0] == 0xfb {
				row = append(row, nil)
				p = p[1:]
				continue
			}
			v, n, ok := lenencBytes(p)
			if !ok {
				return nil, nil, &upstreamError{fmt.Errorf("malformed row in the answer to the gateway's query %q", q)}
			}
			str := string(v)
			row = append(row, &str)
			p = p[n:]
		}
		rows = append(rows, row)
	}
}

// upPacket reads one whole upstream packet (empty ones too).
func (s *session) upPacket() ([]byte, error) {
	h, err := readHeader(s.ur)
	if err != nil {
		return nil, &upstreamError{err}
	}
	p, _, err := s.readUp(h)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, &upstreamError{fmt.Errorf("empty packet in the answer to the gateway's query")}
	}
	return p, nil
}
