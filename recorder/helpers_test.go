package recorder

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/natsconn"
)

// testStream is the stream every test records to.
const testStream = "AIRLOCK_EVENTS"

// harness is an embedded JetStream server, a connection to it and a
// recorder on it.
type harness struct {
	conn *natsconn.Conn
	js   jetstream.JetStream
	rec  *Recorder
	rd   *Reader
	keys Keyring // trusts rec's signer
}

type harnessOptions struct {
	// URL of a server started by the test; empty: embedded in-process.
	URL string
	// PublishTimeout of the recorder; zero: the default.
	PublishTimeout time.Duration
	// AckTimeout of the JetStream context; zero: the natsconn default.
	AckTimeout time.Duration
	// Replicas of the stream; zero: 1.
	Replicas int
	// SignInterval of the recorder; zero: the default.
	SignInterval time.Duration
	// Failover keeps a standby stream (Options.Failover).
	Failover bool
	// GroupCommit batches events (Options.GroupCommit), under a fresh
	// instance id.
	GroupCommit bool
}

func newHarness(tb testing.TB, o harnessOptions) *harness {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := natsconn.Connect(ctx, natsconn.Options{
		URL:        o.URL,
		DataDir:    tb.TempDir(),
		Name:       tb.Name(),
		AckTimeout: o.AckTimeout,
	})
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(conn.Close)
	rec, err := New(ctx, conn.JS, Options{
		Stream:         testStream,
		PublishTimeout: o.PublishTimeout,
		Replicas:       o.Replicas,
		SignInterval:   o.SignInterval,
		Failover:       o.Failover,
		GroupCommit:    o.GroupCommit,
		Instance:       instanceIf(o.GroupCommit),
		Gateway:        "gw-test",
		Signer:         testSigner(tb),
	})
	if err != nil {
		tb.Fatalf("recorder: %v", err)
	}
	tb.Cleanup(rec.Close)
	keys, err := NewKeyring(rec.Signer().Public())
	if err != nil {
		tb.Fatal(err)
	}
	return &harness{conn: conn, js: conn.JS, rec: rec, rd: NewReader(conn.JS, testStream, ""), keys: keys}
}

// instanceIf is a fresh instance id when on, else none.
func instanceIf(on bool) string {
	if on {
		return NewInstanceID()
	}
	return ""
}

func testSigner(tb testing.TB) *Signer {
	tb.Helper()
	s, err := GenerateSigner()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// streamMsgs is how many messages the stream holds.
func (h *harness) streamMsgs(tb testing.TB) uint64 {
	tb.Helper()
	st, err := h.js.Stream(context.Background(), testStream)
	if err != nil {
		tb.Fatalf("stream: %v", err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		tb.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

// freePort finds a port nothing listens on, for a server that has to come
// back on the same address after a restart.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("probe port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runServer starts a standalone JetStream server on port with its store
// in dir; it is shut down at cleanup unless the test did so already.
func runServer(tb testing.TB, dir string, port int) *server.Server {
	tb.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "test",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		tb.Fatalf("server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatalf("server on port %d not ready", port)
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func serverURL(port int) string { return "nats://127.0.0.1:" + strconv.Itoa(port) }

func testMeta(agent, resource string) Meta {
	return Meta{
		Agent:    agent,
		Task:     "fix the orders report",
		Grant:    "g-1",
		Approver: "alice",
		Access:   "read",
		Resource: resource,
		Protocol: "postgres",
		Client:   "127.0.0.1:50000",
	}
}

func stmtEvent(id uint64, text string) Event {
	return Event{Type: TypeStatement, Statement: &Statement{
		ID: id, Count: 1, Text: text, Decision: "allow", Rule: "access-level",
		Class: authz.Classification{Kind: "SELECT", Required: authz.AccessRead, TablesRead: []string{"public.orders"}},
	}}
}

func resultEvent(id uint64) Event {
	rows := int64(3)
	return Event{Type: TypeStatementResult, Result: &Result{ID: id, Executed: true, Tag: "SELECT 3", Rows: &rows, DurationUS: 120}}
}

// checkGapless fails unless evs are seq 1..n of session, each once.
func checkGapless(tb testing.TB, session string, evs []Event, n int) {
	tb.Helper()
	if len(evs) != n {
		tb.Fatalf("session %s: %d events, want %d", session, len(evs), n)
	}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) || ev.Session != session || ev.V != Version || ev.Hash == "" {
			tb.Fatalf("session %s: event %d: seq %d session %q v %d", session, i, ev.Seq, ev.Session, ev.V)
		}
	}
}
