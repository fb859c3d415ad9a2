package postgres

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockhq/airlock/authz"
	pgauthz "github.com/airlockhq/airlock/authz/postgres"
	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
)

// refusedSQL replaces a refused statement on its way upstream (as a Query
// or Parse; as the portal name of a refused Execute). It fails, so the upstream answers with an error in exactly the place the
// refused statement's answer would be (and aborts an open transaction, as a
// real error would); the gateway swaps that error for its own refusal. The
// refused statement itself never leaves the gateway.
const refusedSQL = "airlock_refused_statement"

// pending is a client message whose answer the upstream still owes.
type pending struct {
	kind    byte           // the client message type: Q, F, P, B, D, E, C, S
	adm     proxy.Admitted // Valid for an admitted Query or Execute
	refusal *proxy.Refusal
	// next is, for a simple query, the index of the statement whose
	// completion comes next.
	next   int
	failed bool
	// describesStatement marks a Describe of statement name (not of a
	// portal): its ParameterDescription gives the statement's parameter
	// types.
	describesStatement bool
	// name is the statement a Parse or a Describe names, or the portal a
	// Bind or an Execute names; stmt is the statement a Bind binds. They tie a
	// server error at Parse or Bind to the Execute it fails (see
	// skipToSync).
	name, stmt string
}

// session relays one authorized client connection.
type session struct {
	p    *Protocol
	sess *proxy.Session
	cl   *client
	up   *upstream
	// clientPID is the backend process id the client was given
	// (BackendKeyData), in place of the upstream's.
	clientPID uint32
	// ur and uw read from and write to the server, cl.r and cl.w the
	// client; each is nil while its direction is idle (idle.go), and
	// fromClient and fromUpstream wait for the next message meanwhile.
	ur                       *bufio.Reader
	uw                       *bufio.Writer
	fromClient, fromUpstream proxy.Primer
	// toUp and toClient stream the bodies the gateway does not read, one
	// per relaying goroutine.
	toUp, toClient proxy.Copier

	// az is the session's authorizer: it remembers what was prepared.
	az *pgauthz.Session

	cwMu sync.Mutex // guards cl.w (nil while the server is quiet, see clientWriter): the upstream reader and the ender write to it

	qmu   sync.Mutex
	queue []*pending
	// qhead is where the queue begins in queue; free are records to
	// reuse; popped are those pop took since the upstream goroutine's
	// last recycle (that goroutine's only).
	qhead  int
	free   []*pending
	popped []*pending
	// paramTypes are the parameter type OIDs of prepared statements, as
	// the client's Parse or the server's ParameterDescription gave them,
	// so binary parameters are recorded as text (guarded by qmu: the
	// upstream goroutine learns them, the client goroutine reads them).
	paramTypes map[string][]uint32

	// Client-goroutine state: the decision on each prepared statement, and
	// what each portal runs with which parameters, so an Execute is
	// authorized and recorded as what it really runs.
	stmts   map[string]*authz.Verdict
	portals map[string]*bound
	buf     []byte
	// bindMsg is the Bind being read, paramText a binary parameter's
	// text form (bind.go), kept from message to message.
	bindMsg   bindMsg
	paramText []byte
	// dataRows counts the DataRows since the last message that ended a
	// result: a PortalSuspended's tag carries no row count (upstream
	// goroutine only).
	dataRows int64
	// streamed counts the bytes of rows and COPY data since the last
	// result ended; past streamThreshold the client writer grows, and
	// small is the writer it replaced (upstream goroutine only).
	streamed int64
	small    *bufio.Writer
	// refusedBeforeSync is set when a Parse or Execute was refused since
	// the client's last Sync: the stand-in's error makes the server skip
	// every message up to that Sync.
	refusedBeforeSync bool
	// tags are the completion tags seen, each kept once (upstream
	// goroutine only; see tag).
	tags map[string]string
	// upstreamFatal is the FATAL (or PANIC) error the server sent before
	// closing the connection, for the session's end reason (upstream
	// goroutine only).
	upstreamFatal string
	// maxStatement is recorder.max_statement_bytes: larger messages are
	// not read whole (see oversized).
	maxStatement int
}

