package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// limitsConfig is the limits block of the tests below: short enough to
// watch, with delays that double 50ms, 100ms, 200ms, 400ms.
const limitsConfig = `limits:
  login_timeout: 3s
  message_timeout: 2s
  login_failures: { per_source: 4, per_agent: 20, window: 10m, lockout: 1m, delay: 50ms, max_delay: 400ms }
`

// from dials from a loopback address of its own, so each protocol's
// guesses count against an address of their own.
func from(ip string) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
}

func (g *gateway) pgLoginFrom(ip, user, token string) error {
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=demo-pg sslmode=require", host, port, user, token))
	if err != nil {
		return err
	}
	cfg.DialFunc = from(ip).DialContext
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err == nil {
		c.Close(ctx)
	}
	return err
}

func (g *gateway) myLoginFrom(ip, user, token string) error {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, token, "limits-"+ip, g.MySQLAddr, "shop-mysql"
	c.TLSConfig = "skip-verify"
	c.Timeout = 10 * time.Second
	mysql.RegisterDialContext(c.Net, func(ctx context.Context, addr string) (net.Conn, error) {
		return from(ip).DialContext(ctx, "tcp", addr)
	})
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dc, err := conn.Connect(ctx)
	if err == nil {
		dc.Close()
	}
	return err
}

