package mysql

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/airlockhq/airlock/proxy"
)

// Interrupt implements proxy.Relay: KILL QUERY of the session's upstream
// thread, sent on a connection of its own with the resource's
// credentials (the statement fails with 1317, its changes rolled back),
// then KILL CONNECTION for one that goes on (the connection ends, and its
// open transaction is rolled back). A user may kill its own threads, so
// the resource's user always may.
func (s *session) Interrupt(step proxy.StopStep) (string, func(context.Context) error) {
	k := killStmt{query: step == proxy.StopCancel, id: s.thread}
	method := "kill-query"
	if !k.query {
		method = "kill-connection"
	}
	return method, func(ctx context.Context) error { return s.killUpstream(ctx, k.sql(s.thread)) }
}

// killUpstream runs sql (a KILL) on a new connection to the resource.
func (s *session) killUpstream(ctx context.Context, sql string) error {
	// Only the handshake's defaults: the KILL needs no capability the
	// client asked for.
	up, err := s.p.dialUpstream(ctx, s.sess, &response{})
	if err != nil {
		return err
	}
	defer up.conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = up.conn.SetDeadline(d)
	} else {
		_ = up.conn.SetDeadline(time.Now().Add(5 * time.Second))
	}
	w := bufio.NewWriter(up.conn)
	if _, err := writePacket(w, 0, append([]byte{comQuery}, sql...)); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	r := bufio.NewReader(up.conn)
	h, err := readHeader(r)
	if err != nil {
		return err
	}
	b := make([]byte, min(h.n, 1024))
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if len(b) >= 3 && b[0] == 0xff {
		// An ERR packet: code, then (with the 4.1 protocol) '#' and the
		// SQLSTATE before the message.
		code, msg := binary.LittleEndian.Uint16(b[1:3]), b[3:]
		if len(msg) >= 6 && msg[0] == '#' {
			msg = msg[6:]
		}
		return fmt.Errorf("%s: error %d: %s", sql, code, msg)
	}
	return nil
}

// stoppedErr is p, an ERR packet from the server, as the client gets it:
// a statement stopped because the grant ended says why after the
// server's words, since a client that exits on the error reads no later
// packet (the record keeps the server's own).
func (s *session) stoppedErr(p []byte) []byte {
	cause := context.Cause(s.sess.Context())
	if !errors.Is(cause, proxy.ErrGrantEnded) {
		return p
	}
	e := parseErr(p)
	if e.code != erQueryInterrupted || len(e.state) != 5 {
		return p
	}
	return rawErrPacket(e.code, e.state, e.msg+" (airlock: the statement was stopped: "+proxy.EndMessage(cause)+")")
}
