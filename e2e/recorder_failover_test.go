package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// failoverBound is what losing one node of three may cost (issue 16, item
// 13): the longest a client goes without a statement succeeding, and the
// longest a revocation takes to end a live session on every replica.
const failoverBound = 2 * time.Second

// TestRecorderFailoverWindow runs inserts through two gateway replicas
// recording to a 3-node R3 cluster (the users and permissions of
// deploy/nats) and SIGKILLs, one at a time, the leader of the events
// stream, the leader of the grants bucket, and the node a gateway is
// connected to. After each kill, every client must have a statement
// succeed again within failoverBound. Afterwards the rows the upstream
// holds are exactly the executed inserts on record (nothing ran
// unrecorded) and every session verifies.
func TestRecorderFailoverWindow(t *testing.T) {
	u := testenv.NewNATSUsers(t)
	c := testenv.StartDeployNATSCluster(t, u)
	// Gateway a knows only one seed and finds the others from the
	// cluster; b is given every node.
	a := startGateway(t, gatewayOptions{
		NATSURL: c.Nodes[0].URL, NATSCredentials: u.SeedFiles["gateway"], Replicas: 3,
		PublishTimeout: 2 * time.Second,
	})
	b := startGateway(t, gatewayOptions{ReplicaOf: a})
	a.pg.Exec(t, "create table load (id bigserial primary key, worker int not null, n int not null)")
	var iss control.Issued
	a.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-16: failover window", "--access", "write")
	js := adminJS(t, c, u)

	load := startLoad(t, []*gateway{a, b}, iss.Token, 2)
	load.waitOK(t, 50)
	time.Sleep(time.Second)

	rounds := []struct {
		what   string
		victim func() int
	}{
		{"the events stream's leader", func() int { return nodeLeading(t, c, js, "AIRLOCK_EVENTS") }},
		{"the grants bucket's leader", func() int { return nodeLeading(t, c, js, "KV_airlock_grants") }},
		{"the node gateway a is connected to", func() int { return connectedNode(t, c, a) }},
		{"the node gateway b is connected to", func() int { return connectedNode(t, c, b) }},
	}
	var worst time.Duration
	for _, r := range rounds {
		victim := r.victim()
		leaders := clusterLeaders(t, c, js)
		killed := time.Now()
		c.Kill(t, victim)
		time.Sleep(6 * time.Second)
		w := load.window(killed, time.Now())
		t.Logf("killed %s (%s; leaders before: %s): longest stop %s (client %d), %d statements refused %s",
			c.Nodes[victim].Name, r.what, leaders, w.stop.Round(time.Millisecond), w.worker, w.refused, w.reasons)
		worst = max(worst, w.stop)
		if w.stop > failoverBound {
			t.Errorf("killing %s (%s) stopped a client for %s, more than %s", c.Nodes[victim].Name, r.what, w.stop.Round(time.Millisecond), failoverBound)
		}
		c.Start(t, victim)
		waitAllCurrent(t, c, js)
		load.waitOK(t, 50)
		time.Sleep(time.Second)
	}
	load.stopAll()
	t.Logf("worst stop %s; %d inserts acknowledged to the clients, %d refused", worst.Round(time.Millisecond), load.ok.Load(), load.refused.Load())
	checkInsertsRecorded(t, a, js, load.ok.Load())
}

