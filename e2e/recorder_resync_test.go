package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// cutProxy is a TCP proxy that can cut every connection through it and
// refuse new ones, so a test decides when the gateway gets its NATS
// server back.
type cutProxy struct {
	ln     net.Listener
	target string
	open   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.open.Store(true)
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *cutProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.open.Load() {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *cutProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut closes every connection and refuses new ones until restore.
func (p *cutProxy) cut() {
	p.open.Store(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *cutProxy) restore() { p.open.Store(true) }

// TestRecorderGrantResync: the gateway loses NATS (the server restarts,
// and the gateway stays cut off a while longer); a grant is revoked while
// the gateway cannot see it. From the loss until the gateway has re-read
// the grants no statement runs and no session starts, and once it has,
// the revoked grant's session is ended: the revocation is never missed.
func TestRecorderGrantResync(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	proxy := startCutProxy(t, strings.TrimPrefix(n.URL, "nats://"))
	g := startGateway(t, gatewayOptions{NATSURL: proxy.URL(), PublishTimeout: 500 * time.Millisecond})
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-13: revoked while cut off", "--access", "read")
	conn := connectPgx(t, g, "agent-1", iss.Token)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}

	// A client that keeps trying, to catch any statement let through.
	var (
		stop    = make(chan struct{})
		done    = make(chan struct{})
		allowed atomic.Int64
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := conn.Exec(qctx, "select 2")
			cancel()
			if err == nil {
				allowed.Add(1)
			} else if conn.IsClosed() {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	// The gateway loses NATS: the server restarts behind a cut link.
	cutAt := time.Now()
	proxy.cut()
	n.Stop(t)
	waitStatus(t, g, http.StatusServiceUnavailable)
	allowedAtCut := allowed.Load()
	n.Start(t)

	// While the gateway is cut off: revoke the grant directly in the
	// bucket, as another gateway replica would.
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
	defer scancel()
	store, err := control.OpenStore(sctx, nc, js, control.StoreOptions{Bucket: "airlock_grants", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := (&control.Service{Store: store}).Decide(sctx, iss.Grant.ID, "revoke", "alice"); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()

	// No new session while cut off.
	if c := loadConn(g, iss.Token, true); c != nil {
		c.Close(ctx)
		t.Fatal("a session started while the gateway could not confirm grants")
	}
	time.Sleep(500 * time.Millisecond)
	if got := allowed.Load(); got != allowedAtCut {
		t.Fatalf("%d statements ran while the gateway was cut off", got-allowedAtCut)
	}

	// Back: the gateway re-reads the grants and ends the revoked session.
	proxy.restore()
	waitStatus(t, g, http.StatusOK)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the revoked grant's session is still open after the gateway resynchronized")
	}
	close(stop)
	if got := allowed.Load(); got != allowedAtCut {
		t.Fatalf("%d statements ran after the loss, under a grant revoked meanwhile", got-allowedAtCut)
	}
	if c := loadConn(g, iss.Token, true); c != nil {
		c.Close(ctx)
		t.Fatal("a session started on the revoked grant")
	}

	// The record agrees: nothing allowed after the loss, every attempt
	// there refused, and the session ended because of the revocation.
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
	var sess *recorder.Summary
	for i := range list {
		if list[i].Status == recorder.StatusEnded {
			sess = &list[i]
		}
	}
	if sess == nil || !strings.Contains(sess.EndReason, "revoked") {
		t.Fatalf("sessions: %+v", list)
	}
	var d control.SessionDetail
	g.CLIJSON(&d, "rita", "sessions", "show", sess.Session)
	executed := map[uint64]bool{}
	for _, ev := range d.Events {
		for _, r := range ev.Outcomes() {
			if r.Executed {
				executed[r.ID] = true
			}
		}
	}
	refused := 0
	for _, ev := range d.Events {
		st := ev.Statement
		if st == nil || ev.Time.Before(cutAt) {
			continue
		}
		// A statement decided just as the link went down may be allowed
		// and then refused for want of an acknowledgement ("not
		// executed"); none may have run.
		if executed[st.ID] {
			t.Errorf("statement %d ran at %s, after the gateway lost NATS at %s (revoked at %s)", st.ID, ev.Time, cutAt, revokedAt)
		}
		refused++
	}
	if refused == 0 {
		t.Errorf("no refused attempt recorded after the loss")
	}
	if stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", sess.Session); code != 0 {
		t.Errorf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
}

// waitStatus polls /healthz until it answers status.
func waitStatus(t *testing.T, g *gateway, status int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := 0
	for time.Now().Before(deadline) {
		resp, err := http.Get(g.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			last = resp.StatusCode
			if last == status {
				return
			}
		} else if !errors.Is(err, context.DeadlineExceeded) {
			last = -1
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("/healthz answered %d, not %d, for 30s", last, status)
}