// relay runs the session until either side stops or the session's context
// ends it, and returns why it ended.
func relay(p *Protocol, sess *proxy.Session, cl *client, up *upstream, clientPID uint32) string {
	s := &session{
		p: p, sess: sess, cl: cl, up: up, clientPID: clientPID,
		az: pgauthz.NewSession(pgauthz.Options{Cache: p.decisions()}),
		// Small, and held only while their direction is busy
		// (idle.go): frames larger than a buffer are streamed past it
		// (bufio reads and writes directly once its buffer is empty),
		// so they cost no copy.
		ur:    readers.Take(up.conn),
		uw:    upstreamWriters.Take(up.conn),
		stmts: map[string]*authz.Verdict{}, portals: map[string]*bound{},
		maxStatement: sess.MaxStatementBytes(),
	}
	s.fromClient, s.fromUpstream = proxy.NewPrimer(cl.conn), proxy.NewPrimer(up.conn)
	reason := sess.Relay(s)
	if s.upstreamFatal != "" && !strings.HasPrefix(reason, "upstream closed") && sess.Context().Err() == nil {
		// The server ended the connection, and the client hung up on
		// reading its FATAL before the upstream's close was seen: the
		// server's word is why (unless the gateway ended the session,
		// e.g. terminating the backend of a revoked grant).
		reason = "upstream closed the connection: " + s.upstreamFatal
	}
	s.unanswered(reason)
	return reason
}

// Run implements proxy.Relay: one goroutine a direction.
func (s *session) Run() string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.sess.Stop(s.upstreamToClient())
	}()
	why := s.clientToUpstream()
	s.sess.Stop(why)
	<-done
	return why
}

// Terminate implements proxy.Relay: a FATAL admin_shutdown, as the server
// sends when its backend is terminated.
func (s *session) Terminate(msg string) {
	s.fatal(stateAdminShutdown, "airlock: terminating connection: "+msg)
}

// Close implements proxy.Relay.
func (s *session) Close() {
	s.cl.conn.Close()
	s.up.conn.Close()
}

// fatal writes a FATAL error to the client.
func (s *session) fatal(code, msg string) {
	s.cwMu.Lock()
	w := s.clientWriter()
	_ = send(w, errorResponse("FATAL", code, msg))
	_ = w.Flush()
	s.cwMu.Unlock()
}

// unanswered records an outcome for each statement the upstream still
// owed an answer when the relay ended (the client disconnected during a
// query, the grant was revoked, the upstream went away). They were
// forwarded, so they may have run, but nobody will learn how they ended;
// their outcomes ride on the session's end event. Both relaying goroutines
// have returned, so the queue is this goroutine's.
func (s *session) unanswered(reason string) {
	for h := s.pop(); h != nil; h = s.pop() {
		if !h.adm.Valid() || h.failed {
			// Not a statement, or a refused one: nothing ran. Or a
			// query whose error (a FATAL: the server ended the
			// connection) recorded every outcome already.
			continue
		}
		for i := h.next; i < h.adm.Len(); i++ {
			h.adm.Done(i, recorder.Result{Executed: true, Error: "outcome unknown: the session ended (" + reason + ") before the server answered"})
		}
	}
}

// push queues what the upstream owes an answer to. Its record comes from
// the session's free list: a statement's round trip allocates no pending.
func (s *session) push(p pending) {
	s.qmu.Lock()
	var it *pending
	if n := len(s.free); n > 0 {
		it, s.free = s.free[n-1], s.free[:n-1]
	} else {
		it = new(pending)
	}
	*it = p
	if s.qhead > 0 && len(s.queue) == cap(s.queue) {
		// Full, with room at the front (a pipeline that never drains):
		// move down rather than grow.
		n := copy(s.queue, s.queue[s.qhead:])
		clear(s.queue[n:])
		s.queue, s.qhead = s.queue[:n], 0
	}
	s.queue = append(s.queue, it)
	s.qmu.Unlock()
}

