package mysql

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlockhq/airlock/authz"
	myauthz "github.com/airlockhq/airlock/authz/mysql"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
)

// Commands (COM_*).
const (
	comSleep            = 0x00
	comQuit             = 0x01
	comInitDB           = 0x02
	comQuery            = 0x03
	comFieldList        = 0x04
	comStatistics       = 0x09
	comProcessKill      = 0x0c
	comPing             = 0x0e
	comChangeUser       = 0x11
	comBinlogDump       = 0x12
	comTableDump        = 0x13
	comRegisterSlave    = 0x15
	comStmtPrepare      = 0x16
	comStmtExecute      = 0x17
	comStmtSendLongData = 0x18
	comStmtClose        = 0x19
	comStmtReset        = 0x1a
	comSetOption        = 0x1b
	comStmtFetch        = 0x1c
	comBinlogDumpGTID   = 0x1e
	comResetConnection  = 0x1f
)

// session relays one authorized client connection. One goroutine runs it:
// MySQL is a request-response protocol, so the gateway reads a command,
// decides, forwards it and relays its whole response before reading the
// next. A client that pipelines simply waits in the socket buffer.
type session struct {
	p    *Protocol
	sess *proxy.Session
	log  *slog.Logger
	res  *config.Resource
	az   Authorizer
	// fileLoads is whether the upstream leg has the local-files capability.
	fileLoads bool

	// cr, cw, ur and uw are nil while the session waits for a command
	// (idle.go); fromClient waits for it meanwhile, fromUpstream for
	// the idle watcher.
	cl                       net.Conn
	cr                       *bufio.Reader
	cw                       *bufio.Writer
	fromClient, fromUpstream proxy.Primer
	up                       net.Conn
	// thread is the upstream's connection id, which a KILL names.
	thread uint32
	ur     *bufio.Reader
	uw     *bufio.Writer
	// toClient and toUp stream the payloads the gateway does not read.
	toClient, toUp proxy.Copier

	// cwMu guards cw, clientSeq, idle and the idle watch: the ender and
	// the idle watcher write a last packet to the client from other
	// goroutines.
	cwMu      sync.Mutex
	clientSeq byte // the sequence id of the next packet to the client
	idle      bool // waiting for the client's next command
	// The idle watch (idle.go): idleTimer starts the watcher, watchDone
	// is closed when a running watcher has left the upstream reader,
	// upGone says why the upstream went away while idle.
	idleTimer *time.Timer
	watchDone chan struct{}
	upGone    string
	// closing is set once the session is ending; stop ends it (closing
	// both connections) with a reason: the session's Stop.
	closing atomic.Bool
	stop    func(why string)

	stmts    map[uint32]*stmt
	lastStmt uint32
	buf      []byte // client packets read whole
	ubuf     []byte // upstream packets read whole
	// maxStatement is recorder.max_statement_bytes: the largest command
	// read whole (see oversized).
	maxStatement int
}

// relay runs the session until either side stops or the session's context
// ends it, and returns why it ended.
func relay(p *Protocol, sess *proxy.Session, cl *client, up *upstream) string {
	res := sess.Resource()
	s := &session{
		p: p, sess: sess, log: sess.Logger(), res: res,
		fileLoads: up.caps&capLocalFiles != 0,
		cl:        cl.conn, cr: cl.r, cw: cl.w,
		up: up.conn, thread: up.thread, ur: readers.Take(up.conn), uw: writers.Take(up.conn),
		stmts: map[uint32]*stmt{}, maxStatement: sess.MaxStatementBytes(),
	}
	s.az = p.newAuthorizer(myauthz.Options{
		Database: res.Database, Databases: []string{res.Database},
		SQLMode: up.sqlMode, ServerVersion: up.version,
		// A CALL is decided by the procedure's body, read on this
		// session's upstream connection.
		Routines: s,
	})
	s.stop = sess.Stop
	s.fromClient, s.fromUpstream = proxy.NewPrimer(cl.conn), proxy.NewPrimer(up.conn)
	// The session owns the connection phase's buffers now, and gives
	// them back to the pools when idle: cl must not keep them.
	cl.r, cl.w = nil, nil
	reason := sess.Relay(s)
	s.cwMu.Lock()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	s.cwMu.Unlock()
	return reason
}

// Run implements proxy.Relay.
func (s *session) Run() string { return s.run() }

