package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/testenv"
)

// gateway is an `airlock gateway` process for the benchmarks.
type gateway struct {
	cmd      *exec.Cmd
	pgAddr   string
	api      string
	metrics  string
	approver string // API token of the approver
}

// resource is one upstream in the gateway's config.
type resource struct {
	name, addr, database, user, passwordEnv, password string
}

// startGateway runs the airlock binary with its Postgres listener in front
// of resources; natsURL "" means the embedded JetStream (R1).
func startGateway(b testing.TB, natsURL string, replicas int, resources ...resource) *gateway {
	b.Helper()
	bin := testenv.BuildAirlock(b)
	dir := b.TempDir()
	agentTok, approverTok := randomHex(), randomHex()
	g := &gateway{
		pgAddr:   fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b)),
		api:      fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b)),
		metrics:  fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b)),
		approver: approverTok,
	}
	var res strings.Builder
	env := os.Environ()
	for _, r := range resources {
		fmt.Fprintf(&res, "  - { name: %s, protocol: postgres, address: %q, database: %s, user: %s, auth: { type: password, password_env: %s } }\n",
			r.name, r.addr, r.database, r.user, r.passwordEnv)
		env = append(env, r.passwordEnv+"="+r.password)
	}
	cfg := fmt.Sprintf(`data_dir: %s
listen: { postgres: %s, http: %s, metrics: %s }
recorder: { nats_url: %q, replicas: %d }
identities:
  - { name: agent-1, role: agent, token_sha256: %q }
  - { name: alice, role: approver, token_sha256: %q }
resources:
%s`, filepath.Join(dir, "data"), g.pgAddr, g.api, g.metrics, natsURL, replicas, sha(agentTok), sha(approverTok), res.String())
	path := filepath.Join(dir, "airlock.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	g.cmd = exec.Command(bin, "gateway", "--config", path, "--log-level", "warn")
	g.cmd.Env = env
	logf, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		b.Fatal(err)
	}
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if err := g.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = g.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = g.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = g.cmd.Process.Kill()
		}
		logf.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + g.api + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return g
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
			b.Fatalf("gateway not healthy:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// grant makes a pre-approved grant for agent-1 and returns its token.
func (g *gateway) grant(b testing.TB, resource, access string) string {
	b.Helper()
	c := &control.Client{Server: "http://" + g.api, Token: g.approver}
	iss, err := c.CreateGrant(context.Background(), control.GrantSpec{Agent: "agent-1", Resource: resource, Task: "benchmark", Access: access, TTL: "12h"})
	if err != nil {
		b.Fatal(err)
	}
	return iss.Token
}

// pid is the gateway process's id, for memory readings.
func (g *gateway) pid() int { return g.cmd.Process.Pid }

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
