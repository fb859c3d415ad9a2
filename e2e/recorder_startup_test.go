package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// healthz is one GET /healthz: its status and decoded body; status 0
// when nothing answers.
func (g *gateway) healthz() (int, map[string]any) {
	resp, err := http.Get(g.URL + "/healthz")
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body
}

// TestGatewayRefusesOldNATSServer runs the gateway against Debian's
// nats-server package (2.9), which lacks what airlock relies on: the
// gateway must not start, and must say which version it found and which
// it needs, instead of starting and failing later (sessions list used to
// fail with "multiple consumer filter subjects not supported").
func TestGatewayRefusesOldNATSServer(t *testing.T) {
	bin := testenv.RequireFile(t, "/usr/sbin/nats-server", "nats-server")
	n := testenv.StartNATS(t, testenv.NATSOptions{Binary: bin})
	g := startGateway(t, gatewayOptions{NATSURL: n.URL, NoWait: true})
	if code := g.WaitExit(30 * time.Second); code == 0 {
		t.Fatalf("the gateway exited 0 on an old nats-server:\n%s", g.Log())
	}
	log := g.Log()
	for _, want := range []string{"2.9.", "version", natsconn.MinServerVersion, "too old", n.URL} {
		if !strings.Contains(log, want) {
			t.Errorf("the gateway's error does not mention %q:\n%s", want, log)
		}
	}
}

// waitStarting polls /healthz until it answers 503 while waiting for
// something containing what, and returns the answer.
func (g *gateway) waitStarting(what string) map[string]any {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last map[string]any
	lastCode := 0
	for time.Now().Before(deadline) {
		select {
		case <-g.Exited():
			g.t.Fatalf("the gateway exited while it should wait for %s:\n%s", what, g.Log())
		default:
		}
		code, body := g.healthz()
		lastCode, last = code, body
		if w, _ := body["waiting_for"].(string); code == http.StatusServiceUnavailable && strings.Contains(w, what) {
			return body
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.t.Fatalf("/healthz never said the gateway waits for %q; last answer %d %v\n%s", what, lastCode, last, g.Log())
	return nil
}

// refusesConnections fails the test if anything accepts on addr: the SQL
// listeners open only once the gateway can record.
func refusesConnections(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s accepts connections before the gateway can record", addr)
	}
}

// TestGatewayWaitsForNATSCluster starts the gateway while its 3-node
// cluster is down, then brings the cluster back a node at a time. The
// gateway waits (healthz 503 saying for what: first a connection, then
// JetStream, which one node alone cannot give), keeps its SQL port
// closed meanwhile, and becomes ready by itself once a quorum is back:
// psql works and the session is recorded.
func TestGatewayWaitsForNATSCluster(t *testing.T) {
	c := testenv.StartNATSCluster(t, testenv.NATSClusterOptions{})
	c.StopAll(t)
	g := startGateway(t, gatewayOptions{NATSURL: c.URL, Replicas: 3, NoWait: true})

	body := g.waitStarting("a connection to NATS at " + c.URL)
	if e, _ := body["error"].(string); !strings.Contains(e, "gateway starting: waiting for") {
		t.Fatalf("healthz while down: %v", body)
	}
	refusesConnections(t, g.PostgresAddr)
	// The API says the same to the CLI.
	if _, err := g.CLI("rita", "sessions", "list"); err == nil || !strings.Contains(err.Error(), "gateway starting") {
		t.Fatalf("sessions list while starting: %v", err)
	}

	// One node of three: a connection, but no JetStream without a quorum.
	c.Spawn(t, 0)
	g.waitStarting("JetStream on NATS at " + c.URL)
	refusesConnections(t, g.PostgresAddr)

	c.Start(t, 1)
	c.Start(t, 2)
	g.WaitReady()
	t.Logf("start log:\n%s", grepLines(g.Log(), "start:"))

	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-16: wait for the cluster", "--access", "read")
	out, err := g.psql("agent-1", iss.Token, "demo-pg", "select count(*) from orders;\n")
	if err != nil || !strings.Contains(out, "(1 row)") {
		t.Fatalf("psql after the cluster came back: %v\n%s", err, out)
	}
	waitSessionsEnded(t, g, 1)
}

// TestGatewayStartTimeout: with nothing to connect to, the gateway waits
// recorder.start_timeout, then exits with an error naming what it waited
// for and the key that bounds the wait.
func TestGatewayStartTimeout(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t))
	g := startGateway(t, gatewayOptions{NATSURL: url, NoWait: true, Recorder: "  start_timeout: 4s\n"})
	g.waitStarting("a connection to NATS at " + url)
	began := time.Now()
	if code := g.WaitExit(30 * time.Second); code == 0 {
		t.Fatalf("exit 0 after the start timed out:\n%s", g.Log())
	}
	log := g.Log()
	for _, want := range []string{"gave up waiting for a connection to NATS at " + url, "recorder.start_timeout 4s", "start: waiting"} {
		if !strings.Contains(log, want) {
			t.Errorf("the gateway's log does not say %q:\n%s", want, log)
		}
	}
	t.Logf("exited %s after it was seen waiting", time.Since(began).Round(100*time.Millisecond))
}

// TestGatewayAfterClusterRestart stops the gateway and its 3-node cluster
// (stream and buckets replicated three times, with data) and starts them
// again as a compose stack restarts: first all nodes at once with the
// gateway right behind them, so it connects while the cluster elects its
// leaders (the gateway used to exit with "recorder: stream
// AIRLOCK_EVENTS: context deadline exceeded"); then the gateway before
// the cluster. Each time it rides out the elections and serves again
// without help, and the earlier sessions still verify.
func TestGatewayAfterClusterRestart(t *testing.T) {
	c := testenv.StartNATSCluster(t, testenv.NATSClusterOptions{})
	g := startGateway(t, gatewayOptions{NATSURL: c.URL, Replicas: 3})
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-16: restart the stack", "--access", "read")
	if out, err := g.psql("agent-1", iss.Token, "demo-pg", "select 1;\n"); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	waitSessionsEnded(t, g, 1)

	for round, gatewayFirst := range []bool{false, true} {
		g.Stop()
		c.StopAll(t)
		if gatewayFirst {
			g.Start()
			g.waitStarting("NATS at " + c.URL)
			c.StartAll(t)
		} else {
			for i := range c.Nodes {
				c.Spawn(t, i)
			}
			g.Start()
		}
		began := time.Now()
		g.WaitReady()
		t.Logf("round %d (gateway first: %v): ready after %s; start log:\n%s", round+1, gatewayFirst,
			time.Since(began).Round(100*time.Millisecond), grepLines(g.Log(), "start:"))

		if out, err := g.psql("agent-1", iss.Token, "demo-pg", "select 2;\n"); err != nil {
			t.Fatalf("psql after the restart: %v\n%s", err, out)
		}
		waitSessionsEnded(t, g, round+2)
		if stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", "--all"); code != 0 {
			t.Fatalf("verify --all after the restart: exit %d\n%s%s", code, stdout, stderr)
		}
	}
}

// waitSessionsEnded waits until agent-1 has n sessions, all ended.
func waitSessionsEnded(t *testing.T, g *gateway, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var list []recorder.Summary
	for time.Now().Before(deadline) {
		g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
		ended := 0
		for _, s := range list {
			if s.Status == recorder.StatusEnded {
				ended++
			}
		}
		if len(list) == n && ended == n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("want %d ended sessions; have %+v", n, list)
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
