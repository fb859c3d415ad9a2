// Package mysql is airlock's MySQL listener: it terminates the client's
// protocol (TLS, the grant token checked with caching_sha2_password,
// mysql_native_password or, inside TLS, mysql_clear_password), connects to
// the resource with the gateway's own credentials (go-mysql's client), and
// relays the session packet by packet, authorizing and recording every
// statement before it is forwarded. Results stream through; the gateway
// reads only the packets that frame them.
package mysql

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pingcap/tidb/pkg/parser/charset"

	myauthz "github.com/airlockhq/airlock/authz/mysql"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/credential"
	"github.com/airlockhq/airlock/proxy"
)

// Protocol serves MySQL clients.
type Protocol struct {
	// TLS is the server certificate configuration; nil refuses TLS.
	TLS *tls.Config
	// AllowPlaintext lets clients connect without TLS (never with
	// mysql_clear_password).
	AllowPlaintext bool
	// Resources are the configured resources; the MySQL ones are probed
	// for the server version the greeting announces.
	Resources []config.Resource
	// Dialer connects to upstreams; nil uses a default with a 10s timeout.
	Dialer *net.Dialer
	// NewAuthorizer makes the statement authorizer of one session; nil
	// uses authz's MySQL authorizer.
	NewAuthorizer func(myauthz.Options) Authorizer
	// Log is for what happens outside a session (version probes).
	Log *slog.Logger
	// AWS mints the tokens of rds-iam resources; nil refuses them.
	AWS RDSAuth

	versions versionCache
	cache    cacheHolder
	kills    killTargets
}

// Name implements proxy.Protocol.
func (p *Protocol) Name() string { return "mysql" }

// Error codes and SQLSTATEs the gateway sends.
const (
	erAccessDenied          = 1045 // 28000
	erBadDB                 = 1049 // 42000
	erConCount              = 1040 // 08004
	erNoDB                  = 1046 // 3D000
	erHandshake             = 1043 // 08S01
	erTableAccessDenied     = 1142 // 42000: the refusal of a statement
	erQueryInterrupted      = 1317 // 70100: a query killed by KILL QUERY
	erUnknown               = 1105 // HY000
	erUnknownCom            = 1047 // 08S01
	erNetPacketTooLarge     = 1153 // 08S01
	erNetReadInterrupted    = 1159 // 08S01: timeout reading communication packets
	erHostIsBlocked         = 1129 // HY000
	erConnectionKilled      = 1927 // 70100
	erSecureTransportNeeded = 3159 // HY000
)

// handshakeError is a failure of the connection phase to report to the
// client and record.
type handshakeError struct {
	code  uint16
	state string
	msg   string
	kind  string // proxy.AuthError kind for the record
}

func (e *handshakeError) Error() string { return e.msg }

// client is the client side of a connection.
type client struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	seq  byte // the next sequence id to write during the handshake
	tls  bool
}

// newClient takes the connection's buffers from the session pools
// (idle.go): the relay goes on with them and gives them back.
func newClient(nc net.Conn) *client {
	return &client{conn: nc, r: readers.Take(nc), w: writers.Take(nc)}
}

// read reads one logical packet of the connection phase.
func (cl *client) read(limit int, what string) ([]byte, error) {
	if err := cl.w.Flush(); err != nil {
		return nil, err
	}
	h, err := readHeader(cl.r)
	if err != nil {
		return nil, err
	}
	if h.seq != cl.seq {
		return nil, &frameError{msg: fmt.Sprintf("%s has sequence id %d, want %d", what, h.seq, cl.seq)}
	}
	p, last, err := readPayload(cl.r, h, nil, limit, what)
	cl.seq = last + 1
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, &frameError{msg: what + " truncated: the client sent less than the packet header announced"}
	}
	return p, err
}

// write writes one logical packet of the connection phase.
func (cl *client) write(p []byte) error {
	var err error
	cl.seq, err = writePacket(cl.w, cl.seq, p)
	return err
}

func (cl *client) sendError(code uint16, state, msg string) {
	_ = cl.write(errPacket(code, state, msg))
	_ = cl.w.Flush()
}