// Terminate implements proxy.Relay: the server's own error for a killed
// connection (1927, ER_CONNECTION_KILLED), with the sequence id the
// client expects next.
func (s *session) Terminate(msg string) {
	s.closing.Store(true)
	// Closing the upstream first frees a relay blocked reading it; the
	// deadline frees one blocked writing to a client that does not read.
	s.up.Close()
	_ = s.cl.SetWriteDeadline(time.Now().Add(time.Second))
	s.cwMu.Lock()
	seq := s.clientSeq
	if s.idle {
		// The answer to the client's next command comes with 1.
		seq = 1
	}
	_, _ = writePacket(s.clientWriter(), seq, errPacket(erConnectionKilled, "70100", "airlock: terminating connection: "+msg))
	_ = s.cw.Flush()
	s.cwMu.Unlock()
}

// Close implements proxy.Relay.
func (s *session) Close() {
	s.closing.Store(true)
	s.cl.Close()
	s.up.Close()
}

// run reads and handles client commands until the session should end, and
// returns why.
func (s *session) run() string {
	c := s.sess.Conn()
	for {
		if err := s.flushClient(); err != nil {
			return "client write failed: " + err.Error()
		}
		s.releaseBuffers()
		s.setIdle()
		// Idle until the next command begins: no time limit, and no
		// buffers held (idle.go) unless a command is already read.
		var err error
		if s.cr != nil {
			_, err = s.cr.Peek(1)
		} else {
			s.cr, err = s.fromClient.Wait(readers)
		}
		if gone := s.endIdle(); gone != "" {
			return gone
		}
		if err != nil {
			return s.clientReadEnded(err)
		}
		s.takeBuffers()
		c.MessageStarted()
		h, err := readHeader(s.cr)
		if err != nil {
			return s.clientReadEnded(err)
		}
		if h.seq != 0 {
			return s.violationCode(h, fmt.Sprintf("command packet with sequence id %d, want 0", h.seq), erNetPacketsOutOfOrder, "08S01")
		}
		if h.n == 0 {
			return s.violationCode(h, "empty command packet", erUnknownCom, "08S01")
		}
		b, err := s.cr.Peek(1)
		if err != nil {
			return s.clientReadEnded(err)
		}
		cmd := b[0]
		switch cmd {
		case comQuit:
			_ = s.discardClient(h)
			_ = s.forwardEmpty(comQuit)
			return "client quit"
		case comStmtSendLongData:
			err = s.sendLongData(h)
		default:
			var body []byte
			body, err = s.readCommand(h)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return s.violation(h, fmt.Sprintf("truncated command packet: the header announced %d bytes", h.n))
			}
			if err == nil {
				err = s.command(cmd, h, body)
				proxy.ReleaseLarge(len(body))
			}
		}
		if errors.Is(err, errTooLargeAnswered) {
			err = nil
		}
		if err != nil {
			var fe *frameError
			if errors.As(err, &fe) {
				switch {
				case fe.tooLong:
					return s.violationCode(h, fe.msg, erNetPacketTooLarge, "08S01")
				case fe.outOfOrder:
					return s.violationCode(h, fe.msg, erNetPacketsOutOfOrder, "08S01")
				}
				return s.violation(h, fe.msg)
			}
			if errors.Is(err, errUpstreamGone) {
				return err.Error()
			}
			var ue *upstreamError
			if errors.As(err, &ue) {
				return ue.Error()
			}
			return s.clientReadEnded(err)
		}
		c.MessageDone()
	}
}

// errUpstreamGone ends a session whose upstream closed its connection.
var errUpstreamGone = errors.New("upstream closed the connection")

// upstreamError is a failure on the upstream side of the relay.
type upstreamError struct{ err error }

func (e *upstreamError) Error() string {
	if errors.Is(e.err, io.EOF) || errors.Is(e.err, io.ErrUnexpectedEOF) || errors.Is(e.err, net.ErrClosed) {
		return "upstream closed the connection"
	}
	return "upstream failed: " + e.err.Error()
}

func (s *session) readCommand(h header) ([]byte, error) {
	b, _, err := readPayload(s.cr, h, s.buf, s.maxStatement, "command")
	proxy.AfterLargeRead(len(b))
	if cap(b) <= proxy.KeepBuf {
		s.buf = b // keep small buffers for reuse
	}
	var fe *frameError
	if errors.As(err, &fe) && fe.tooLong {
		return nil, s.oversized(b, fe.next)
	}
	return b, err
}

