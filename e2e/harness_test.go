// Package e2e runs the airlock binary as a user runs it, against real
// PostgreSQL, a real NATS JetStream server and the real psql client.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlockhq/airlock/testenv"
)

// gateway is a running `airlock gateway` process with its upstream and
// recorder.
type gateway struct {
	t         testing.TB
	bin       string
	dir       string
	pgAddr    string
	httpURL   string
	tokens    map[string]string // identity -> API token
	pg        *testenv.Postgres
	nats      *testenv.NATS
	my        *testenv.MariaDB // with gatewayOptions.MySQL
	myAddr    string           // the MySQL listener, with gatewayOptions.MySQL
	ssh       *sshSide         // with gatewayOptions.SSH (ssh_test.go)
	natsURL   string           // recorder.nats_url
	natsCreds string           // recorder.credentials_file
	replicas  int              // recorder.replicas
	cfgPath   string
	env       []string
	cmd       *exec.Cmd
	logMu     sync.Mutex
	log       bytes.Buffer
	exitedCh  chan struct{}
}

// gatewayOptions shape a test's gateway.
type gatewayOptions struct {
	// PublishTimeout is recorder.publish_timeout (default 1s).
	PublishTimeout time.Duration
	// ReplicaOf makes this gateway a second replica of another: same
	// upstream, same NATS, same identities and tokens.
	ReplicaOf *gateway
	// MySQL also starts a MariaDB server with testenv.SampleSchemaMySQL,
	// the MySQL listener and its resource shop-mysql (database app).
	MySQL bool
	// SSH also starts an OpenSSH sshd, the SSH listener and its resource
	// box; agent-1 gets a registered public key (see ssh_test.go).
	SSH bool
	// NATSURL records to an external NATS (e.g. a testenv.NATSCluster's
	// URL) instead of a NATS server of the gateway's own; NATSCredentials
	// is then recorder.credentials_file and Replicas recorder.replicas.
	NATSURL         string
	NATSCredentials string
	Replicas        int
	// PostgresListen is listen.postgres; empty: a free loopback port.
	PostgresListen string
	// Resources is appended to the resources list (YAML items indented
	// "  - name: ..."); Config is appended at the top level (e.g. an aws:
	// block); Env is added to the gateway's environment (later entries
	// win).
	Resources string
	Config    string
	Env       []string
	// Listen is added to the listen block (lines indented two spaces).
	Listen string
	// Recorder is added to the recorder block (lines indented two
	// spaces), e.g. "  start_timeout: 5s\n".
	Recorder string
	// NoWait returns as soon as the process runs, without waiting for
	// /healthz: for tests of the start itself (see waitExit).
	NoWait bool
	// EmbeddedNATS records to the gateway's embedded JetStream server
	// (recorder.nats_url empty) instead of a nats-server process.
	EmbeddedNATS bool
}

