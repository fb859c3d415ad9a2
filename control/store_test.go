package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/testenv"
)

// changes collects what a store tells its subscribers.
type changes struct {
	mu sync.Mutex
	gs []*authz.Grant
}

func (c *changes) add(g *authz.Grant) { c.mu.Lock(); c.gs = append(c.gs, g); c.mu.Unlock() }

// wait returns when a change of grant id to state arrives.
func (c *changes) wait(t *testing.T, id string, state authz.State, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		c.mu.Lock()
		for _, g := range c.gs {
			if g.ID == id && g.State == state {
				c.mu.Unlock()
				return time.Since(start)
			}
		}
		c.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("grant %s not %s after %s", id, state, within)
	return 0
}

// TestStoreMerge: of the copies the buckets hold, the one furthest on in
// the grant's life wins, whatever order they arrive in; a revocation
// notice revokes a grant the buckets still hold as active; a deleted key
// ends the grant.
func TestStoreMerge(t *testing.T) {
	s := &Store{grants: map[string]*authz.Grant{}, revoking: map[string]notice{}}
	a := &bucket{name: "a", recs: map[string]record{}}
	b := &bucket{name: "b", recs: map[string]record{}}
	s.buckets = []*bucket{a, b}
	var got changes
	s.OnChange(got.add)
	g := func(state authz.State) *authz.Grant { return &authz.Grant{ID: "gr_1", State: state} }
	state := func() authz.State {
		x, err := s.Get("gr_1")
		if err != nil {
			return ""
		}
		return x.State
	}

	s.apply(a, "gr_1", g(authz.StatePending), 1)
	s.apply(b, "gr_1", g(authz.StateRevoked), 7) // b got further first
	s.apply(a, "gr_1", g(authz.StateActive), 2)
	if st := state(); st != authz.StateRevoked {
		t.Fatalf("merged %s, want revoked", st)
	}
	// A late, older write to b changes nothing.
	s.apply(b, "gr_1", g(authz.StateActive), 9)
	if st := state(); st != authz.StateRevoked {
		t.Fatalf("after a late active copy: %s", st)
	}

	s.apply(a, "gr_2", &authz.Grant{ID: "gr_2", State: authz.StateActive}, 3)
	s.onNotice(noticeMsg(t, notice{Grant: "gr_2", Revoked: true, By: "alice"}))
	if x, _ := s.Get("gr_2"); x.State != authz.StateRevoked || x.RevokedBy != "alice" {
		t.Fatalf("after the notice: %+v", x)
	}
	// Still revoked when the bucket's copy arrives, and the notice is done.
	s.apply(b, "gr_2", &authz.Grant{ID: "gr_2", State: authz.StateActive}, 4)
	if x, _ := s.Get("gr_2"); x.State != authz.StateRevoked {
		t.Fatalf("notice lost to a bucket's active copy: %+v", x)
	}
	s.apply(a, "gr_2", &authz.Grant{ID: "gr_2", State: authz.StateRevoked, RevokedBy: "alice"}, 5)
	if len(s.revoking) != 0 {
		t.Fatalf("notice kept after the bucket held the revocation: %+v", s.revoking)
	}

	s.apply(a, "gr_3", &authz.Grant{ID: "gr_3", State: authz.StateActive}, 6)
	s.apply(a, "gr_3", nil, 8)
	if _, err := s.Get("gr_3"); err != ErrNoGrant {
		t.Fatalf("deleted grant still there: %v", err)
	}
	got.wait(t, "gr_3", authz.StateRevoked, time.Second)
}

func noticeMsg(t *testing.T, n notice) *nats.Msg {
	t.Helper()
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Data: b}
}

