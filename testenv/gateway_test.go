package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlockhq/airlock/config"
)

// TestGatewayConfig: the file StartGateway writes is one the gateway
// accepts (unknown keys rejected), and says what the options asked for.
func TestGatewayConfig(t *testing.T) {
	g := &Gateway{
		DataDir: "/tmp/gw/data", PostgresAddr: "127.0.0.1:1", HTTPAddr: "127.0.0.1:2",
		MySQLAddr: "127.0.0.1:3", SSHAddr: "127.0.0.1:4", MetricsAddr: "127.0.0.1:5",
		Tokens: map[string]string{},
	}
	text := g.config(GatewayOptions{
		Identities: []GatewayIdentity{
			{Name: "agent-1", Role: "agent", SSHPublicKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0e3f6JrC1Zy7RcN1ZpM8G0Q6m3x1n0oWl0kq4m6Y0u agent-1"}},
			{Name: "alice", Role: "approver", Token: "fixed-token"},
		},
		Resources: []GatewayResource{
			{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:6", Database: "app", User: "u", PasswordEnv: "PG_PASSWORD"},
			{Name: "box", Protocol: "ssh", Address: "127.0.0.1:7", User: "root", KeyFile: "/k", HostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0e3f6JrC1Zy7RcN1ZpM8G0Q6m3x1n0oWl0kq4m6Y0u"},
		},
		NATSURL:           "nats://127.0.0.1:8",
		NATSCredentials:   "/creds",
		Replicas:          3,
		PublishTimeout:    time.Second,
		MaxStatementBytes: 4096,
		ExtraListen:       "  allow_plaintext: true\n",
		ExtraRecorder:     "  instance_timeout: 5s\n",
		ExtraResources:    "  - { name: my, protocol: mysql, address: \"127.0.0.1:9\", database: app, user: u, auth: { type: password, password_env: MY_PASSWORD } }\n",
		ExtraConfig:       "grants:\n  max_ttl: 2h\n",
	})
	c, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	l := c.Listen
	if l.Postgres != g.PostgresAddr || l.HTTP != g.HTTPAddr || l.MySQL != g.MySQLAddr || l.SSH != g.SSHAddr || l.Metrics != g.MetricsAddr || !l.AllowPlaintext {
		t.Errorf("listen: %+v\n%s", l, text)
	}
	r := c.Recorder
	if r.NATSURL != "nats://127.0.0.1:8" || r.CredentialsFile != "/creds" || r.Replicas != 3 || r.PublishTimeout != time.Second ||
		r.MaxStatementBytes != 4096 || r.InstanceTimeout != 5*time.Second {
		t.Errorf("recorder: %+v\n%s", r, text)
	}
	if c.DataDir != g.DataDir || c.Grants.MaxTTL != 2*time.Hour {
		t.Errorf("data_dir %q, grants %+v", c.DataDir, c.Grants)
	}
	if len(g.Tokens["agent-1"]) != 40 || g.Tokens["alice"] != "fixed-token" {
		t.Errorf("tokens: %v", g.Tokens)
	}
	for name, tok := range g.Tokens {
		sum := sha256.Sum256([]byte(tok))
		if id := c.Identity(name); id == nil || id.TokenSHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("identity %s: %+v", name, id)
		}
	}
	if id := c.Identity("agent-1"); id == nil || len(id.SSHPublicKeys) != 1 {
		t.Errorf("agent-1's SSH keys: %+v", id)
	}
	var names []string
	for _, r := range c.Resources {
		names = append(names, r.Name+"/"+r.Protocol)
	}
	if !slices.Equal(names, []string{"pg/postgres", "box/ssh", "my/mysql"}) {
		t.Errorf("resources: %v", names)
	}
	if box := c.Resource("box"); box == nil || box.Auth.KeyFile != "/k" || box.Auth.Type != "private_key" {
		t.Errorf("box: %+v", box)
	}
}

// TestGateway starts the real gateway in front of a real PostgreSQL,
// recording to its embedded JetStream: the CLI issues a grant, pgx runs a
// statement with it, and the gateway comes back after a crash.
func TestGateway(t *testing.T) {
	pg := StartPostgres(t, PostgresOptions{Database: "app", InitSQL: SampleSchema})
	g := StartGateway(t, GatewayOptions{
		Identities: []GatewayIdentity{{Name: "agent-1", Role: "agent"}, {Name: "alice", Role: "approver"}},
		Resources: []GatewayResource{{Name: "shop", Protocol: "postgres", Address: pg.Addr(), Database: pg.Database,
			User: pg.User, PasswordEnv: "SHOP_PASSWORD", Password: pg.Password}},
		Metrics: true,
	})
	if g.MySQLAddr != "" || g.SSHAddr != "" || g.MetricsAddr == "" {
		t.Errorf("listeners: mysql %q, ssh %q, metrics %q", g.MySQLAddr, g.SSHAddr, g.MetricsAddr)
	}
	count := func() int {
		t.Helper()
		var iss struct{ Token string }
		g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "shop", "--task", "testenv", "--access", "read")
		host, port, _ := strings.Cut(g.PostgresAddr, ":")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=agent-1 password=%s dbname=shop sslmode=require", host, port, iss.Token))
		if err != nil {
			t.Fatalf("connect through the gateway: %v", err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "select count(*) from customers").Scan(&n); err != nil {
			t.Fatalf("query through the gateway: %v", err)
		}
		return n
	}
	if n := count(); n != 20 {
		t.Errorf("customers: %d", n)
	}
	if _, err := g.CLI("agent-1", "grants", "create", "--agent", "agent-1", "--resource", "shop", "--task", "x"); err == nil {
		t.Error("an agent created a pre-approved grant")
	}
	if _, stderr, code := g.CLIRun("agent-1", "grants", "create", "--agent", "agent-1", "--resource", "shop", "--task", "x"); code == 0 || stderr == "" {
		t.Errorf("an agent's grants create: exit %d, stderr %q", code, stderr)
	}
	// A CLI call out of time says so, with its goroutines (request --wait
	// blocks until an approver decides).
	if _, stderr, err := g.runCLI(2*time.Second, "agent-1", []string{"request", "--resource", "shop", "--task", "wait", "--wait"}); !errors.Is(err, errCLITimeout) ||
		!strings.Contains(stderr, "SIGQUIT") || !strings.Contains(stderr, "goroutine 1 ") {
		t.Errorf("a CLI call out of time: %v\n%s", err, stderr)
	}

	pid := g.PID()
	g.Kill()
	g.Restart()
	if g.PID() == pid {
		t.Error("Restart kept the killed process")
	}
	if n := count(); n != 20 {
		t.Errorf("customers after the restart: %d", n)
	}
	if g.Log() == "" || filepath.Dir(g.ConfigPath) != g.Dir {
		t.Errorf("log %d bytes, config %s", len(g.Log()), g.ConfigPath)
	}
	g.Stop()
	if code := g.WaitExit(time.Second); code != 0 {
		t.Errorf("exit %d after SIGINT:\n%s", code, g.Log())
	}
}