// Serve implements proxy.Protocol.
func (p *Protocol) Serve(ctx context.Context, c *proxy.Conn) {
	log := c.Logger()
	// The connection phase must finish promptly; the relay clears the
	// deadline.
	_ = c.SetDeadline(time.Now().Add(c.LoginTimeout()))
	cl := newClient(c.Conn)
	hs, err := p.handshake(ctx, cl)
	if err != nil {
		var he *handshakeError
		var fe *frameError
		switch {
		case errors.As(err, &he):
			cl.sendError(he.code, he.state, he.msg)
			if he.kind != "" {
				c.Refuse(hs.user(), hs.db(), nil, &proxy.AuthError{Kind: he.kind, Msg: he.msg})
			}
		case errors.As(err, &fe):
			code, state := uint16(erHandshake), "08S01"
			if fe.tooLong {
				code = erNetPacketTooLarge
			}
			cl.sendError(code, state, "airlock: bad handshake: "+fe.msg)
			c.Refuse(hs.user(), hs.db(), nil, &proxy.AuthError{Kind: "protocol", Msg: fe.Error()})
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			// A client (or a port scan) that hung up before saying who it
			// is: there is nothing to attribute the attempt to.
			if hs.resp != nil {
				c.Refuse(hs.user(), hs.db(), nil, &proxy.AuthError{Kind: "protocol", Msg: "client hung up during the handshake"})
			}
			log.Debug("client gone during handshake", "err", err)
		default:
			log.Debug("handshake failed", "err", err)
			if hs.resp != nil {
				c.Refuse(hs.user(), hs.db(), nil, &proxy.AuthError{Kind: "protocol", Msg: "handshake failed: " + err.Error()})
			}
		}
		return
	}
	sess, err := p.authenticate(ctx, c, cl, hs)
	if err != nil {
		return
	}
	up, err := p.dialUpstream(sess.Context(), sess, hs.resp)
	if err != nil {
		log.Error("upstream connection failed", "err", err)
		cl.sendError(erUnknown, "HY000", fmt.Sprintf("airlock: cannot connect to resource %s: %v", sess.Resource().Name, err))
		sess.End("upstream connection failed: " + err.Error())
		return
	}
	// The status flags come from the upstream's session: a driver that
	// interpolates parameters itself escapes by SERVER_STATUS_NO_BACKSLASH_
	// ESCAPES (go-sql-driver's interpolateParams), and must see the
	// server's from the start.
	if err := cl.write(okPacket(up.status())); err != nil {
		up.conn.Close()
		sess.End("client gone before ready: " + err.Error())
		return
	}
	if err := cl.w.Flush(); err != nil {
		up.conn.Close()
		sess.End("client gone before ready: " + err.Error())
		return
	}
	_ = c.SetDeadline(time.Time{})
	defer p.kills.add(hs.connID, killTarget{grant: sess.Grant().ID, resource: sess.Resource().Name,
		thread: up.thread, session: sess.ID, sess: sess})()
	reason := relay(p, sess, cl, up)
	sess.End(reason)
}

// handshakeState is what the connection phase learned, for the record of
// a refusal.
type handshakeState struct {
	challenge []byte
	resp      *response
	// connID is the connection id the greeting gave the client.
	connID uint32
}

func (h *handshakeState) user() string {
	if h == nil || h.resp == nil {
		return ""
	}
	return h.resp.user
}

func (h *handshakeState) db() string {
	if h == nil || h.resp == nil {
		return ""
	}
	return h.resp.db
}

// handshake sends the greeting, negotiates TLS and reads the client's
// handshake response.
func (p *Protocol) handshake(ctx context.Context, cl *client) (*handshakeState, error) {
	hs := &handshakeState{challenge: newChallenge(), connID: p.kills.newConnID()}
	caps := uint32(serverCaps)
	if p.TLS != nil {
		caps |= capSSL
	}
	g := &greeting{
		version:   p.versions.announce(ctx, p),
		connID:    hs.connID,
		challenge: hs.challenge,
		caps:      caps,
		collation: 45, // utf8mb4_general_ci
		status:    statusAutocommit,
		plugin:    pluginCachingSHA2,
	}
	if err := cl.write(g.encode()); err != nil {
		return hs, err
	}
	pkt, err := cl.read(maxHandshake, "handshake response")
	if err != nil {
		return hs, err
	}
	resp, err := parseResponse(pkt, caps)
	if err != nil {
		return hs, err
	}
	if resp.ssl && p.TLS == nil {
		return hs, &frameError{msg: "SSL request, but TLS is not configured on this gateway"}
	}
	if resp.ssl {
		// A MySQL client sends its ClientHello right behind the SSL
		// request without waiting for an answer, so the reader may
		// already hold its first bytes: the TLS layer reads through it.
		tc := proxy.ServerTLS(&proxy.PrereadConn{Conn: cl.conn, R: cl.r, Pool: readers}, p.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return hs, fmt.Errorf("TLS handshake: %w", err)
		}
		seq := cl.seq
		if cl.w.Buffered() == 0 {
			writers.Put(cl.w)
		}
		*cl = *newClient(tc)
		cl.seq, cl.tls = seq, true
		if pkt, err = cl.read(maxHandshake, "handshake response"); err != nil {
			return hs, err
		}
		if resp, err = parseResponse(pkt, caps); err != nil {
			return hs, err
		}
		if resp.ssl {
			return hs, &frameError{msg: "a second SSL request"}
		}
	}
	hs.resp = resp
	if !cl.tls && !p.AllowPlaintext {
		return hs, &handshakeError{erSecureTransportNeeded, "HY000",
			"airlock requires TLS: connect with --ssl (mysql, mariadb) or ssl-mode=REQUIRED / tls=true in your driver", "protocol"}
	}
	if resp.user == "" {
		return hs, &handshakeError{erAccessDenied, "28000", "airlock: no user name: connect as your agent name", "protocol"}
	}
	if cs := collationCharset(resp.collation); cs != "" && !myauthz.SafeCharset(cs) {
		return hs, &handshakeError{erAccessDenied, "28000",
			fmt.Sprintf("airlock: character set %s is not allowed (its multi-byte characters can hide quotes); use utf8mb4", cs), "protocol"}
	}
	return hs, nil
}