func (g *gateway) sshLoginFrom(ip, user, token string) error {
	nc, err := from(ip).Dial("tcp", g.ssh.addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	c, _, _, err := ssh.NewClientConn(nc, g.ssh.addr, &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.Password(token)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if err == nil {
		c.Close()
	}
	return err
}

// TestLoginThrottle: wrong tokens from one address are answered slower
// and slower, then the address is refused, its valid token too, on every
// listener, while other addresses are served; guesses at one agent spread
// over many addresses lock the agent. Each refusal is recorded and the
// lockouts are counted in a metric.
func TestLoginThrottle(t *testing.T) {
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	g := startGateway(t, gatewayOptions{MySQL: true, SSH: true, Config: limitsConfig, Listen: "  metrics: " + metricsAddr + "\n"})
	_, pgTok := grantFor(t, g, "read")
	myTok := g.grantMySQL("agent-1", "INC-16: throttle", "read").Token
	sshTok := g.sshGrant("box", "INC-16: throttle", "--command", "true").Token

	type listener struct {
		name, ip, resourceUser, token string
		login                         func(ip, user, token string) error
		wrong, locked                 func(err error) bool
	}
	pgCode := func(code, text string) func(error) bool {
		return func(err error) bool {
			var pe *pgconn.PgError
			return errors.As(err, &pe) && pe.Code == code && strings.Contains(pe.Message, text)
		}
	}
	myCode := func(code uint16, text string) func(error) bool {
		return func(err error) bool {
			var me *mysql.MySQLError
			return errors.As(err, &me) && me.Number == code && strings.Contains(me.Message, text)
		}
	}
	sshRefused := func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "unable to authenticate")
	}
	for _, l := range []listener{
		{"postgres", "127.0.0.2", "agent-1", pgTok, g.pgLoginFrom, pgCode("28P01", "not the token"), pgCode("28000", "too many failed logins from 127.0.0.2")},
		// MySQL's own answer to a blocked host: ER_HOST_IS_BLOCKED.
		{"mysql", "127.0.0.3", "agent-1", myTok, g.myLoginFrom, myCode(1045, "not the token"), myCode(1129, "too many failed logins from 127.0.0.3")},
		{"ssh", "127.0.0.4", "agent-1+box", sshTok, g.sshLoginFrom, sshRefused, sshRefused},
	} {
		t.Run(l.name, func(t *testing.T) {
			if err := l.login(l.ip, l.resourceUser, l.token); err != nil {
				t.Fatalf("valid token before any failure: %v", err)
			}
			var took []time.Duration
			for i := 0; i < 4; i++ {
				start := time.Now()
				err := l.login(l.ip, l.resourceUser, "alk_wrong"+fmt.Sprint(i))
				took = append(took, time.Since(start))
				if !l.wrong(err) {
					t.Fatalf("wrong token %d: %v", i+1, err)
				}
			}
			// Later failures wait at least the doubled delay (a lower
			// bound: a busy machine only adds to it).
			if took[3] < 400*time.Millisecond {
				t.Errorf("fourth failure answered after %v, want at least 400ms (delays %v)", took[3], took)
			}
			err := l.login(l.ip, l.resourceUser, l.token)
			if err == nil || !l.locked(err) {
				t.Fatalf("valid token from a locked address: %v, want a refusal", err)
			}
			if err := l.login("127.0.0.9", l.resourceUser, l.token); err != nil {
				t.Fatalf("valid token from another address: %v", err)
			}
		})
	}

	// One agent guessed at from many addresses: the agent is locked, for
	// every address.
	for i := 1; i <= 20; i++ {
		if err := g.pgLoginFrom(fmt.Sprintf("127.0.1.%d", i), "agent-2", "alk_wrong"); err == nil {
			t.Fatal("wrong token accepted")
		}
	}
	if err := g.pgLoginFrom("127.0.1.99", "agent-2", "alk_wrong"); !pgCode("28000", "too many failed logins for agent agent-2")(err) {
		t.Errorf("agent-2 after 20 failures from 20 addresses: %v", err)
	}
	if err := g.pgLoginFrom("127.0.1.99", "agent-1", pgTok); err != nil {
		t.Errorf("agent-1 while agent-2 is locked: %v", err)
	}

	// Recorded: every throttled attempt is an auth.failed saying so.
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list", "--limit", "500")
	throttled := map[string]int{}
	for _, s := range list {
		if s.Status != recorder.StatusAuthFailed {
			continue
		}
		var d struct{ Events []recorder.Event }
		g.CLIJSON(&d, "rita", "sessions", "show", s.Session)
		for _, e := range d.Events {
			if e.Auth != nil && strings.HasPrefix(e.Auth.Reason, "throttled:") {
				throttled[s.Protocol]++
			}
		}
	}
	for _, p := range []string{"postgres", "mysql", "ssh"} {
		if throttled[p] == 0 {
			t.Errorf("no throttled attempt recorded for %s (%v)", p, throttled)
		}
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`airlock_login_lockouts_total{proto="postgres",scope="source"} 1`,
		`airlock_login_lockouts_total{proto="mysql",scope="source"} 1`,
		`airlock_login_lockouts_total{proto="ssh",scope="source"} 1`,
		`airlock_login_lockouts_total{proto="postgres",scope="agent"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestMessageStall: a message that begins and then stops arriving ends
// the session after limits.message_timeout with the protocol's own error,
// on every listener, and the session's end says why; a connection that
// never logs in is closed after limits.login_timeout. The gateway goes on
// serving.
func TestMessageStall(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true, SSH: true, Config: limitsConfig})
	pgGrant, pgTok := grantFor(t, g, "read")
	my := g.grantMySQL("agent-1", "INC-16: stall", "read")
	sshIss := g.sshGrant("box", "INC-16: stall", "--command", "true")

	// closedWithin reads r until the connection ends and fails t unless
	// that happens within limit.
	closedWithin := func(t *testing.T, what string, r io.Reader, limit time.Duration) {
		t.Helper()
		done := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, r); close(done) }()
		select {
		case <-done:
		case <-time.After(limit):
			t.Errorf("%s: connection still open after %v", what, limit)
		}
	}
	endReason := func(t *testing.T, evs []recorder.Event) string {
		t.Helper()
		for _, e := range evs {
			if e.End != nil {
				return e.End.Reason
			}
		}
		return ""
	}

	t.Run("postgres", func(t *testing.T) {
		host, port, _ := strings.Cut(g.PostgresAddr, ":")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		pc, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%s user=agent-1 password=%s dbname=demo-pg sslmode=require", host, port, pgTok))
		if err != nil {
			t.Fatal(err)
		}
		nc := pc.Conn()
		// A Query announcing 1000 bytes, of which 10 come.
		msg := []byte{'Q', 0, 0, 0x03, 0xec}
		if _, err := nc.Write(append(msg, "select 1 -"...)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		fe := pgproto3.NewFrontend(nc, nc)
		m, err := fe.Receive()
		er, ok := m.(*pgproto3.ErrorResponse)
		if err != nil || !ok || er.Code != "08P01" || er.Severity != "FATAL" || !strings.Contains(er.Message, "limits.message_timeout") {
			t.Fatalf("after a stalled Query: %#v, %v", m, err)
		}
		if d := time.Since(start); d < 1500*time.Millisecond {
			t.Errorf("stall noticed after %v, before the 2s timeout", d)
		}
		closedWithin(t, "postgres", nc, 10*time.Second)
		evs := sessionEvents(t, g, func(evs []recorder.Event) bool { return len(evs) > 0 && evs[0].Grant == pgGrant })
		if r := endReason(t, evs); !strings.Contains(r, "limits.message_timeout") {
			t.Errorf("session end reason %q", r)
		}
	})

	t.Run("mysql", func(t *testing.T) {
		c := g.mysqlRaw("agent-1", my.Token)
		nc := c.Conn.Conn
		// A packet header claiming 16 MB, then 100 bytes, then nothing.
		hdr := []byte{0xff, 0xff, 0xff, 0, 3}
		if _, err := nc.Write(append(hdr, make([]byte, 99)...)); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(nc)
		p, err := readRawPacket(r)
		// MySQL's own words for it: ER_NET_READ_INTERRUPTED.
		if code, msg := errOf(p); err != nil || code != 1159 || !strings.Contains(msg, "limits.message_timeout") {
			t.Fatalf("after a stalled packet: %q (%v), want error 1159", p, err)
		}
		closedWithin(t, "mysql", r, 10*time.Second)
		evs := g.sessionEvents(my.Grant.ID)
		if len(evs) == 0 || !strings.Contains(endReason(t, evs[len(evs)-1]), "limits.message_timeout") {
			t.Errorf("session end: %+v", evs)
		}
	})

	t.Run("ssh", func(t *testing.T) {
		nc, err := net.DialTimeout("tcp", g.ssh.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		c, chans, reqs, err := ssh.NewClientConn(nc, g.ssh.addr, &ssh.ClientConfig{
			User: "agent-1+box", Auth: []ssh.AuthMethod{ssh.Password(sshIss.Token)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		})
		if err != nil {
			t.Fatal(err)
		}
		go ssh.DiscardRequests(reqs)
		go func() {
			for ch := range chans {
				ch.Reject(ssh.Prohibited, "no")
			}
		}()
		// Below the SSH layer: the length of a 1000-byte packet (sent in
		// the clear with AES-GCM, the default), and nothing more.
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], 1000)
		if _, err := nc.Write(l[:]); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("ssh connection still open 20s after its client stalled mid-packet")
		}
		list := g.sessionsOf("box")
		if len(list) == 0 {
			t.Fatal("no ssh session recorded")
		}
		var d struct{ Events []recorder.Event }
		g.CLIJSON(&d, "rita", "sessions", "show", list[0].Session)
		if r := endReason(t, d.Events); !strings.Contains(r, "limits.message_timeout") {
			t.Errorf("session end reason %q", r)
		}
	})

	// Connections that never finish logging in are closed after
	// login_timeout, on each listener.
	for _, l := range []struct{ name, addr string }{{"postgres", g.PostgresAddr}, {"mysql", g.MySQLAddr}, {"ssh", g.ssh.addr}} {
		nc, err := net.DialTimeout("tcp", l.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if l.name == "postgres" {
			// Half a startup packet.
			_, _ = nc.Write([]byte{0, 0, 0, 40, 0, 3})
		}
		closedWithin(t, l.name+" before login", nc, 15*time.Second)
		nc.Close()
	}

	// Still serving.
	if out, err := g.psql("agent-1", pgTok, "demo-pg", "select 'still serving';", "-At"); err != nil || strings.TrimSpace(out) != "still serving" {
		t.Fatalf("after the stalls: %v\n%s", err, out)
	}
}