func (s *session) head() *pending {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.qhead == len(s.queue) {
		return nil
	}
	return s.queue[s.qhead]
}

// pop takes the head off the queue. The upstream goroutine may use it
// until it calls recycle.
func (s *session) pop() *pending {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.qhead == len(s.queue) {
		return nil
	}
	p := s.queue[s.qhead]
	s.queue[s.qhead] = nil
	if s.qhead++; s.qhead == len(s.queue) {
		// Empty: start again at the front of the same array.
		s.queue, s.qhead = s.queue[:0], 0
	}
	s.popped = append(s.popped, p)
	return p
}

// maxFree bounds the free list: a session that once pipelined thousands
// of messages does not keep their records for its whole life.
const maxFree = 16

// recycle returns what pop took, now that the upstream goroutine is done
// with it, to the free list.
func (s *session) recycle() {
	if len(s.popped) == 0 {
		return
	}
	s.qmu.Lock()
	for i, p := range s.popped {
		*p = pending{} // drops its statement and refusal
		if len(s.free) < maxFree {
			s.free = append(s.free, p)
		}
		s.popped[i] = nil
	}
	s.qmu.Unlock()
	s.popped = s.popped[:0]
}

// clientToUpstream reads client messages, authorizes and records what needs
// it, and forwards. It returns why the session should end.
func (s *session) clientToUpstream() string {
	c := s.sess.Conn()
	for {
		if s.cl.r.Buffered() == 0 {
			if err := s.uw.Flush(); err != nil {
				return "upstream write failed: " + err.Error()
			}
			// Idle until the next message begins: no time limit, and
			// no buffers held meanwhile (idle.go; this goroutine is
			// their only user).
			upstreamWriters.Put(s.uw)
			readers.Put(s.cl.r)
			s.uw, s.cl.r = nil, nil
			r, err := s.fromClient.Wait(readers)
			if err != nil {
				return s.clientReadEnded(err)
			}
			s.cl.r, s.uw = r, upstreamWriters.Take(s.up.conn)
		}
		c.MessageStarted()
		typ, n, err := readHeader(s.cl.r)
		if err != nil {
			return s.clientReadEnded(err)
		}
		held := readWhole(typ) // read into memory whole
		if n > s.maxStatement && held {
			err = s.oversized(typ, n)
			typ, held = 0, false // handled
		}
		switch typ {
		case 0:
		case 'Q':
			err = s.query(n)
		case 'P':
			err = s.parse(n)
		case 'B':
			err = s.bind(n)
		case 'E':
			err = s.execute(n)
		case 'C':
			err = s.close(n)
		case 'D':
			err = s.describe(n)
		case 'S':
			s.refusedBeforeSync = false
			err = s.forwardExpecting('S', n)
		case 'H', 'd', 'c', 'f':
			// Flush, and COPY data for a COPY that was authorized when
			// its statement was; outside COPY the server rejects them.
			err = s.forward(typ, n)
		case 'F':
			err = s.functionCall(n)
		case 'X':
			_ = s.forward(typ, n)
			_ = s.uw.Flush()
			return "client terminated"
		default:
			s.protocolViolation(fmt.Sprintf("unsupported message type %q", typ))
			return fmt.Sprintf("protocol violation: message type %q", typ)
		}
		if err != nil {
			var fe *frameError
			if errors.As(err, &fe) {
				s.protocolViolation(fe.msg)
				return "protocol violation: " + fe.msg
			}
			if c.Stalled(err) {
				return s.clientReadEnded(err)
			}
			return "relay ended: " + err.Error()
		}
		if held {
			proxy.ReleaseLarge(n)
		}
		c.MessageDone()
	}
}