// collationCharset is the character set of a handshake collation id, ""
// when unknown (the upstream then gets utf8mb4). A character set whose
// multi-byte characters can end in 0x5c (backslash) would let text the
// authorizer reads as one string end a string literal for the server.
func collationCharset(id byte) string {
	if c, err := charset.GetCollationByID(int(id)); err == nil {
		return c.CharsetName
	}
	return ""
}

// authenticate checks the client's answer to the challenge against the
// verifiers of the agent's grants and starts the session.
func (p *Protocol) authenticate(ctx context.Context, c *proxy.Conn, cl *client, hs *handshakeState) (*proxy.Session, error) {
	resp := hs.resp
	refuse := func(msg string) error {
		ae := &proxy.AuthError{Kind: "protocol", Msg: msg}
		c.Refuse(resp.user, resp.db, nil, ae)
		cl.sendError(erAccessDenied, "28000", "airlock: "+msg)
		return ae
	}
	plugin, data, challenge := resp.plugin, resp.auth, hs.challenge
	if resp.caps&capPluginAuth == 0 {
		plugin = pluginNative
	}
	switch plugin {
	case pluginNative, pluginCachingSHA2:
	case pluginClear:
		if !cl.tls {
			return nil, refuse("mysql_clear_password is accepted only inside TLS; the token crossed the network in clear, request a new grant")
		}
	default:
		// Ask for the plugin every current client has.
		challenge = newChallenge()
		plugin = pluginCachingSHA2
		if err := cl.write(authSwitch(plugin, challenge)); err != nil {
			return nil, err
		}
		var err error
		if data, err = cl.read(maxHandshake, "auth switch response"); err != nil {
			return nil, refuse("authentication aborted: " + err.Error())
		}
	}
	if len(data) == 0 || len(data) == 1 && data[0] == 0 {
		return nil, refuse(fmt.Sprintf("authentication failed for %s: no password given; the password is your grant token", resp.user))
	}
	match := matcher(plugin, challenge, data)
	if match == nil {
		return nil, refuse(fmt.Sprintf("authentication failed: malformed %s answer", plugin))
	}
	if resp.db == "" {
		// No database, no resource named: the token's grant names one.
		// The mysql client's second connection that sends KILL QUERY
		// on Ctrl-C comes so.
		if resp.db = p.mysqlResource(c.ResourceOf(resp.user, match)); resp.db == "" {
			msg := fmt.Sprintf("airlock: no database: name the resource as the database, e.g. mysql -u %s -p RESOURCE", resp.user)
			c.Refuse(resp.user, "", nil, &proxy.AuthError{Kind: "protocol", Msg: msg})
			cl.sendError(erNoDB, "3D000", msg)
			return nil, errors.New(msg)
		}
	}
	sess, err := c.Authenticate(ctx, resp.user, resp.db, match)
	if err != nil {
		code, state := loginRefusalCode(err)
		cl.sendError(code, state, "airlock: "+err.Error())
		return nil, err
	}
	if plugin == pluginCachingSHA2 {
		// The fast path succeeded; clients then wait for the OK.
		if err := cl.write([]byte{hdrAuthMore, sha2FastAuthOK}); err != nil {
			sess.End("client gone during authentication")
			return nil, err
		}
	}
	return sess, nil
}

// mysqlResource returns name when it is a MySQL resource of the gateway,
// else "".
func (p *Protocol) mysqlResource(name string) string {
	for _, r := range p.Resources {
		if r.Name == name && r.Protocol == "mysql" {
			return name
		}
	}
	return ""
}