// command handles one command read whole.
func (s *session) command(cmd byte, h header, body []byte) error {
	g := s.sess.Grant()
	switch cmd {
	case comQuery:
		sql := proxy.TextOf(body[1:])
		if k, ok := parseKill(sql); ok {
			if v, t, ok := s.p.killVerdict(s.sess, sql, k); ok {
				return s.kill(h, v, k, t)
			}
		}
		return s.query(h, body, s.az.Query(g, sql), false)
	case comInitDB:
		return s.initDB(h, body)
	case comFieldList:
		table, rest, ok := cstring(body[1:])
		if !ok {
			table, rest = string(body[1:]), nil
		}
		sql := "SHOW COLUMNS FROM " + quoteIdent(table)
		if len(rest) > 0 {
			sql += " LIKE '" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(string(rest)) + "'"
		}
		v := s.az.Query(g, sql)
		for i := range v.Statements {
			v.Statements[i].Text = "COM_FIELD_LIST " + table
		}
		return s.admit(h, v, nil, func(adm *proxy.Admitted) error {
			if err := s.forward(body); err != nil {
				return err
			}
			return s.relayFieldList(&tracker{adm: adm, v: v})
		})
	case comStatistics:
		v := commandVerdict(g, "COM_STATISTICS", "STATISTICS", authz.AccessRead)
		return s.admit(h, v, nil, func(adm *proxy.Admitted) error {
			if err := s.forward(body); err != nil {
				return err
			}
			// The answer is one packet of text.
			uh, err := s.upHeader()
			if err != nil {
				return err
			}
			if err := s.relayLogical(uh); err != nil {
				return err
			}
			adm.Done(0, recorder.Result{Executed: true, Tag: "STATISTICS"})
			return nil
		})
	case comProcessKill:
		if len(body) < 5 {
			return &frameError{msg: "malformed COM_PROCESS_KILL"}
		}
		id := binary.LittleEndian.Uint32(body[1:])
		text := fmt.Sprintf("KILL CONNECTION %d", id)
		if v, t, ok := s.p.killVerdict(s.sess, text, killStmt{id: id}); ok {
			return s.kill(h, v, killStmt{id: id}, t)
		}
		return s.query(h, body, s.az.Query(g, text), false)
	case comPing, comSetOption, comStmtReset, comResetConnection:
		if cmd == comStmtReset {
			if id, ok := stmtID(body); ok {
				if st := s.stmts[s.resolve(id)]; st != nil {
					st.long = nil
				}
			}
		}
		if err := s.forward(body); err != nil {
			return err
		}
		o, err := s.relayStatus()
		if err == nil && cmd == comResetConnection && o {
			s.stmts, s.lastStmt = map[uint32]*stmt{}, 0
		}
		return err
	case comStmtPrepare:
		return s.prepare(h, body)
	case comStmtExecute:
		return s.execute(h, body)
	case comStmtClose:
		if id, ok := stmtID(body); ok {
			delete(s.stmts, s.resolve(id))
		}
		// No answer comes.
		return s.forward(body)
	case comStmtFetch:
		if err := s.forward(body); err != nil {
			return err
		}
		_, _, err := s.relayRows(&tracker{})
		return err
	case comChangeUser:
		return s.deny(h, "COM_CHANGE_USER", "change-user", "CHANGE USER",
			"changing the user is not allowed through airlock: a session keeps the agent and grant it authenticated with; reconnect instead")
	case comBinlogDump, comBinlogDumpGTID, comRegisterSlave, comTableDump:
		return s.deny(h, fmt.Sprintf("%s (command 0x%02x)", commandName(cmd), cmd), "replication", "REPLICATION",
			"replication and binary log commands are not allowed through airlock")
	}
	if commandName(cmd) == "unknown" {
		return s.deny(h, fmt.Sprintf("command 0x%02x", cmd), "unsupported-command", "UNKNOWN COMMAND",
			fmt.Sprintf("0x%02x is not a MySQL protocol command", cmd))
	}
	return s.deny(h, fmt.Sprintf("%s (command 0x%02x)", commandName(cmd), cmd), "unsupported-command", "COMMAND",
		fmt.Sprintf("the %s protocol command is not allowed through airlock; use the SQL statement instead", commandName(cmd)))
}