func (s *session) clientReadEnded(err error) string {
	var fe *frameError
	if errors.As(err, &fe) {
		s.protocolViolation(fe.msg)
		return "protocol violation: " + fe.msg
	}
	reason, stalled := s.sess.Conn().ReadEnded(err)
	if stalled {
		// The client began a message and stopped sending it.
		s.fatal(stateProtocolViolation, "airlock: terminating connection: the "+reason)
	}
	return reason
}

// protocolViolation records the attempt, tells the client and lets the
// caller end the session.
func (s *session) protocolViolation(msg string) {
	s.sess.Violation(msg)
	s.fatal(stateProtocolViolation, "airlock: protocol violation: "+msg)
}

func (s *session) body(n int, typ byte) ([]byte, error) {
	b, err := readBody(s.cl.r, s.buf, n, typ)
	proxy.AfterLargeRead(n)
	if cap(b) <= proxy.KeepBuf {
		s.buf = b // keep small buffers for reuse
	}
	return b, err
}

// query handles a simple-protocol Query: every statement of it is
// authorized before any is forwarded.
func (s *session) query(n int) error {
	body, err := s.body(n, 'Q')
	if err != nil {
		return err
	}
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		return &frameError{"Query message without its terminating zero byte"}
	}
	// A view of the reused buffer: see proxy.ViewOf for who copies what.
	v := s.az.Query(s.sess.Grant(), proxy.ViewOf(body[:i]))
	return s.sess.Forward(v, nil, func(adm proxy.Admitted) error {
		s.push(pending{kind: 'Q', adm: adm})
		return writeFrame(s.uw, 'Q', body)
	}, func(ref *proxy.Refusal) error {
		return s.refuse('Q', ref, &pgproto3.Query{String: refusedSQL})
	})
}

// parse handles an extended-protocol Parse. Nothing runs at Parse, so an
// allowed statement is only remembered under its name; its Executes are
// what get recorded. A refused one is recorded here, where the client
// learns of it.
func (s *session) parse(n int) error {
	body, err := s.body(n, 'P')
	if err != nil {
		return err
	}
	var p pgproto3.Parse
	if len(body) > proxy.KeepBuf {
		name, query, ok := decodeParse(body)
		if !ok {
			return &frameError{"malformed Parse"}
		}
		p.Name, p.Query = name, query
	} else if err := p.Decode(body); err != nil {
		return &frameError{"malformed Parse: " + err.Error()}
	}
	v := s.az.Parse(s.sess.Grant(), p.Name, p.Query)
	if !v.Allow {
		// Kept under the name so that an Execute of it is refused with
		// this reason, not as a statement the gateway never saw.
		s.stmts[p.Name] = &v
		return s.refuse('P', s.sess.Refuse(v), &pgproto3.Parse{Name: p.Name, Query: refusedSQL})
	}
	s.stmts[p.Name] = &v
	s.setParamTypes(p.Name, p.ParameterOIDs, true)
	s.push(pending{kind: 'P', name: p.Name})
	return writeFrame(s.uw, 'P', body)
}

// describe forwards a Describe, noting which statement it describes.
func (s *session) describe(n int) error {
	body, err := s.body(n, 'D')
	if err != nil {
		return err
	}
	if len(body) < 2 {
		return &frameError{"malformed Describe"}
	}
	name, _, _ := cstring(body[1:])
	s.push(pending{kind: 'D', name: name, describesStatement: body[0] == 'S'})
	return writeFrame(s.uw, 'D', body)
}

// setParamTypes notes statement name's parameter types; from a Parse
// (fresh) they replace what a statement of that name had, from a
// ParameterDescription they fill in what the Parse left unspecified.
func (s *session) setParamTypes(name string, oids []uint32, fresh bool) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if fresh {
		delete(s.paramTypes, name)
	}
	if len(oids) == 0 {
		return
	}
	if s.paramTypes == nil {
		s.paramTypes = map[string][]uint32{}
	}
	old := s.paramTypes[name]
	merged := make([]uint32, len(oids))
	for i, o := range oids {
		if o == 0 && i < len(old) {
			o = old[i]
		}
		merged[i] = o
	}
	s.paramTypes[name] = merged
}

