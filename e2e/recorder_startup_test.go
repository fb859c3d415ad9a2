package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/testenv"
)

// waitExit waits up to d for the gateway process to exit and returns its
// exit code; the test fails if it is still running.
func (g *gateway) waitExit(d time.Duration) int {
	g.t.Helper()
	select {
	case <-g.exitedCh:
	case <-time.After(d):
		g.t.Fatalf("the gateway still runs after %s:\n%s", d, g.logText())
	}
	return g.cmd.ProcessState.ExitCode()
}

// healthz is one GET /healthz: its status and decoded body; status 0
// when nothing answers.
func (g *gateway) healthz() (int, map[string]any) {
	resp, err := http.Get(g.httpURL + "/healthz")
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
	if code := g.waitExit(30 * time.Second); code == 0 {
		t.Fatalf("the gateway exited 0 on an old nats-server:\n%s", g.logText())
	}
	log := g.logText()
	for _, want := range []string{"2.9.", "version", natsconn.MinServerVersion, "too old", n.URL} {
		if !strings.Contains(log, want) {
			t.Errorf("the gateway's error does not mention %q:\n%s", want, log)
		}
	}
}