func startGateway(t testing.TB, o gatewayOptions) *gateway {
	t.Helper()
	if o.PublishTimeout == 0 {
		o.PublishTimeout = time.Second
	}
	testenv.RequireBinary(t, "psql", "postgresql-client")
	g := &gateway{t: t, bin: testenv.BuildAirlock(t), dir: t.TempDir(), tokens: map[string]string{}, exitedCh: make(chan struct{})}
	natsURL := o.NATSURL
	if p := o.ReplicaOf; p != nil {
		g.pg, g.nats, natsURL = p.pg, p.nats, p.natsURL
		o.NATSCredentials, o.Replicas = p.natsCreds, p.replicas
	} else {
		g.pg = testenv.StartPostgres(t, testenv.PostgresOptions{Database: "app", InitSQL: testenv.SampleSchema})
		if natsURL == "" && !o.EmbeddedNATS {
			g.nats = testenv.StartNATS(t, testenv.NATSOptions{})
			natsURL = g.nats.URL
		}
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	g.natsURL, g.natsCreds, g.replicas = natsURL, o.NATSCredentials, o.Replicas
	pgPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	g.pgAddr = fmt.Sprintf("127.0.0.1:%d", pgPort)
	if o.PostgresListen != "" {
		g.pgAddr = o.PostgresListen
	}
	g.httpURL = fmt.Sprintf("http://127.0.0.1:%d", httpPort)

	var ids strings.Builder
	for _, id := range []struct{ name, role string }{
		{"agent-1", "agent"}, {"agent-2", "agent"}, {"alice", "approver"}, {"rita", "reviewer"},
	} {
		tok := randomToken()
		if o.ReplicaOf != nil {
			tok = o.ReplicaOf.tokens[id.name]
		}
		g.tokens[id.name] = tok
		sum := sha256.Sum256([]byte(tok))
		fmt.Fprintf(&ids, "  - { name: %s, role: %s, token_sha256: %q }\n", id.name, id.role, hex.EncodeToString(sum[:]))
	}
	cfg := fmt.Sprintf(`data_dir: %s
listen:
  postgres: %s
  http: 127.0.0.1:%d
recorder:
  nats_url: %s
  publish_timeout: %s
  replicas: %d
  credentials_file: %q
  signing_key_file: %q
identities:
%sresources:
  - name: demo-pg
    protocol: postgres
    address: %s
    database: %s
    user: %s
    auth: { type: password, password_env: DEMO_PG_PASSWORD }
`, filepath.Join(g.dir, "data"), g.pgAddr, httpPort, natsURL, o.PublishTimeout, o.Replicas, o.NATSCredentials, g.signingKey(o), ids.String(), g.pg.Addr(), g.pg.Database, g.pg.User)
	if o.MySQL {
		if p := o.ReplicaOf; p != nil {
			g.my = p.my
		} else {
			g.my = testenv.StartMariaDB(t, testenv.MariaDBOptions{Database: "app", InitSQL: testenv.SampleSchemaMySQL})
		}
		g.myAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		cfg = strings.Replace(cfg, "listen:\n", "listen:\n  mysql: "+g.myAddr+"\n", 1)
		cfg += fmt.Sprintf(`  - name: shop-mysql
    protocol: mysql
    address: %s
    database: %s
    user: %s
    auth: { type: password, password_env: SHOP_MYSQL_PASSWORD }
`, g.my.Addr(), g.my.Database, g.my.User)
	}
	if o.Listen != "" {
		cfg = strings.Replace(cfg, "listen:\n", "listen:\n"+o.Listen, 1)
	}
	if o.Recorder != "" {
		cfg = strings.Replace(cfg, "recorder:\n", "recorder:\n"+o.Recorder, 1)
	}
	if o.SSH {
		cfg = g.addSSH(t, cfg)
	}
	cfg += o.Resources + o.Config
	cfgPath := filepath.Join(g.dir, "airlock.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.cfgPath = cfgPath
	g.env = append(os.Environ(), "DEMO_PG_PASSWORD="+g.pg.Password)
	if g.my != nil {
		g.env = append(g.env, "SHOP_MYSQL_PASSWORD="+g.my.Password)
	}
	g.env = append(g.env, o.Env...)
	g.spawn()
	t.Cleanup(func() {
		_ = g.cmd.Process.Signal(os.Interrupt)
		select {
		case <-g.exitedCh:
		case <-time.After(10 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.exitedCh
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.logText())
		}
	})
	if !o.NoWait {
		g.waitHealthy()
	}
	return g
}

// spawn starts the gateway process on g's configuration.
func (g *gateway) spawn() {
	g.t.Helper()
	g.cmd = exec.Command(g.bin, "gateway", "--config", g.cfgPath, "--log-level", "debug")
	g.cmd.Env = g.env
	g.cmd.Stdout = g.logWriter()
	g.cmd.Stderr = g.logWriter()
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	exited := make(chan struct{})
	g.exitedCh = exited
	cmd := g.cmd
	go func() { _ = cmd.Wait(); close(exited) }()
}

// kill stops the gateway with SIGKILL, as a crash would: no session is
// ended, nothing is drained.
func (g *gateway) kill() {
	g.t.Helper()
	_ = g.cmd.Process.Kill()
	<-g.exitedCh
}

// restart starts a killed or stopped gateway again with the same
// configuration (and so the same data dir and signing key).
func (g *gateway) restart() {
	g.t.Helper()
	g.spawn()
	g.waitHealthy()
}

// signingKey is recorder.signing_key_file: a replica signs with the key of
// the gateway it replicates, as replicas sharing one stream should, so a
// reviewer trusts one published key.
func (g *gateway) signingKey(o gatewayOptions) string {
	if o.ReplicaOf != nil {
		return filepath.Join(o.ReplicaOf.dir, "data", "signing.key")
	}
	return ""
}

type lockedWriter struct{ g *gateway }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.g.logMu.Lock()
	defer w.g.logMu.Unlock()
	return w.g.log.Write(p)
}

func (g *gateway) logWriter() lockedWriter { return lockedWriter{g} }

func (g *gateway) logText() string {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	return g.log.String()
}

// waitHealthy waits until the HTTP API answers and the grant store is in
// sync.
func (g *gateway) waitHealthy() {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-g.exitedCh:
			g.t.Fatalf("gateway exited during start:\n%s", g.logText())
		default:
		}
		resp, err := http.Get(g.httpURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.t.Fatalf("gateway not healthy after 30s:\n%s", g.logText())
}

// cli runs the airlock CLI as identity and returns its stdout; a non-zero
// exit is returned as an error carrying stderr.
func (g *gateway) cli(identity string, args ...string) (string, error) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.bin, args...)
	cmd.Env = append(os.Environ(), "AIRLOCK_SERVER="+g.httpURL, "AIRLOCK_TOKEN="+g.tokens[identity])
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("airlock %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// mustCLI is cli that fails the test on error.
func (g *gateway) mustCLI(identity string, args ...string) string {
	g.t.Helper()
	out, err := g.cli(identity, args...)
	if err != nil {
		g.t.Fatal(err)
	}
	return out
}

// cliJSON runs a CLI command with --json and decodes its output into v.
func (g *gateway) cliJSON(v any, identity string, args ...string) {
	g.t.Helper()
	out := g.mustCLI(identity, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		g.t.Fatalf("airlock %v --json printed unreadable JSON: %v\n%s", args, err, out)
	}
}

// psql runs the real psql against the gateway as user with password, on
// the given database, feeding script on stdin. It returns everything psql
// printed (stdout and stderr interleaved) and its error.
func (g *gateway) psql(user, password, dbname, script string, extra ...string) (string, error) {
	g.t.Helper()
	host, port, _ := strings.Cut(g.pgAddr, ":")
	conn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=require connect_timeout=10", host, port, user, dbname)
	args := append([]string{conn, "-X", "-v", "VERBOSITY=verbose"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=10")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func randomToken() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