func (s *session) paramTypesOf(name string) []uint32 {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.paramTypes[name]
}

// execute re-uses the decision made at Parse for the portal's statement,
// and records the execution before forwarding it.
func (s *session) execute(n int) error {
	body, err := s.body(n, 'E')
	if err != nil {
		return err
	}
	name, _, ok := cutCString(body)
	if !ok {
		return &frameError{"malformed Execute"}
	}
	var v *authz.Verdict
	var params []recorder.Param
	var portal string
	if b := s.portals[string(name)]; b != nil {
		v, params, portal = b.v, b.params, b.name
	} else {
		portal = string(name)
	}
	if v != nil && !v.Allow && s.refusedBeforeSync {
		// Its statement was refused at Parse in this same pipeline (as
		// drivers send Parse, Bind, Execute, Sync at once): that refusal
		// is recorded and answered, and the server skips everything up
		// to the Sync. Recording this Execute too would count one refused
		// statement twice. A stand-in all the same, so that nothing the
		// client named is ever forwarded.
		s.push(pending{kind: 'E', name: portal})
		return send(s.uw, &pgproto3.Execute{Portal: refusedSQL})
	}
	if v == nil {
		// Bound to a statement this session did not Parse through us
		// (e.g. one made with SQL PREPARE): we cannot say what it runs.
		v = &authz.Verdict{Statements: []authz.Decision{{Text: "<execute portal " + strconv.Quote(portal) + ">", Rule: "unknown-statement",
			Reason: "the portal is bound to a statement the gateway did not authorize; prepare it with a Parse message"}}}
	}
	if !v.Allow {
		// Refused at Parse (its stand-in is what the server prepared) or
		// unknown: refused again, never held.
		return s.refuse('E', s.sess.Refuse(*v), &pgproto3.Execute{Portal: refusedSQL})
	}
	return s.sess.Forward(*v, params, func(adm proxy.Admitted) error {
		s.push(pending{kind: 'E', adm: adm, name: portal})
		return writeFrame(s.uw, 'E', body)
	}, func(ref *proxy.Refusal) error {
		return s.refuse('E', ref, &pgproto3.Execute{Portal: refusedSQL})
	})
}

func (s *session) close(n int) error {
	body, err := s.body(n, 'C')
	if err != nil {
		return err
	}
	if len(body) < 2 {
		return &frameError{"malformed Close"}
	}
	name, _, _ := cstring(body[1:])
	if body[0] == 'S' {
		delete(s.stmts, name)
		s.setParamTypes(name, nil, true)
		s.az.CloseStatement(name)
	} else {
		delete(s.portals, name)
	}
	s.push(pending{kind: 'C'})
	return writeFrame(s.uw, 'C', body)
}

// functionCall refuses the FunctionCall message: it calls a function by
// OID, outside any statement the authorizer could read.
func (s *session) functionCall(n int) error {
	// Refused whatever it holds, so it is not read into memory.
	if _, err := s.cl.r.Discard(n); err != nil {
		return eofUnexpected(err)
	}
	ref := s.sess.Refuse(authz.SingleVerdict(authz.Decision{
		Text: "<FunctionCall message>", Rule: "function-call",
		Reason: "the FunctionCall protocol message is not allowed through airlock; call the function in a SELECT instead",
		Class:  authz.Classification{Kind: "FUNCTION CALL", Required: authz.AccessAdmin},
	}))
	return s.refuse('F', ref, &pgproto3.Query{String: refusedSQL})
}

// refuse sends standIn, whose error the upstream reader will replace with
// the refusal.
func (s *session) refuse(kind byte, ref *proxy.Refusal, standIn encoder) error {
	if kind == 'P' || kind == 'E' {
		s.refusedBeforeSync = true
	}
	s.push(pending{kind: kind, refusal: ref})
	return send(s.uw, standIn)
}