// TestRecorderFailoverRevoke: a grant with a live session on each of two
// replicas is revoked right after a node is killed; both sessions end
// within failoverBound of the revoke command, whichever node was lost.
func TestRecorderFailoverRevoke(t *testing.T) {
	u := testenv.NewNATSUsers(t)
	c := testenv.StartDeployNATSCluster(t, u)
	a := startGateway(t, gatewayOptions{
		NATSURL: c.URL, NATSCredentials: u.SeedFiles["gateway"], Replicas: 3,
		PublishTimeout: 2 * time.Second,
	})
	b := startGateway(t, gatewayOptions{ReplicaOf: a})
	js := adminJS(t, c, u)

	rounds := []struct {
		what   string
		victim func() int
	}{
		{"the grants bucket's leader", func() int { return nodeLeading(t, c, js, "KV_airlock_grants") }},
		{"the node gateway b is connected to", func() int { return connectedNode(t, c, b) }},
		{"the node gateway a (the revoker) is connected to", func() int { return connectedNode(t, c, a) }},
		{"the events stream's leader", func() int { return nodeLeading(t, c, js, "AIRLOCK_EVENTS") }},
	}
	for i, r := range rounds {
		var iss control.Issued
		a.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", fmt.Sprintf("INC-16: revoke during failover %d", i))
		ends := []<-chan sessionClosed{liveSession(t, a, iss.Token), liveSession(t, b, iss.Token)}
		victim := r.victim()
		leaders := clusterLeaders(t, c, js)
		c.Kill(t, victim)
		revoking := time.Now()
		out, err := a.CLI("alice", "grants", "revoke", iss.Grant.ID)
		revoked := time.Now()
		if err != nil {
			t.Errorf("revoke after killing %s (%s): %v\n%s", c.Nodes[victim].Name, r.what, err, out)
		}
		var took []string
		for j, ch := range ends {
			replica := string(rune('a' + j))
			select {
			case e := <-ch:
				d := e.at.Sub(revoking)
				took = append(took, fmt.Sprintf("%s %s", replica, d.Round(time.Millisecond)))
				if d > failoverBound {
					t.Errorf("killed %s (%s): the session on replica %s ended %s after the revoke command, more than %s", c.Nodes[victim].Name, r.what, replica, d.Round(time.Millisecond), failoverBound)
				}
				if !strings.Contains(e.said, "revoked") {
					t.Errorf("the session on replica %s ended without saying it was revoked: %q", replica, e.said)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("killed %s (%s): the session on replica %s is still open 30s after the revoke", c.Nodes[victim].Name, r.what, replica)
			}
		}
		t.Logf("killed %s (%s; leaders before: %s): revoke returned after %s; sessions ended after %s",
			c.Nodes[victim].Name, r.what, leaders, revoked.Sub(revoking).Round(time.Millisecond), strings.Join(took, ", "))
		c.Start(t, victim)
		waitAllCurrent(t, c, js)
	}
}

// sessionClosed is when a live session's connection was closed by the
// gateway, and what the gateway said last.
type sessionClosed struct {
	at   time.Time
	said string
}

// liveSession opens a session that has run a statement and then waits;
// the channel reports when the gateway ends it.
func liveSession(t *testing.T, g *gateway, token string) <-chan sessionClosed {
	t.Helper()
	conn := connectPgx(t, g, "agent-1", token)
	if _, err := conn.Exec(context.Background(), "select 1"); err != nil {
		t.Fatalf("live session: %v", err)
	}
	hc, err := conn.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Conn.Close() })
	ch := make(chan sessionClosed, 1)
	go func() {
		_ = hc.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		b, _ := io.ReadAll(hc.Conn)
		ch <- sessionClosed{at: time.Now(), said: string(b)}
	}()
	return ch
}

