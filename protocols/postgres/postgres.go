// Package postgres is airlock's PostgreSQL listener: it terminates the
// client's protocol (TLS, SCRAM with the grant token), connects to the
// resource with the gateway's own credentials, and relays the session,
// authorizing and recording every statement before it is forwarded.
package postgres

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockhq/airlock/authz"
	pgauthz "github.com/airlockhq/airlock/authz/postgres"
	"github.com/airlockhq/airlock/credential"
	"github.com/airlockhq/airlock/proxy"
)

// Protocol serves PostgreSQL clients.
type Protocol struct {
	// TLS is the server certificate configuration; nil refuses TLS.
	TLS *tls.Config
	// AllowPlaintext lets clients connect without TLS.
	AllowPlaintext bool
	// AWS mints the tokens of rds-iam resources; nil refuses them.
	AWS RDSAuth

	cancels   cancels
	cacheOnce sync.Once
	cache     *authz.DecisionCache
}

// decisions is the decision cache shared by the listener's sessions, keyed
// by exact statement text and grant.
func (p *Protocol) decisions() *authz.DecisionCache {
	p.cacheOnce.Do(func() { p.cache = authz.NewDecisionCache(0) })
	return p.cache
}

// Name implements proxy.Protocol.
func (p *Protocol) Name() string { return "postgres" }

// Startup request codes that stand where a protocol version would.
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
)

// client is the client side of a connection during startup.
type client struct {
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	tls    bool
	params map[string]string
	// settings are the settings the client asked for at connect time
	// (startup.go).
	settings []pgauthz.StartupParam
}

// Serve implements proxy.Protocol.
func (p *Protocol) Serve(ctx context.Context, c *proxy.Conn) {
	log := c.Logger()
	// Startup must finish promptly; the relay clears the deadline.
	_ = c.SetDeadline(time.Now().Add(c.LoginTimeout()))
	cl, err := p.startup(c.Conn)
	if err != nil {
		var fe *fatal
		if errors.As(err, &fe) {
			cl.sendFatal(fe.code, fe.msg)
			c.Refuse(cl.params["user"], cl.params["database"], nil, &proxy.AuthError{Kind: "protocol", Msg: fe.msg})
		} else if cr, ok := err.(cancelPacket); ok {
			p.cancelRequest(cr, c)
		} else if !errors.Is(err, io.EOF) {
			log.Debug("startup failed", "err", err)
		}
		return
	}
	agent, resource := cl.params["user"], cl.params["database"]
	sess, err := p.authenticate(ctx, c, cl, agent, resource)
	if err != nil {
		cl.sendFatal(authErrorCode(err), "airlock: "+err.Error())
		return
	}
	adm, fe := admitSettings(sess, cl.settings)
	if fe != nil {
		cl.sendFatal(fe.code, fe.msg)
		sess.End("refused at startup: " + fe.msg)
		return
	}
	up, err := p.dialUpstream(ctx, sess.Resource(), upstreamParams(sess.Grant(), cl.settings))
	settingsApplied(adm, err)
	if err != nil {
		if e := upstreamRefusal(err); e != nil {
			// The server refused what the client asked for: its words.
			log.Info("upstream refused the connection", "err", err)
			_ = send(cl.w, e)
			_ = cl.w.Flush()
		} else {
			log.Error("upstream connection failed", "err", err)
			cl.sendFatal(stateConnectionFailure, fmt.Sprintf("airlock: cannot connect to resource %s: %v", sess.Resource().Name, err))
		}
		sess.End("upstream connection failed: " + err.Error())
		return
	}
	// The client gets its own backend key, not the upstream's, so it
	// cannot cancel another session's queries by guessing.
	ct := &cancelTarget{sess: sess, addr: sess.Resource().Address, pid: up.pid, key: up.key}
	defer p.cancels.add(ct)()
	if err := cl.sendReady(up, ct); err != nil {
		up.conn.Close()
		sess.End("client gone before ready: " + err.Error())
		return
	}
	_ = c.SetDeadline(time.Time{})
	reason := relay(p, sess, cl, up, ct.clientPID)
	sess.End(reason)
}

// fatal is a startup failure to report to the client with a SQLSTATE.
type fatal struct{ code, msg string }

func (f *fatal) Error() string { return f.msg }

// cancelPacket ends startup: the connection carried a CancelRequest.
type cancelPacket []byte

func (cancelPacket) Error() string { return "cancel request" }