func (s *session) forwardExpecting(kind byte, n int) error {
	s.push(pending{kind: kind})
	return s.forward(kind, n)
}

func (s *session) forward(typ byte, n int) error {
	if err := writeHeader(s.uw, typ, n); err != nil {
		return err
	}
	return s.toUp.Copy(s.uw, s.cl.r, n)
}

// upstreamToClient relays the upstream's messages, reading only the few
// that close a statement (to record its outcome) and replacing the stand-in
// errors of refused messages. It returns why the session should end.
func (s *session) upstreamToClient() string {
	var buf []byte
	defer s.shrinkClientWriter()
	for {
		s.recycle()
		if s.ur.Buffered() == 0 {
			// Everything read is relayed: send it, and hold no buffers
			// while the server is quiet (idle.go).
			if err := s.releaseClientWriter(); err != nil {
				return "client write failed: " + err.Error()
			}
			readers.Put(s.ur)
			s.ur = nil
			r, err := s.fromUpstream.Wait(readers)
			if err != nil {
				return s.upstreamReadEnded(err)
			}
			s.ur = r
		}
		typ, n, err := readHeader(s.ur)
		if err != nil {
			return s.upstreamReadEnded(err)
		}
		switch typ {
		case 'D', 'd':
			if typ == 'D' {
				s.dataRows++
			}
			if s.streamed += int64(n); s.streamed >= streamThreshold && s.small == nil {
				s.growClientWriter()
			}
		case 'C', 'I', 's', 'E', 'Z', '1', '2', '3', 'n', 'T', 'A', 't':
			if typ == 'T' && n > 64<<10 {
				// A huge RowDescription is only ever relayed.
				if h := s.head(); h != nil && h.kind == 'D' {
					s.pop()
				}
				break
			}
			if buf, err = readBody(s.ur, buf, n, typ); err != nil {
				return "upstream read failed: " + err.Error()
			}
			out := s.observe(typ, buf)
			if typ == 'C' || typ == 'I' || typ == 's' || typ == 'E' || typ == 'Z' {
				s.dataRows, s.streamed = 0, 0 // a result ended
			}
			s.cwMu.Lock()
			if out != nil {
				err = send(s.clientWriter(), out)
			} else {
				err = writeFrame(s.clientWriter(), typ, buf)
			}
			s.cwMu.Unlock()
			if err != nil {
				return "client write failed: " + err.Error()
			}
			continue
		}
		s.cwMu.Lock()
		w := s.clientWriter()
		err = writeHeader(w, typ, n)
		if err == nil {
			err = s.toClient.Copy(w, s.ur, n)
		}
		s.cwMu.Unlock()
		if err != nil {
			return "relay failed: " + err.Error()
		}
	}
}

// upstreamReadEnded is why the session ends when reading the server
// failed with err.
func (s *session) upstreamReadEnded(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		if s.upstreamFatal != "" {
			return "upstream closed the connection: " + s.upstreamFatal
		}
		return "upstream closed the connection"
	}
	return "upstream read failed: " + err.Error()
}

// streamThreshold is how many bytes of rows (or COPY data) one result
// relays before the session's client writer grows to bigWriterSize:
// fewer, larger TLS records and writes for a large result, while other
// sessions use small ones, and idle sessions none (idle.go).
const (
	streamThreshold = 256 << 10
	bigWriterSize   = 64 << 10
)

// bigWriters are the large client writers of sessions streaming a
// result, shared so that they cost memory only while in use.
var bigWriters = proxy.NewWriterPool(bigWriterSize)

// growClientWriter swaps the client writer for a large one. What the
// small one holds is flushed first, so the order of bytes is kept.
func (s *session) growClientWriter() {
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	if s.small != nil || s.clientWriter().Flush() != nil {
		return // a failed flush stays on the small writer and fails again there
	}
	s.small, s.cl.w = s.cl.w, bigWriters.Take(s.cl.conn)
}