// adminJS is the test's own view of the cluster, as the operator.
func adminJS(t *testing.T, c *testenv.NATSCluster, u *testenv.NATSUsers) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(c.URL, u.Option(t, "admin"), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// nodeLeading is the index of the node leading stream (a JetStream
// stream, or KV_<bucket>).
func nodeLeading(t *testing.T, c *testenv.NATSCluster, js jetstream.JetStream, stream string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := js.Stream(ctx, stream)
		cancel()
		if err == nil {
			if ci := st.CachedInfo().Cluster; ci != nil {
				for i, n := range c.Nodes {
					if n.Name == ci.Leader {
						return i
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("stream %s has no leader", stream)
	return -1
}

// clusterLeaders says which node leads each stream, for the log.
func clusterLeaders(t *testing.T, c *testenv.NATSCluster, js jetstream.JetStream) string {
	t.Helper()
	var parts []string
	for _, name := range streamNames(t, js) {
		parts = append(parts, name+"@"+c.Nodes[nodeLeading(t, c, js, name)].Name)
	}
	return strings.Join(parts, " ")
}

func streamNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var names []string
	l := js.StreamNames(ctx)
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("stream names: %v", err)
	}
	slices.Sort(names)
	return names
}

// waitAllCurrent waits until every stream has a leader and every replica
// is current, so the next kill leaves a quorum holding everything.
func waitAllCurrent(t *testing.T, c *testenv.NATSCluster, js jetstream.JetStream) {
	t.Helper()
	for _, name := range streamNames(t, js) {
		c.WaitStreamCurrent(t, js, name, time.Minute)
	}
}

var connectedRE = regexp.MustCompile(`msg="nats (?:re)?connected" url=nats://127\.0\.0\.1:(\d+)`)

// connectedNode is the index of the node g's NATS connection uses now,
// from the gateway's log.
func connectedNode(t *testing.T, c *testenv.NATSCluster, g *gateway) int {
	t.Helper()
	m := connectedRE.FindAllStringSubmatch(g.Log(), -1)
	if len(m) == 0 {
		t.Fatalf("the gateway's log does not say which NATS server it is connected to")
	}
	port := m[len(m)-1][1]
	for i, n := range c.Nodes {
		if fmt.Sprint(n.Port) == port {
			return i
		}
	}
	t.Fatalf("the gateway is connected to port %s, no node of the cluster", port)
	return -1
}

// loadAttempt is one statement a load client ran.
type loadAttempt struct {
	start, end time.Time
	ok         bool
	err        string
}

// loadRun is clients inserting rows through gateways as fast as they can,
// each keeping a log of its attempts.
type loadRun struct {
	ok, refused atomic.Int64
	stop        chan struct{}
	wg          sync.WaitGroup
	mu          sync.Mutex
	logs        [][]loadAttempt
}

// startLoad starts perGateway clients on each gateway; half use the
// simple protocol, half the extended one with parameters.
func startLoad(t *testing.T, gws []*gateway, token string, perGateway int) *loadRun {
	t.Helper()
	l := &loadRun{stop: make(chan struct{})}
	for gi, g := range gws {
		for k := range perGateway {
			w := gi*perGateway + k
			l.logs = append(l.logs, nil)
			l.wg.Add(1)
			go l.client(g, token, w, k%2 == 0)
		}
	}
	t.Cleanup(l.stopAll)
	return l
}

func (l *loadRun) client(g *gateway, token string, w int, simple bool) {
	defer l.wg.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		if conn == nil || conn.IsClosed() {
			conn = loadConn(g, token, simple)
			if conn == nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		a := loadAttempt{start: time.Now()}
		var err error
		if simple {
			_, err = conn.Exec(ctx, fmt.Sprintf("insert into load (worker, n) values (%d, %d)", w, n))
		} else {
			_, err = conn.Exec(ctx, "insert into load (worker, n) values ($1, $2)", w, n)
		}
		cancel()
		a.end, a.ok = time.Now(), err == nil
		if err != nil {
			a.err = err.Error()
			l.refused.Add(1)
			if !strings.Contains(a.err, "airlock") {
				conn.Close(context.Background())
				conn = nil
			}
		} else {
			l.ok.Add(1)
		}
		l.mu.Lock()
		l.logs[w] = append(l.logs[w], a)
		l.mu.Unlock()
	}
}

func (l *loadRun) stopAll() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// waitOK waits until n more inserts have succeeded.
func (l *loadRun) waitOK(t *testing.T, n int64) {
	t.Helper()
	start, before := time.Now(), l.ok.Load()
	for l.ok.Load() < before+n {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("no inserts for %s (refused so far: %d)", time.Since(start), l.refused.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopWindow is how badly a node's loss hit the clients.
type stopWindow struct {
	// stop is the longest any client went without a statement
	// succeeding, around the loss; worker is that client.
	stop   time.Duration
	worker int
	// refused counts statements that failed; reasons are their distinct
	// messages.
	refused int
	reasons []string
}

// window measures, for the interval from to to, each client's longest
// time between two successful statements (the last success before from
// counts), and the failures that started in it.
func (l *loadRun) window(from, to time.Time) stopWindow {
	l.mu.Lock()
	defer l.mu.Unlock()
	var w stopWindow
	seen := map[string]bool{}
	for i, log := range l.logs {
		last := from
		for _, a := range log {
			if a.ok && a.end.Before(from) {
				last = a.end
			}
		}
		for _, a := range log {
			if a.end.Before(from) || a.start.After(to) {
				continue
			}
			if !a.ok {
				w.refused++
				msg := a.err
				if j := strings.Index(msg, " (SQLSTATE"); j > 0 {
					msg = msg[:j]
				}
				if !seen[msg] {
					seen[msg] = true
					w.reasons = append(w.reasons, msg)
				}
				continue
			}
			if d := a.end.Sub(last); d > w.stop {
				w.stop, w.worker = d, i
			}
			last = a.end
		}
		if d := to.Sub(last); d > w.stop {
			w.stop, w.worker = d, i
		}
	}
	return w
}

// checkInsertsRecorded compares what the upstream holds with what the
// record says ran, once every session has ended: every row inserted has
// its statement on record as executed, and every insert a client saw
// succeed is in the table. Then every session verifies.
func checkInsertsRecorded(t *testing.T, g *gateway, js jetstream.JetStream, acknowledged int64) {
	t.Helper()
	rd := recorder.NewReader(js, "AIRLOCK_EVENTS", "")
	var sessions []recorder.Summary
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		sessions, err = rd.Sessions(context.Background(), recorder.ListOptions{Agent: "agent-1"})
		if err != nil {
			t.Fatal(err)
		}
		open := 0
		for _, s := range sessions {
			if s.Status != recorder.StatusEnded {
				open++
			}
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d sessions still open", open, len(sessions))
		}
		time.Sleep(200 * time.Millisecond)
	}
	var executed, notExecuted int64
	for _, s := range sessions {
		evs, err := rd.Events(context.Background(), s.Session)
		if err != nil {
			t.Fatal(err)
		}
		inserts := map[uint64]bool{}
		for _, ev := range evs {
			if st := ev.Statement; st != nil && st.Decision == "allow" && strings.HasPrefix(st.Text, "insert into load") {
				inserts[st.ID] = true
			}
		}
		for _, ev := range evs {
			for _, r := range ev.Outcomes() {
				if !inserts[r.ID] {
					continue
				}
				if !r.Executed {
					notExecuted++
					continue
				}
				if r.Rows == nil || *r.Rows != 1 {
					t.Errorf("session %s: insert result without one row: %+v", s.Session, r)
				}
				executed++
			}
		}
	}
	rows := g.pg.QueryInt(t, "select count(*) from load")
	t.Logf("%d sessions; upstream holds %d rows; the record holds %d executed inserts and %d allowed but not executed", len(sessions), rows, executed, notExecuted)
	if rows != executed {
		t.Errorf("upstream holds %d rows, the record accounts for %d", rows, executed)
	}
	if rows < acknowledged {
		t.Errorf("clients saw %d inserts succeed, upstream holds %d rows", acknowledged, rows)
	}
	if rows == 0 {
		t.Error("no rows inserted")
	}
	if stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", "--all"); code != 0 {
		t.Errorf("verify --all: exit %d\n%s%s", code, stdout, stderr)
	} else {
		t.Logf("verify --all: %s", lastLine(stdout))
	}
}

// TestRecorderFailoverHostVanishes: the server the gateway is connected
// to stops answering without closing the connection, as when its host
// loses power or its network: no RST, no FIN, only silence. The gateway
// notices by unanswered pings and reconnects to another server; the
// clients' longest stop is measured like a SIGKILL's (and bounded by
// failoverBound).
func TestRecorderFailoverHostVanishes(t *testing.T) {
	u := testenv.NewNATSUsers(t)
	c := testenv.StartDeployNATSCluster(t, u)
	fp := startFreezeProxy(t, strings.TrimPrefix(c.Nodes[0].URL, "nats://"))
	g := startGateway(t, gatewayOptions{
		NATSURL: fp.URL(), NATSCredentials: u.SeedFiles["gateway"], Replicas: 3,
		PublishTimeout: 2 * time.Second,
	})
	g.pg.Exec(t, "create table load (id bigserial primary key, worker int not null, n int not null)")
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-16: host vanishes", "--access", "write")
	js := adminJS(t, c, u)

	load := startLoad(t, []*gateway{g}, iss.Token, 4)
	load.waitOK(t, 50)
	time.Sleep(time.Second)
	frozen := time.Now()
	fp.freeze()
	time.Sleep(6 * time.Second)
	w := load.window(frozen, time.Now())
	t.Logf("the gateway's server went silent: longest stop %s (client %d), %d statements refused %s",
		w.stop.Round(time.Millisecond), w.worker, w.refused, w.reasons)
	if w.stop > failoverBound {
		t.Errorf("a silent server stopped a client for %s, more than %s", w.stop.Round(time.Millisecond), failoverBound)
	}
	load.stopAll()
	checkInsertsRecorded(t, g, js, load.ok.Load())
}

// freezeProxy forwards TCP to target until frozen; then it forwards
// nothing more, in either direction, and closes nothing, like a host that
// vanished.
type freezeProxy struct {
	ln     net.Listener
	target string
	frozen chan struct{}
	once   sync.Once
}

func startFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target, frozen: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go p.serve(t)
	return p
}

func (p *freezeProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *freezeProxy) freeze() { p.once.Do(func() { close(p.frozen) }) }

func (p *freezeProxy) serve(t *testing.T) {
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		conns = append(conns, c)
		select {
		case <-p.frozen:
			continue // accepted, never answered
		default:
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		conns = append(conns, up)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

// pipe copies src to dst until the proxy freezes, then holds both open.
func (p *freezeProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestRecorderFailoverOldPermissions: a gateway upgraded on a cluster
// whose NATS users predate failover (no permission for the standbys or
// the revocation notices) and the session index's sync (none to read
// single messages of the events stream) still starts and works, without
// failover, and says why in its log; its session index still lists.
func TestRecorderFailoverOldPermissions(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "deploy", "nats", "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "_STANDBY") && !strings.Contains(line, "_standby") && !strings.Contains(line, "airlock.revocations") &&
			strings.TrimSpace(line) != `"$JS.API.STREAM.MSG.GET.AIRLOCK_EVENTS"` {
			old = append(old, line)
		}
	}
	conf := filepath.Join(t.TempDir(), "accounts.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(old, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	u := testenv.NewNATSUsers(t)
	c := testenv.StartNATSCluster(t, testenv.NATSClusterOptions{
		Include: conf, Env: u.Env, ClientOptions: []nats.Option{u.Option(t, "admin")},
	})
	g := startGateway(t, gatewayOptions{NATSURL: c.URL, NATSCredentials: u.SeedFiles["gateway"], Replicas: 3})
	for _, want := range []string{"recorder failover off", "grants standby bucket off"} {
		if !strings.Contains(g.Log(), want) {
			t.Errorf("the gateway's log does not say %q", want)
		}
	}
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-16: old permissions")
	if out, err := g.psql("agent-1", iss.Token, "demo-pg", "select 1;", "-At"); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("statement without failover: %v\n%s", err, out)
	}
	end := liveSession(t, g, iss.Token)
	g.MustCLI("alice", "grants", "revoke", iss.Grant.ID)
	select {
	case e := <-end:
		if !strings.Contains(e.said, "revoked") {
			t.Errorf("the session ended without saying it was revoked: %q", e.said)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked grant's session is still open")
	}

	// The session index without the permission to read single messages
	// of the stream: a sync that must ask the stream (the last message,
	// a session's data, is not one the index follows) gives up asking
	// within a moment, says why, and lists still answer.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, rec := gatewayRecorder(ctx, t, c.URL, u.SeedFiles["gateway"], "old-permissions-index", recorder.Options{})
	logs := &lockedBuffer{}
	x, took, err := indexAfterData(ctx, t, nc.JS, rec, "ses_old_perm", slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil || took > 2*time.Second {
		t.Fatalf("index sync without the permission: %v after %v", err, took)
	}
	if !strings.Contains(logs.String(), "cannot read single messages") {
		t.Errorf("the index did not say why it stopped asking the stream; its log:\n%s", logs)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		p, err := x.Query(recorder.Query{Limit: 1})
		if err == nil && len(p.Sessions) == 1 && p.Sessions[0].Session == "ses_old_perm" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the index does not list ses_old_perm first: %+v (%v)", p.Sessions, err)
		}
	}
}