// startup negotiates TLS and reads the StartupMessage.
func (p *Protocol) startup(conn net.Conn) (*client, error) {
	// With TLS (the rule) these serve only the SSLRequest; startTLS
	// replaces them, and a plaintext session gets its own below.
	cl := &client{conn: conn, r: bufio.NewReaderSize(conn, 4<<10), w: bufio.NewWriterSize(conn, 512), params: map[string]string{}}
	// PostgreSQL 17's direct TLS starts with a TLS ClientHello (0x16)
	// instead of an SSLRequest.
	if b, err := cl.r.Peek(1); err == nil && b[0] == 0x16 {
		if err := p.startTLS(cl, true); err != nil {
			return cl, err
		}
	}
	for {
		body, err := readStartupPacket(cl.r)
		if err != nil {
			var fe *frameError
			if errors.As(err, &fe) {
				return cl, &fatal{stateProtocolViolation, fe.Error()}
			}
			return cl, err
		}
		code := binary.BigEndian.Uint32(body)
		switch {
		case code == codeSSLRequest:
			if cl.tls || p.TLS == nil {
				if err := cl.writeByte('N'); err != nil {
					return cl, err
				}
				continue
			}
			// Bytes after the SSLRequest, sent before the handshake,
			// would be read as if they came through TLS
			// (CVE-2021-23214); refuse them.
			if cl.r.Buffered() > 0 {
				return cl, &fatal{stateProtocolViolation, "unencrypted data after SSLRequest"}
			}
			if err := cl.writeByte('S'); err != nil {
				return cl, err
			}
			if err := p.startTLS(cl, false); err != nil {
				return cl, err
			}
		case code == codeGSSENCRequest:
			if err := cl.writeByte('N'); err != nil {
				return cl, err
			}
		case code == codeCancelRequest:
			return cl, cancelPacket(body)
		case code>>16 == 3:
			var sm pgproto3.StartupMessage
			if code != pgproto3.ProtocolVersion30 && code != pgproto3.ProtocolVersion32 {
				// A newer 3.x minor: answer with what we speak.
				binary.BigEndian.PutUint32(body, pgproto3.ProtocolVersion30)
			}
			if err := sm.Decode(body); err != nil {
				return cl, &fatal{stateProtocolViolation, "malformed startup message: " + err.Error()}
			}
			cl.params = sm.Parameters
			return cl, p.checkStartup(cl, code)
		default:
			// The server's own answer to a protocol it does not speak.
			return cl, &fatal{stateFeatureNotSupported, fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", code>>16, code&0xffff)}
		}
	}
}

// checkStartup refuses what the gateway will not relay and answers a
// protocol-version request it does not fully speak.
func (p *Protocol) checkStartup(cl *client, version uint32) error {
	if !cl.tls && !p.AllowPlaintext {
		return &fatal{stateInvalidAuthSpec, "airlock requires TLS: connect with sslmode=require"}
	}
	if !cl.tls {
		// Nothing is buffered for writing yet; the reader keeps its
		// buffer, which may hold what the client already sent.
		cl.w = bufio.NewWriterSize(cl.conn, 4<<10)
	}
	if cl.params["user"] == "" {
		return &fatal{stateInvalidAuthSpec, "no user in the startup message: connect as your agent name"}
	}
	if cl.params["database"] == "" {
		cl.params["database"] = cl.params["user"]
	}
	if v, ok := cl.params["replication"]; ok && !isFalse(v) {
		return &fatal{stateInsufficientPrivilege, "airlock: replication connections are not allowed"}
	}
	// Settings are decided once the grant is known (admitSettings); the
	// options parameter must at least read as PostgreSQL reads it.
	set, err := settings(cl.params)
	if err != nil {
		return err
	}
	cl.settings = set
	var unknown []string
	for k := range cl.params {
		if strings.HasPrefix(k, "_pq_.") {
			unknown = append(unknown, k)
		}
	}
	if version != pgproto3.ProtocolVersion30 || len(unknown) > 0 {
		sort.Strings(unknown)
		if err := send(cl.w, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown}); err != nil {
			return err
		}
	}
	return nil
}

func isFalse(v string) bool {
	switch strings.ToLower(v) {
	case "false", "0", "off", "no", "f", "n":
		return true
	}
	return false
}