// shrinkClientWriter returns to the small writer once the large one is
// flushed (when the result has ended and everything is sent, or the
// relay stops).
func (s *session) shrinkClientWriter() {
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	s.shrinkClientWriterLocked()
}

// shrinkClientWriterLocked is shrinkClientWriter; s.cwMu is held.
func (s *session) shrinkClientWriterLocked() {
	if s.small == nil || s.cl.w.Buffered() > 0 {
		return // s.cl.w is the large writer: not nil
	}
	bigWriters.Put(s.cl.w)
	s.cl.w, s.small = s.small, nil
}

// observe records what an upstream message says about the pending client
// messages, and puts the client's pid into the session's own
// notifications (in place). It returns a replacement message, or nil to
// relay the body as is.
func (s *session) observe(typ byte, body []byte) encoder {
	if typ == 'A' {
		// NotificationResponse. The client knows its backend by the
		// gateway's pid, so a notification its own session sent must
		// carry that pid: clients tell their own notifications from
		// others' by it.
		if len(body) >= 4 && binary.BigEndian.Uint32(body) == s.up.pid {
			binary.BigEndian.PutUint32(body, s.clientPID)
		}
		return nil
	}
	h := s.head()
	switch typ {
	case 'C': // CommandComplete
		tag := s.tag(body)
		res := recorder.Result{Executed: true, Tag: tag, Rows: rowsOf(tag)}
		if h == nil {
			return nil
		}
		switch h.kind {
		case 'Q':
			if h.adm.Valid() {
				h.adm.Done(h.next, res)
				h.adm.Restart()
			}
			h.next++
		case 'E':
			s.pop()
			if h.adm.Valid() {
				h.adm.Done(0, res)
			}
		}
	case 'I': // EmptyQueryResponse
		if h != nil && h.kind == 'E' {
			s.pop()
		}
	case 's': // PortalSuspended
		if h != nil && h.kind == 'E' {
			s.pop()
			if h.adm.Valid() {
				// An Execute with a row limit (JDBC's fetch size):
				// record the rows it returned.
				rows := s.dataRows
				h.adm.Done(0, recorder.Result{Executed: true, Tag: "(portal suspended)", Rows: &rows})
			}
		}
	case '1', '2', '3': // ParseComplete, BindComplete, CloseComplete
		s.pop()
	case 't': // ParameterDescription, before a statement's RowDescription
		if h != nil && h.kind == 'D' && h.describesStatement {
			var d pgproto3.ParameterDescription
			if d.Decode(body) == nil {
				s.setParamTypes(h.name, d.ParameterOIDs, false)
			}
		}
	case 'n', 'T': // NoData, RowDescription
		if h != nil && h.kind == 'D' {
			s.pop()
		}
	case 'E':
		return s.observeError(h, body)
	case 'Z': // ReadyForQuery ends a Query, FunctionCall or Sync
		for h := s.pop(); h != nil; h = s.pop() {
			if h.kind == 'Q' || h.kind == 'F' || h.kind == 'S' {
				break
			}
		}
	}
	return nil
}

