package mysql

import (
	"fmt"
	"strconv"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
)

// tracker records the results of an admitted message against its
// statements as the upstream's answers arrive.
type tracker struct {
	adm  *proxy.Admitted
	v    authz.Verdict
	next int   // the statement whose result comes next
	rows int64 // rows of a CALL's result sets so far
	file int64 // bytes of a client file sent for the current statement
}

// result records one result. A CALL (see multiResult) answers with a
// result set per SELECT it runs and then an OK; everything up to that OK
// is its result.
func (t *tracker) result(r recorder.Result, isOK bool) {
	if t.adm == nil || t.next >= t.adm.Len() {
		return
	}
	if !isOK && t.next < len(t.v.Statements) && multiResult(t.v.Statements[t.next].Class.Kind) {
		if r.Rows != nil {
			t.rows += *r.Rows
		}
		return
	}
	if t.rows > 0 {
		n := t.rows
		if r.Rows != nil {
			n += *r.Rows
		}
		r.Rows, t.rows = &n, 0
	}
	r.FileBytes, t.file = t.file, 0
	t.adm.Done(t.next, r)
	t.adm.Restart()
	t.next++
}

// multiResult reports whether a statement of kind answers with a result
// set per SELECT it runs and then an OK: a CALL, and a compound statement
// run outside a routine (MariaDB's BEGIN NOT ATOMIC, IF, CASE, loops).
func multiResult(kind string) bool {
	switch kind {
	case "CALL", "BEGIN NOT ATOMIC", "IF", "CASE", "LOOP", "WHILE", "REPEAT":
		return true
	}
	return false
}

// fail records an error for the current statement; the rest of the
// message did not run.
func (t *tracker) fail(e serverErr) {
	if t.adm == nil {
		return
	}
	if t.next < t.adm.Len() {
		t.adm.Done(t.next, recorder.Result{Executed: true, Error: fmt.Sprintf("%d: %s", e.code, e.msg), SQLState: e.state, FileBytes: t.file})
		t.next++
	}
	t.finish("not executed: an earlier statement of the message failed")
}

// unknown records the statements still owed an answer as executed, with
// why their outcome is unknown.
func (t *tracker) unknown(why string) {
	if t.adm == nil {
		return
	}
	for ; t.next < t.adm.Len(); t.next++ {
		t.adm.Done(t.next, recorder.Result{Executed: true, Error: why, FileBytes: t.file})
		t.file = 0
	}
}

// finish records the statements the upstream gave no result for.
func (t *tracker) finish(why string) {
	if t.adm == nil {
		return
	}
	for ; t.next < t.adm.Len(); t.next++ {
		t.adm.Done(t.next, recorder.Result{Error: why})
	}
}

// upHeader reads the next upstream packet header, flushing what is
// buffered for the client first when the upstream has nothing more ready.
func (s *session) upHeader() (header, error) {
	if s.ur.Buffered() == 0 {
		if err := s.flushClient(); err != nil {
			return header{}, err
		}
	}
	h, err := readHeader(s.ur)
	if err != nil {
		return h, &upstreamError{err}
	}
	return h, nil
}

// peek returns the first payload byte of the packet h heads, or 0 for an
// empty packet, without consuming it.
func (s *session) peek(h header) byte {
	if h.n == 0 {
		return 0
	}
	b, err := s.ur.Peek(1)
	if err != nil {
		return 0 // the read that follows reports the error
	}
	return b[0]
}

// readUp reads the rest of the upstream packet h whole.
func (s *session) readUp(h header) ([]byte, byte, error) {
	p, seq, err := readPayload(s.ur, h, s.ubuf, maxControl, "upstream packet")
	if cap(p) <= 1<<20 {
		s.ubuf = p
	}
	if err != nil {
		return nil, seq, &upstreamError{err}
	}
	return p, seq, nil
}

// relayLogical streams the logical packet h heads to the client, without
// holding it.
func (s *session) relayLogical(h header) error {
	for {
		if err := s.relayPhysical(h); err != nil {
			return err
		}
		if h.last() {
			return nil
		}
		var err error
		if h, err = s.upHeader(); err != nil {
			return err
		}
	}
}