func commandName(cmd byte) string {
	switch cmd {
	case comSleep:
		return "COM_SLEEP"
	case 0x05:
		return "COM_CREATE_DB"
	case 0x06:
		return "COM_DROP_DB"
	case 0x07:
		return "COM_REFRESH"
	case 0x08:
		return "COM_SHUTDOWN"
	case 0x0a:
		return "COM_PROCESS_INFO"
	case 0x0d:
		return "COM_DEBUG"
	case comBinlogDump:
		return "COM_BINLOG_DUMP"
	case comTableDump:
		return "COM_TABLE_DUMP"
	case comRegisterSlave:
		return "COM_REGISTER_SLAVE"
	case comBinlogDumpGTID:
		return "COM_BINLOG_DUMP_GTID"
	case 0xfa:
		return "COM_STMT_BULK_EXECUTE"
	}
	return "unknown"
}

// commandVerdict decides a protocol command that runs no SQL but needs
// the given access.
func commandVerdict(g *authz.Grant, text, kind string, need authz.Access) authz.Verdict {
	d := authz.Decision{Text: text, Rule: "access-level", Class: authz.Classification{Kind: kind, Required: need}}
	if g.Access >= need {
		d.Allow = true
	} else {
		d.Reason = fmt.Sprintf("%s requires %s access; grant %s allows %s", kind, need, g.ID, g.Access)
	}
	return authz.Verdict{Allow: d.Allow, Statements: []authz.Decision{d}}
}

// deny records a refused command and answers it with an error; the
// session goes on.
func (s *session) deny(h header, text, rule, kind, reason string) error {
	d := authz.Decision{
		Text: text, Rule: rule, Reason: reason,
		Class: authz.Classification{Kind: kind, Required: authz.AccessAdmin},
	}
	v := authz.SingleVerdict(d)
	return s.refuse(h, v, s.sess.Refuse(v))
}

// admit runs the command of header h under its verdict v (see
// proxy.Session.Forward): then forwards it and relays the answer once v is
// recorded; a refused command is answered with refuse.
func (s *session) admit(h header, v authz.Verdict, params []recorder.Param, then func(*proxy.Admitted) error) error {
	return s.sess.Forward(v, params, func(adm proxy.Admitted) error { return then(&adm) }, func(ref *proxy.Refusal) error { return s.refuse(h, v, ref) })
}

// refuse answers the command of header h, decided as v, with the refusal
// ref (see refusalPacket).
func (s *session) refuse(h header, v authz.Verdict, ref *proxy.Refusal) error {
	return s.writeClient(h.seq+1, refusalPacket(v, ref, s.grantEnded))
}

// grantEnded reports whether the session's grant is no longer active.
func (s *session) grantEnded() bool {
	g := s.sess.Grant()
	return g == nil || g.EffectiveState(time.Now()) != authz.StateActive
}

// query authorizes and runs a COM_QUERY (or a command decided as SQL):
// every statement is decided before any is forwarded, and each result the
// upstream sends is recorded against its statement.
func (s *session) query(h header, body []byte, v authz.Verdict, binary bool) error {
	return s.admit(h, v, nil, func(adm *proxy.Admitted) error {
		if err := s.forward(body); err != nil {
			return err
		}
		return s.relayResults(&tracker{adm: adm, v: v}, binary)
	})
}

// kill runs k, a KILL the grant's own sessions decided (killVerdict) to
// name t: the upstream gets it with t's upstream thread id, and a wait of
// t's for an approver ends (see kill.go); a refused one gets the server's
// answer for an unknown id, with why.
func (s *session) kill(h header, v authz.Verdict, k killStmt, t *killTarget) error {
	return s.sess.Forward(v, nil, func(a proxy.Admitted) error {
		adm := &a
		if t.sess.CancelHold() && k.query {
			// Nothing of t's runs upstream: the KILL QUERY is answered
			// with the upstream's OK to a ping, whose status flags
			// (autocommit, transaction) are this session's, as the
			// server's OK to the KILL would be.
			if err := s.forward([]byte{comPing}); err != nil {
				return err
			}
			ok, err := s.relayStatus()
			if ok {
				adm.Done(0, recorder.Result{Executed: true, Tag: "OK"})
			} else if err == nil {
				adm.Done(0, recorder.Result{Executed: false, Error: "the server refused a ping"})
			}
			return err
		}
		if err := s.forward(append([]byte{comQuery}, k.sql(t.thread)...)); err != nil {
			return err
		}
		return s.relayResults(&tracker{adm: adm, v: v}, false)
	}, func(ref *proxy.Refusal) error {
		if ref.Kind == "policy" {
			return s.writeClient(h.seq+1, errPacket(erNoSuchThread, "HY000", fmt.Sprintf("Unknown thread id: %d (%s)", k.id, ref.Msg)))
		}
		return s.refuse(h, v, ref)
	})
}