func (s *session) observeError(h *pending, body []byte) encoder {
	var e pgproto3.ErrorResponse
	_ = e.Decode(body)
	fatal := e.SeverityUnlocalized == "FATAL" || e.SeverityUnlocalized == "PANIC" ||
		e.SeverityUnlocalized == "" && (e.Severity == "FATAL" || e.Severity == "PANIC")
	if fatal {
		// The server is ending the connection (pg_terminate_backend,
		// idle_session_timeout, shutdown): the client gets its own
		// words, and they say why the session ended.
		s.upstreamFatal = e.Severity + " " + e.Code + ": " + e.Message
	}
	if h == nil || fatal && h.refusal != nil {
		return nil
	}
	if h.refusal != nil {
		out := refusalResponse(h.refusal)
		if h.kind != 'Q' && h.kind != 'F' {
			s.pop()
			s.skipToSync(nil, recorder.Result{})
		}
		return out
	}
	res := recorder.Result{Executed: true, Error: e.Message, SQLState: e.Code}
	var out encoder
	if cause := context.Cause(s.sess.Context()); errors.Is(cause, proxy.ErrGrantEnded) && e.Detail == "" {
		// The statement was stopped because the grant ended (see
		// Interrupt): the server's error, and why in its detail, as a
		// client that exits on the error reads no later FATAL.
		e.Detail = "airlock: the statement was stopped: " + proxy.EndMessage(cause)
		out = &e
	}
	switch h.kind {
	case 'Q', 'F':
		if h.adm.Valid() && !h.failed {
			h.adm.Done(h.next, res)
			for i := h.next + 1; i < h.adm.Len(); i++ {
				h.adm.Done(i, recorder.Result{Error: "not executed: an earlier statement of the message failed"})
			}
		}
		h.failed = true
	default:
		s.pop()
		if h.kind == 'E' && h.adm.Valid() {
			h.adm.Done(0, res)
		}
		s.skipToSync(h, res)
	}
	return out
}

// skipToSync drops what the server will skip after an error in the
// extended protocol: everything up to the next Sync. When the failed
// message is a Parse or a Bind, the Executes it was for (of portals bound
// from that statement, or of that portal) failed with its error: an
// unknown table fails at Parse, and 1/0 at Bind, where the planner folds
// it. They are recorded with that error, as the same statement is over
// the simple protocol; other Executes as not executed.
func (s *session) skipToSync(failed *pending, res recorder.Result) {
	own := map[string]bool{} // portals whose Execute failed with res
	if failed != nil && failed.kind == 'B' {
		own[failed.name] = true
	}
	for h := s.head(); h != nil && h.kind != 'S'; h = s.head() {
		s.pop()
		switch {
		case h.kind == 'B' && failed != nil && failed.kind == 'P' && h.stmt == failed.name:
			own[h.name] = true
		case h.kind == 'E' && h.adm.Valid() && own[h.name]:
			delete(own, h.name) // a second Execute of it is only skipped
			h.adm.Done(0, res)
		case h.kind == 'E' && h.adm.Valid():
			h.adm.Done(0, recorder.Result{Error: "not executed: an earlier message of the pipeline failed"})
		}
	}
}

// cstring splits a zero-terminated string off b.
func cstring(b []byte) (string, []byte, bool) {
	s, rest, ok := cutCString(b)
	return string(s), rest, ok
}

// cutCString cuts a zero-terminated string from the front of b, as a view
// of b.
func cutCString(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// rowsOf reads the row count from a completion tag such as "SELECT 3" or
// "INSERT 0 5". Counts below len(smallCounts) point into it, so the
// common ones cost no allocation; nothing writes through a Result's Rows.
func rowsOf(tag string) *int64 {
	i := strings.LastIndexByte(tag, ' ')
	if i < 0 {
		return nil
	}
	n, err := strconv.ParseInt(tag[i+1:], 10, 64)
	if err != nil {
		return nil
	}
	if n >= 0 && n < int64(len(smallCounts)) {
		return &smallCounts[n]
	}
	big := n // only this one escapes
	return &big
}

// smallCounts holds i at i.
var smallCounts = func() (c [1024]int64) {
	for i := range c {
		c[i] = int64(i)
	}
	return c
}()

// tag is the completion tag of a CommandComplete body. A session's tags
// repeat ("SELECT 1"), so each is kept once: up to maxTags of them, after
// which new ones are allocated as they come.
func (s *session) tag(body []byte) string {
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		i = len(body)
	}
	b := body[:i]
	if t, ok := s.tags[string(b)]; ok {
		return t
	}
	t := string(b)
	if len(s.tags) < maxTags {
		if s.tags == nil {
			s.tags = map[string]string{}
		}
		s.tags[t] = t
	}
	return t
}

const maxTags = 64