func (s *session) relayPhysical(h header) error {
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	w := s.clientWriter()
	if err := writeHeader(w, h); err != nil {
		return err
	}
	s.clientSeq = h.seq + 1
	if err := s.toClient.Copy(w, s.ur, h.n); err != nil {
		return &upstreamError{err}
	}
	return nil
}

// relayResults relays the answer to a COM_QUERY or COM_STMT_EXECUTE: one
// or more results (OK, result set, or a LOCAL INFILE exchange), ended by
// an ERR or by a result without SERVER_MORE_RESULTS_EXISTS.
func (s *session) relayResults(t *tracker, binary bool) (err error) {
	defer func() {
		if err != nil {
			// The statements reached the upstream; how they ended was
			// lost with a connection.
			t.unknown("outcome unknown: a connection failed before the server's answer was relayed: " + err.Error())
			return
		}
		t.finish("not executed: the server sent no result for it")
	}()
	for {
		h, err := s.upHeader()
		if err != nil {
			return err
		}
		switch s.peek(h) {
		case hdrOK:
			p, seq, err := s.readUp(h)
			if err != nil {
				return err
			}
			if err := s.writeClient(seq, p); err != nil {
				return err
			}
			o, _ := parseOK(p)
			rows := int64(o.affected)
			t.result(recorder.Result{Executed: true, Tag: okTag(o), Rows: &rows}, true)
			if o.status&statusMoreResults == 0 {
				return nil
			}
		case hdrERR:
			p, seq, err := s.readUp(h)
			if err != nil {
				return err
			}
			if err := s.writeClient(seq, s.stoppedErr(p)); err != nil {
				return err
			}
			t.fail(parseErr(p))
			return nil
		case hdrInfile:
			if err := s.localInfile(h, t); err != nil {
				return err
			}
		default:
			p, seq, err := s.readUp(h)
			if err != nil {
				return err
			}
			cols, _, _, ok := lenencInt(p)
			if !ok || cols == 0 {
				return &upstreamError{fmt.Errorf("unexpected packet 0x%02x where a result was due", s.peek(h))}
			}
			if err := s.writeClient(seq, p); err != nil {
				return err
			}
			eof, err := s.relayColumns(int(cols))
			if err != nil {
				return err
			}
			if binary && eof.status&statusCursorExists != 0 {
				// A cursor was opened (COM_STMT_EXECUTE with
				// CURSOR_TYPE_READ_ONLY): no rows follow, COM_STMT_FETCH
				// asks for them.
				var zero int64
				t.result(recorder.Result{Executed: true, Tag: "CURSOR OPEN", Rows: &zero}, false)
				return nil
			}
			o, more, err := s.relayRows(t)
			if err != nil || !more {
				return err
			}
			if o.status&statusMoreResults == 0 {
				return nil
			}
		}
	}
}

// relayColumns relays n column definitions and the EOF after them, and
// returns what the EOF says.
func (s *session) relayColumns(n int) (okInfo, error) {
	for range n {
		h, err := s.upHeader()
		if err != nil {
			return okInfo{}, err
		}
		if err := s.relayLogical(h); err != nil {
			return okInfo{}, err
		}
	}
	h, err := s.upHeader()
	if err != nil {
		return okInfo{}, err
	}
	if b := s.peek(h); !isEOF(b, h.n) {
		return okInfo{}, &upstreamError{fmt.Errorf("column definitions end with packet 0x%02x, want EOF", b)}
	}
	p, seq, err := s.readUp(h)
	if err != nil {
		return okInfo{}, err
	}
	return parseEOF(p), s.writeClient(seq, p)
}