func (p *Protocol) startTLS(cl *client, direct bool) error {
	if p.TLS == nil {
		return &fatal{stateProtocolViolation, "TLS is not configured on this gateway"}
	}
	cfg := p.TLS
	if direct {
		// Direct TLS must name the protocol in ALPN, so a TLS
		// connection meant for another service is not taken for ours.
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"postgresql"}
	}
	var raw net.Conn = cl.conn
	if direct {
		// The ClientHello's first bytes were peeked into the reader.
		raw = &proxy.PrereadConn{Conn: cl.conn, R: cl.r}
	}
	tc := proxy.ServerTLS(raw, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	if direct && tc.ConnectionState().NegotiatedProtocol != "postgresql" {
		return errors.New("direct TLS without ALPN postgresql")
	}
	cl.conn, cl.tls = tc, true
	cl.r = bufio.NewReaderSize(tc, 2<<10)
	cl.w = bufio.NewWriterSize(tc, 4<<10)
	return nil
}

// readStartupPacket reads an untyped startup packet: length, then body.
func readStartupPacket(r *bufio.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(h[:])) - 4
	if n < 4 || n > maxStartup {
		return nil, &frameError{fmt.Sprintf("startup packet claims length %d, outside 8..%d", n+4, maxStartup)}
	}
	return readBody(r, nil, n, 0)
}

func (cl *client) writeByte(b byte) error {
	if err := cl.w.WriteByte(b); err != nil {
		return err
	}
	return cl.w.Flush()
}

func (cl *client) sendFatal(code, msg string) {
	_ = send(cl.w, errorResponse("FATAL", code, msg))
	_ = cl.w.Flush()
}

// authenticate runs SCRAM-SHA-256 with the grant token as the password.
func (p *Protocol) authenticate(ctx context.Context, c *proxy.Conn, cl *client, agent, resource string) (*proxy.Session, error) {
	refuse := func(msg string) error {
		ae := &proxy.AuthError{Kind: "protocol", Msg: msg}
		c.Refuse(agent, resource, nil, ae)
		return ae
	}
	if err := send(cl.w, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}); err != nil {
		return nil, err
	}
	if err := cl.w.Flush(); err != nil {
		return nil, err
	}
	body, err := cl.readPassword()
	if err != nil {
		return nil, refuse("authentication aborted: " + err.Error())
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(body); err != nil || init.AuthMechanism != "SCRAM-SHA-256" {
		return nil, refuse("authentication failed: the client must use SCRAM-SHA-256 with the grant token as the password")
	}
	sc := &scramServer{salt: credential.Salt(agent)}
	serverFirst, err := sc.first(string(init.Data))
	if err != nil {
		return nil, refuse("authentication failed: " + err.Error())
	}
	if err := send(cl.w, &pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)}); err != nil {
		return nil, err
	}
	if err := cl.w.Flush(); err != nil {
		return nil, err
	}
	body, err = cl.readPassword()
	if err != nil {
		return nil, refuse("authentication aborted: " + err.Error())
	}
	proof, err := sc.final(string(body))
	if err != nil {
		return nil, refuse("authentication failed: " + err.Error())
	}
	var matched *credential.Verifier
	sess, err := c.Authenticate(ctx, agent, resource, func(v *credential.Verifier) bool {
		if v.CheckProof(sc.authMessage, proof) {
			matched = v
			return true
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	if err := send(cl.w, &pgproto3.AuthenticationSASLFinal{Data: []byte(sc.serverFinal(matched))}); err != nil {
		sess.End("client gone during authentication")
		return nil, err
	}
	return sess, nil
}

// readPassword reads one 'p' message (SASL responses travel in it).
func (cl *client) readPassword() ([]byte, error) {
	if err := cl.w.Flush(); err != nil {
		return nil, err
	}
	typ, n, err := readHeader(cl.r)
	if err != nil {
		return nil, err
	}
	if typ != 'p' {
		return nil, fmt.Errorf("expected a password message, got %q", typ)
	}
	if n > 64<<10 {
		return nil, fmt.Errorf("password message of %d bytes is too long", n)
	}
	return readBody(cl.r, nil, n, typ)
}

// sendReady completes the client's startup with the upstream's parameters
// and the gateway's own backend key.
func (cl *client) sendReady(up *upstream, ct *cancelTarget) error {
	msgs := []encoder{&pgproto3.AuthenticationOk{}}
	keys := make([]string, 0, len(up.params))
	for k := range up.params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: up.params[k]})
	}
	msgs = append(msgs, &pgproto3.BackendKeyData{ProcessID: ct.clientPID, SecretKey: ct.clientKey}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := send(cl.w, msgs...); err != nil {
		return err
	}
	return cl.w.Flush()
}