func (s *session) initDB(h header, body []byte) error {
	db := string(body[1:])
	// The client knows the database by the resource's name.
	if db == s.res.Name {
		db = s.res.Database
		body = append([]byte{comInitDB}, db...)
	}
	v := s.az.InitDB(s.sess.Grant(), db)
	return s.admit(h, v, nil, func(adm *proxy.Admitted) error {
		if err := s.forward(body); err != nil {
			return err
		}
		ok, err := s.relayStatus()
		if ok {
			s.az.SetDatabase(db)
			adm.Done(0, recorder.Result{Executed: true, Tag: "OK"})
		} else if err == nil {
			adm.Done(0, recorder.Result{Executed: true, Error: "the server refused the database"})
		}
		return err
	})
}

func stmtID(body []byte) (uint32, bool) {
	if len(body) < 5 {
		return 0, false
	}
	return binary.LittleEndian.Uint32(body[1:]), true
}

func (s *session) resolve(id uint32) uint32 {
	if id == lastPrepared {
		return s.lastStmt
	}
	return id
}

// prepare authorizes a COM_STMT_PREPARE. Nothing runs at prepare, so an
// allowed statement is only remembered under its id; its executions are
// what get recorded. A refused one is recorded here, where the client
// learns of it.
func (s *session) prepare(h header, body []byte) error {
	sql := proxy.TextOf(body[1:])
	v := s.az.Prepare(s.sess.Grant(), sql)
	if len(v.Statements) > 1 {
		v = authz.Verdict{Statements: []authz.Decision{{Text: sql, Rule: "multi-statement-prepare",
			Reason: "a prepared statement must hold exactly one statement"}}}
	}
	if !v.Allow {
		return s.refuse(h, v, s.sess.Refuse(v))
	}
	if err := s.forward(body); err != nil {
		return err
	}
	uh, err := s.upHeader()
	if err != nil {
		return err
	}
	if s.peek(uh) != hdrOK {
		return s.relayLogical(uh)
	}
	p, seq, err := s.readUp(uh)
	if err != nil {
		return err
	}
	if len(p) < 12 {
		return &upstreamError{fmt.Errorf("malformed COM_STMT_PREPARE answer of %d bytes", len(p))}
	}
	id := binary.LittleEndian.Uint32(p[1:])
	cols, params := int(binary.LittleEndian.Uint16(p[5:])), int(binary.LittleEndian.Uint16(p[7:]))
	s.stmts[id] = &stmt{verdict: v, params: params}
	s.lastStmt = id
	if err := s.writeClient(seq, p); err != nil {
		return err
	}
	for _, n := range []int{params, cols} {
		if n == 0 {
			continue
		}
		if _, err := s.relayColumns(n); err != nil {
			return err
		}
	}
	return nil
}

// execute records a COM_STMT_EXECUTE with its parameters under the
// decision made at prepare, then forwards it.
func (s *session) execute(h header, body []byte) error {
	id, ok := executeHeader(body)
	if !ok {
		return &frameError{msg: "malformed COM_STMT_EXECUTE"}
	}
	st := s.stmts[s.resolve(id)]
	if st == nil {
		return s.deny(h, fmt.Sprintf("COM_STMT_EXECUTE of statement %d", id), "unknown-statement", "EXECUTE",
			"the statement was not prepared through airlock in this session (or was closed); prepare it with COM_STMT_PREPARE")
	}
	vals, err := parseExecute(body, st)
	if err != nil {
		return err
	}
	params := make([]recorder.Param, len(vals))
	for i, v := range vals {
		p := s.sess.Param(v.value, v.binary, v.null)
		if v.long != nil {
			p.Size = int(v.long.size)
			p.Truncated = p.Truncated || v.long.size > int64(len(v.long.head))
		}
		p.Type = v.typ
		params[i] = p
	}
	st.long = nil
	return s.admit(h, st.verdict, params, func(adm *proxy.Admitted) error {
		if err := s.forward(body); err != nil {
			return err
		}
		return s.relayResults(&tracker{adm: adm, v: st.verdict}, true)
	})
}