// relayRows relays the rows of a result set, or those a COM_STMT_FETCH
// asked for, up to the EOF, and records them. more is false when an error
// ended the answer.
func (s *session) relayRows(t *tracker) (o okInfo, more bool, err error) {
	var rows int64
	for {
		h, err := s.upHeader()
		if err != nil {
			return okInfo{}, false, err
		}
		b := s.peek(h)
		switch {
		case isEOF(b, h.n):
			p, seq, err := s.readUp(h)
			if err != nil {
				return okInfo{}, false, err
			}
			if err := s.writeClient(seq, p); err != nil {
				return okInfo{}, false, err
			}
			t.result(recorder.Result{Executed: true, Tag: "SELECT " + strconv.FormatInt(rows, 10), Rows: &rows}, false)
			return parseEOF(p), true, nil
		case b == hdrERR && h.n > 0:
			// A row never starts with 0xff: this is an error mid-result
			// (a killed query, a failed conversion).
			p, seq, err := s.readUp(h)
			if err != nil {
				return okInfo{}, false, err
			}
			if err := s.writeClient(seq, s.stoppedErr(p)); err != nil {
				return okInfo{}, false, err
			}
			t.fail(parseErr(p))
			return okInfo{}, false, nil
		default:
			if err := s.relayLogical(h); err != nil {
				return okInfo{}, false, err
			}
			rows++
		}
	}
}

// relayFieldList relays a COM_FIELD_LIST answer: column definitions up to
// an EOF, or an ERR.
func (s *session) relayFieldList(t *tracker) error {
	defer t.finish("not executed: the server sent no result for it")
	var n int64
	for {
		h, err := s.upHeader()
		if err != nil {
			return err
		}
		b := s.peek(h)
		if isEOF(b, h.n) || b == hdrERR && h.n > 0 {
			p, seq, err := s.readUp(h)
			if err != nil {
				return err
			}
			if err := s.writeClient(seq, p); err != nil {
				return err
			}
			if b == hdrERR {
				t.fail(parseErr(p))
			} else {
				t.result(recorder.Result{Executed: true, Tag: "FIELD LIST", Rows: &n}, true)
			}
			return nil
		}
		if err := s.relayLogical(h); err != nil {
			return err
		}
		n++
	}
}

// relayStatus relays a one-packet answer (OK, EOF or ERR) and reports
// whether it was not an error.
func (s *session) relayStatus() (bool, error) {
	h, err := s.upHeader()
	if err != nil {
		return false, err
	}
	p, seq, err := s.readUp(h)
	if err != nil {
		return false, err
	}
	return len(p) > 0 && p[0] != hdrERR, s.writeClient(seq, p)
}

// localInfile handles the server's request for a client file (LOAD DATA
// LOCAL INFILE): the file's packets are relayed upstream and counted. The
// upstream has the local-files capability only when the grant allows file
// loads; a server asking without it is broken or hostile, and the session
// ends.
func (s *session) localInfile(h header, t *tracker) error {
	p, seq, err := s.readUp(h)
	if err != nil {
		return err
	}
	if !s.fileLoads {
		return &upstreamError{fmt.Errorf("the server asked for client file %q though the session has no local-files capability", p[1:])}
	}
	if err := s.writeClient(seq, p); err != nil {
		return err
	}
	if err := s.flushClient(); err != nil {
		return err
	}
	// The file comes as packets ending with an empty one; an empty packet
	// right after a full one only ends that packet.
	prevFull := false
	for {
		ch, err := readHeader(s.cr)
		if err != nil {
			return eofIsUnexpected(err)
		}
		if err := writeHeader(s.uw, ch); err != nil {
			return &upstreamError{err}
		}
		if err := s.toUp.Copy(s.uw, s.cr, ch.n); err != nil {
			return err
		}
		t.file += int64(ch.n)
		if ch.n == 0 && !prevFull {
			break
		}
		prevFull = ch.n == maxPayload
	}
	if err := s.uw.Flush(); err != nil {
		return &upstreamError{err}
	}
	return nil
}

func okTag(o okInfo) string {
	tag := "OK " + strconv.FormatUint(o.affected, 10)
	if o.info != "" {
		tag += " (" + o.info + ")"
	}
	if o.warnings > 0 {
		tag += fmt.Sprintf(", %d warnings", o.warnings)
	}
	return tag
}