// TestStoreConfirmation: the store is ready only while a bucket's leader
// has lately confirmed it current. It loses that within ConfirmWithin of
// losing NATS and gets it back, with the changes made meanwhile, when
// NATS returns, without reading the bucket again.
func TestStoreConfirmation(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	srv := runServer(t, dir, port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Options{URL: fmt.Sprintf("nats://127.0.0.1:%d", port)})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s, err := OpenStore(ctx, nc.NC, nc.JS, StoreOptions{Bucket: "grants", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, &authz.Grant{ID: "gr_1", Agent: "a", State: authz.StateActive}); err != nil {
		t.Fatal(err)
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	lost := time.Now()
	for s.Ready() == nil {
		if time.Since(lost) > 2*ConfirmWithin {
			t.Fatalf("still ready %s after losing NATS", time.Since(lost))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(lost); d > ConfirmWithin+100*time.Millisecond {
		t.Errorf("ready for %s after losing NATS, more than %s", d, ConfirmWithin)
	}

	// Meanwhile another replica revokes the grant.
	srv = runServer(t, dir, port)
	other, err := natsconn.Connect(ctx, natsconn.Options{URL: fmt.Sprintf("nats://127.0.0.1:%d", port)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	kv, err := other.JS.KeyValue(ctx, "grants")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(&authz.Grant{ID: "gr_1", Agent: "a", State: authz.StateRevoked, RevokedBy: "bob"})
	if _, err := kv.Put(ctx, "gr_1", b); err != nil {
		t.Fatal(err)
	}
	for s.Ready() != nil {
		if ctx.Err() != nil {
			t.Fatal("not ready again after NATS returned")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g, _ := s.Get("gr_1"); g.State != authz.StateRevoked {
		t.Fatalf("ready again without the revocation made meanwhile: %+v", g)
	}
}

// TestStoreStandbyFailover: on a 3-node cluster, killing the server that
// leads the grants bucket leaves the store ready (its standby bucket's
// leader confirms it) and a revocation made right after reaches every
// replica's subscribers at once, long before the bucket has a leader
// again; once it has, the revocation is stored in both buckets.
func TestStoreStandbyFailover(t *testing.T) {
	c := testenv.StartNATSCluster(t, testenv.NATSClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	open := func() (*Store, *changes) {
		nc, err := natsconn.Connect(ctx, natsconn.Options{URL: c.URL})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		s, err := OpenStore(ctx, nc.NC, nc.JS, StoreOptions{Bucket: "grants", Replicas: 3, Standby: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		var ch changes
		s.OnChange(ch.add)
		return s, &ch
	}
	a, _ := open()
	b, bch := open()
	if err := a.Create(ctx, &authz.Grant{ID: "gr_1", Agent: "a", State: authz.StateActive}); err != nil {
		t.Fatal(err)
	}
	bch.wait(t, "gr_1", authz.StateActive, time.Second)

	leaders := waitLeadersApart(t, a.js, "KV_grants", "KV_grants_standby")
	victim := -1
	for i, n := range c.Nodes {
		if n.Name == leaders.Primary {
			victim = i
		}
	}
	c.Kill(t, victim)
	killed := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := a.Update(ctx, "gr_1", func(g *authz.Grant) error {
			g.State, g.RevokedBy, g.RevokedAt = authz.StateRevoked, "alice", time.Now().UTC()
			return nil
		})
		done <- err
	}()
	d := bch.wait(t, "gr_1", authz.StateRevoked, 2*time.Second)
	t.Logf("killed %s (leading KV_grants; %s led the standby): the other replica saw the revocation after %s", leaders.Primary, leaders.Standby, d)
	// Ready all along, on both replicas.
	for time.Since(killed) < 3*time.Second {
		for i, s := range []*Store{a, b} {
			if err := s.Ready(); err != nil {
				t.Fatalf("replica %d not ready %s after the kill: %v", i, time.Since(killed), err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatalf("revoke: %v", err)
	}
	t.Logf("the revocation was stored in both buckets %s after the kill", time.Since(killed))
	for _, name := range []string{"grants", "grants_standby"} {
		e, err := bucketGet(b.js, name, "gr_1")
		if err != nil {
			t.Fatalf("bucket %s: %v", name, err)
		}
		var g authz.Grant
		if err := json.Unmarshal(e.Value(), &g); err != nil || g.State != authz.StateRevoked {
			t.Fatalf("bucket %s holds %s (%v)", name, g.State, err)
		}
	}
}

// TestStoreReconcile: a grant stored before the standby bucket existed is
// copied into it when the store opens.
func TestStoreReconcile(t *testing.T) {
	c := testenv.StartNATSCluster(t, testenv.NATSClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Options{URL: c.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	old, err := OpenStore(ctx, nc.NC, nc.JS, StoreOptions{Bucket: "grants", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Create(ctx, &authz.Grant{ID: "gr_old", Agent: "a", State: authz.StateActive}); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err := OpenStore(ctx, nc.NC, nc.JS, StoreOptions{Bucket: "grants", Replicas: 3, Standby: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := bucketGet(nc.JS, "grants_standby", "gr_old"); err != nil {
		t.Fatalf("the standby bucket lacks the older grant: %v", err)
	}
}

// bucketGet reads key from bucket, asking again when a request goes
// unanswered (a leader moving drops the requests it had).
func bucketGet(js jetstream.JetStream, bucket, key string) (jetstream.KeyValueEntry, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		kv, err := js.KeyValue(ctx, bucket)
		var e jetstream.KeyValueEntry
		if err == nil {
			e, err = kv.Get(ctx, key)
		}
		cancel()
		if err == nil || time.Now().After(deadline) || !errors.Is(err, context.DeadlineExceeded) {
			return e, err
		}
	}
}

func waitLeadersApart(t *testing.T, js jetstream.JetStream, primary, standby string) natsconn.Leaders {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l, err := natsconn.KeepApart(ctx, js, primary, standby)
		cancel()
		if err == nil && l.Primary != "" && l.Standby != "" && l.Primary != l.Standby {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaders of %s and %s not apart after 30s: %+v %v", primary, standby, l, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runServer starts a JetStream server on port with its store in dir, shut
// down at cleanup unless the test did.
func runServer(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "test", Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: dir, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}