// loginRefusalCode is the server's error for the closest case of a
// refused login: 1049 ER_BAD_DB_ERROR for a resource the gateway does not
// have, 1044 ER_DBACCESS_DENIED_ERROR for a grant on another resource,
// 1040 ER_CON_COUNT_ERROR (08004, the server refused to open a
// connection now) when the gateway cannot confirm grants or record, so
// pools try again later; 1129 ER_HOST_IS_BLOCKED after too many failed
// logins; 1045 ER_ACCESS_DENIED_ERROR otherwise.
func loginRefusalCode(err error) (uint16, string) {
	ae, _ := proxy.AsAuthError(err)
	if ae != nil {
		switch ae.Kind {
		case "no-resource":
			return erBadDB, "42000"
		case "wrong-resource":
			return erDBAccessDenied, "42000"
		case "unavailable", "recorder":
			return erConCount, "08004"
		case "throttled":
			// Too many failed logins (limits.login_failures): the
			// server's own answer to a host with too many errors.
			return erHostIsBlocked, "HY000"
		}
	}
	return erAccessDenied, "28000"
}

// matcher returns the test of one grant's verifier against the client's
// answer, or nil when the answer cannot be one.
func matcher(plugin string, challenge, data []byte) func(*credential.Verifier) bool {
	switch plugin {
	case pluginNative:
		if len(data) != 20 {
			return nil
		}
		return func(v *credential.Verifier) bool { return v.CheckMySQLNative(challenge, data) }
	case pluginCachingSHA2:
		if len(data) != 32 {
			return nil
		}
		return func(v *credential.Verifier) bool { return v.CheckMySQLSHA2(challenge, data) }
	case pluginClear:
		token := strings.TrimSuffix(string(data), "\x00")
		return func(v *credential.Verifier) bool { return v.CheckToken(token) }
	}
	return nil
}

// newChallenge returns a 20-byte challenge. Its bytes are printable and
// never NUL, since the greeting ends the challenge with a NUL.
func newChallenge() []byte {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic("mysql: no randomness: " + err.Error())
	}
	for i := range b {
		b[i] = 0x21 + b[i]%0x5e
	}
	return b
}

// versionCache keeps the server version each MySQL resource announced.
type versionCache struct {
	mu       sync.Mutex
	byName   map[string]string
	probed   bool
	probing  chan struct{}
	fallback string
}

// fallbackVersion is announced when no upstream could be asked.
const fallbackVersion = "8.0.0-airlock"

// remember records the version an upstream announced.
func (v *versionCache) remember(resource, version string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.byName == nil {
		v.byName = map[string]string{}
	}
	v.byName[resource] = version
}

// announce is the version the greeting carries. The greeting goes out
// before the client names its resource, so with several MySQL resources
// it is the version of the first configured one that is known.
func (v *versionCache) announce(ctx context.Context, p *Protocol) string {
	v.mu.Lock()
	if !v.probed {
		if v.probing == nil {
			v.probing = make(chan struct{})
			go v.probe(p)
		}
		ch := v.probing
		v.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
		v.mu.Lock()
	}
	defer v.mu.Unlock()
	for _, r := range p.Resources {
		if ver, ok := v.byName[r.Name]; ok && r.Protocol == "mysql" {
			return ver
		}
	}
	return fallbackVersion
}

// Probe reads the greeting of every MySQL resource for its version; the
// gateway calls it at start so the first client already sees the real
// version.
func (p *Protocol) Probe() {
	p.versions.mu.Lock()
	if p.versions.probed || p.versions.probing != nil {
		ch := p.versions.probing
		p.versions.mu.Unlock()
		if ch != nil {
			<-ch
		}
		return
	}
	p.versions.probing = make(chan struct{})
	p.versions.mu.Unlock()
	p.versions.probe(p)
}

func (v *versionCache) probe(p *Protocol) {
	var wg sync.WaitGroup
	for _, r := range p.Resources {
		if r.Protocol != "mysql" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ver, err := probeVersion(p.dialer(), r.Address)
			if err != nil {
				if p.Log != nil {
					p.Log.Warn("cannot read the server version of a MySQL resource", "resource", r.Name, "err", err)
				}
				return
			}
			v.remember(r.Name, ver)
		}()
	}
	wg.Wait()
	v.mu.Lock()
	v.probed = true
	close(v.probing)
	v.mu.Unlock()
}

// probeVersion reads a server's greeting and hangs up.
func probeVersion(d *net.Dialer, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(nc)
	h, err := readHeader(r)
	if err != nil {
		return "", err
	}
	pkt, _, err := readPayload(r, h, nil, maxHandshake, "server greeting")
	if err != nil {
		return "", err
	}
	g, err := parseGreeting(pkt)
	if err != nil {
		return "", err
	}
	return g.version, nil
}

func (p *Protocol) dialer() *net.Dialer {
	if p.Dialer != nil {
		return p.Dialer
	}
	return &net.Dialer{Timeout: 10 * time.Second}
}