// sendLongData streams a COM_STMT_SEND_LONG_DATA to the upstream, keeping
// its size and first bytes for the record of the execution. No answer
// comes.
func (s *session) sendLongData(h header) error {
	if h.n < 7 {
		return &frameError{msg: "malformed COM_STMT_SEND_LONG_DATA"}
	}
	b, err := s.cr.Peek(7)
	if err != nil {
		return err
	}
	id, param := binary.LittleEndian.Uint32(b[1:]), int(binary.LittleEndian.Uint16(b[5:]))
	var ld *longData
	if st := s.stmts[s.resolve(id)]; st != nil && param < st.params {
		if st.long == nil {
			st.long = map[int]*longData{}
		}
		if ld = st.long[param]; ld == nil {
			ld = &longData{}
			st.long[param] = ld
		}
	}
	const keep = 64 << 10 // at least the recorder's cap; the rest is counted
	first := true
	for {
		if err := writeHeader(s.uw, h); err != nil {
			return &upstreamError{err}
		}
		n := h.n
		if first {
			hdr, _ := s.cr.Peek(7)
			if _, err := s.uw.Write(hdr); err != nil {
				return &upstreamError{err}
			}
			_, _ = s.cr.Discard(7)
			n -= 7
			first = false
		}
		for n > 0 {
			chunk, err := s.cr.Peek(min(n, s.cr.Size()))
			if len(chunk) == 0 && err != nil {
				return eofIsUnexpected(err)
			}
			if ld != nil {
				ld.size += int64(len(chunk))
				if len(ld.head) < keep {
					ld.head = append(ld.head, chunk[:min(len(chunk), keep-len(ld.head))]...)
				}
			}
			if _, err := s.uw.Write(chunk); err != nil {
				return &upstreamError{err}
			}
			_, _ = s.cr.Discard(len(chunk))
			n -= len(chunk)
		}
		if h.last() {
			return nil
		}
		if h, err = readHeader(s.cr); err != nil {
			return eofIsUnexpected(err)
		}
	}
}

// violation records a malformed command, tells the client and ends the
// session. The server's own code for a packet it cannot read is 1158
// (08S01): a communication error, after which drivers drop the
// connection, as the gateway does.
func (s *session) violation(h header, msg string) string {
	return s.violationCode(h, msg, erNetReadError, "08S01")
}

func (s *session) violationCode(h header, msg string, code uint16, state string) string {
	s.sess.Violation(msg)
	_ = s.writeClient(h.seq+1, errPacket(code, state, "airlock: protocol violation: "+msg))
	_ = s.flushClient()
	return "protocol violation: " + msg
}

func (s *session) clientReadEnded(err error) string {
	reason, stalled := s.sess.Conn().ReadEnded(err)
	if stalled {
		// The client began a command and stopped sending it: the
		// server's own error for a read that timed out.
		_ = s.writeClient(1, errPacket(erNetReadInterrupted, "08S01", "airlock: terminating connection: the "+reason))
		_ = s.flushClient()
	}
	return reason
}

func (s *session) discardClient(h header) error {
	for {
		if _, err := s.cr.Discard(h.n); err != nil {
			return err
		}
		if h.last() {
			return nil
		}
		var err error
		if h, err = readHeader(s.cr); err != nil {
			return err
		}
	}
}

// forward sends a command upstream as one packet with sequence id 0.
func (s *session) forward(body []byte) error {
	if _, err := writePacket(s.uw, 0, body); err != nil {
		return &upstreamError{err}
	}
	if err := s.uw.Flush(); err != nil {
		return &upstreamError{err}
	}
	return nil
}

func (s *session) forwardEmpty(cmd byte) error { return s.forward([]byte{cmd}) }

// setIdle marks the session as waiting for the client's next command
// (endIdle ends that).
func (s *session) setIdle() {
	s.cwMu.Lock()
	s.idle = true
	s.clientSeq = 1
	s.startIdleLocked()
	s.cwMu.Unlock()
}

func (s *session) flushClient() error {
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	if s.cw == nil {
		return nil
	}
	return s.cw.Flush()
}

// writeClient writes one logical packet to the client starting at seq.
func (s *session) writeClient(seq byte, p []byte) error {
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	next, err := writePacket(s.clientWriter(), seq, p)
	s.clientSeq = next
	return err
}
