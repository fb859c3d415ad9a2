package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/testenv"
)

// gateway is an `airlock gateway` process for the benchmarks.
type gateway struct {
	cmd      *exec.Cmd
	dir      string
	pgAddr   string
	myAddr   string // listen.mysql; set when a resource is MySQL
	sshAddr  string // listen.ssh; set when a resource is SSH
	api      string
	metrics  string
	approver string // API token of the approver

	// With an SSH resource: agent-1's registered private key file, and
	// the gateway's host key as OpenSSH (known_hosts) and Go clients pin
	// it.
	agentKey   string
	knownHosts string
	hostKey    ssh.PublicKey
}

// gatewayOptions shape a benchmark gateway.
type gatewayOptions struct {
	// NATSURL is recorder.nats_url: "" runs the embedded JetStream (R1);
	// a cluster's comma-separated URLs record there, authenticated with
	// NATSCredentials (recorder.credentials_file), with Replicas
	// (recorder.replicas).
	NATSURL         string
	NATSCredentials string
	Replicas        int
	// Resources are the upstreams; a MySQL or SSH one also opens that
	// protocol's listener.
	Resources []resource
	// MaxStatementBytes is recorder.max_statement_bytes; 0 leaves the
	// default.
	MaxStatementBytes int
}

// resource is one upstream in the gateway's config. Databases log in with
// a password from the environment, SSH targets with a private key and
// their host key pinned.
type resource struct {
	name, protocol, addr, user string
	// postgres, mysql
	database, passwordEnv, password string
	// ssh
	keyFile, hostKey string
}

func (r resource) yaml() string {
	if r.protocol == "ssh" {
		return fmt.Sprintf("  - { name: %s, protocol: ssh, address: %q, user: %s, auth: { type: private_key, key_file: %q }, host_key: %q }\n",
			r.name, r.addr, r.user, r.keyFile, r.hostKey)
	}
	return fmt.Sprintf("  - { name: %s, protocol: %s, address: %q, database: %s, user: %s, auth: { type: password, password_env: %s } }\n",
		r.name, r.protocol, r.addr, r.database, r.user, r.passwordEnv)
}

// startGateway runs the airlock binary with a Postgres listener, and a
// MySQL and an SSH listener when o has resources of those protocols.
func startGateway(b testing.TB, o gatewayOptions) *gateway {
	b.Helper()
	bin := testenv.BuildAirlock(b)
	dir := b.TempDir()
	agentTok, approverTok := randomHex(), randomHex()
	g := &gateway{
		dir:      dir,
		pgAddr:   freeAddr(b),
		api:      freeAddr(b),
		metrics:  freeAddr(b),
		approver: approverTok,
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	listen := []string{"postgres: " + g.pgAddr, "http: " + g.api, "metrics: " + g.metrics}
	var agentKeys string // agent-1's ssh_public_keys entry
	var res strings.Builder
	env := os.Environ()
	for _, r := range o.Resources {
		res.WriteString(r.yaml())
		if r.passwordEnv != "" {
			env = append(env, r.passwordEnv+"="+r.password)
		}
		switch {
		case r.protocol == "mysql" && g.myAddr == "":
			g.myAddr = freeAddr(b)
			listen = append(listen, "mysql: "+g.myAddr)
		case r.protocol == "ssh" && g.sshAddr == "":
			g.sshAddr = freeAddr(b)
			listen = append(listen, "ssh: "+g.sshAddr)
			g.agentKey = filepath.Join(dir, "agent-1_ed25519")
			agentKeys = fmt.Sprintf(", ssh_public_keys: [%q]", strings.TrimSpace(testenv.NewSSHKey(b, g.agentKey)))
		}
	}
	maxStatement := ""
	if o.MaxStatementBytes > 0 {
		maxStatement = fmt.Sprintf(", max_statement_bytes: %d", o.MaxStatementBytes)
	}
	cfg := fmt.Sprintf(`data_dir: %s
listen: { %s }
recorder: { nats_url: %q, credentials_file: %q, replicas: %d%s }
identities:
  - { name: agent-1, role: agent, token_sha256: %q%s }
  - { name: alice, role: approver, token_sha256: %q }
resources:
%s`, filepath.Join(dir, "data"), strings.Join(listen, ", "), o.NATSURL, o.NATSCredentials, o.Replicas, maxStatement,
		sha(agentTok), agentKeys, sha(approverTok), res.String())
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
	g.waitReady(b)
	if g.sshAddr != "" {
		g.pinHostKey(b)
	}
	return g
}

// waitReady waits until the HTTP API is healthy (the grant store is in
// sync) and every listener accepts: the API answers before the MySQL and
// SSH listeners are up.
func (g *gateway) waitReady(b testing.TB) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	healthy := func() bool {
		resp, err := http.Get("http://" + g.api + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	for !healthy() || slices.ContainsFunc([]string{g.pgAddr, g.myAddr, g.sshAddr}, refuses) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(g.dir, "gateway.log"))
			b.Fatalf("gateway not ready after 60s:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// refuses reports whether nothing accepts at addr ("" accepts: no such
// listener).
func refuses(addr string) bool {
	if addr == "" {
		return false
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// pinHostKey reads the SSH host key the gateway generated in its data_dir
// on start, for the clients to pin.
func (g *gateway) pinHostKey(b testing.TB) {
	b.Helper()
	pub, err := os.ReadFile(filepath.Join(g.dir, "data", "ssh_host_ed25519_key.pub"))
	if err != nil {
		b.Fatalf("the gateway's SSH host key: %v", err)
	}
	if g.hostKey, _, _, _, err = ssh.ParseAuthorizedKey(pub); err != nil {
		b.Fatalf("the gateway's SSH host key: %v", err)
	}
	host, port, _ := net.SplitHostPort(g.sshAddr)
	g.knownHosts = filepath.Join(g.dir, "known_hosts")
	line := fmt.Sprintf("[%s]:%s %s", host, port, pub)
	if err := os.WriteFile(g.knownHosts, []byte(line), 0o600); err != nil {
		b.Fatal(err)
	}
}

// grant makes a pre-approved grant for agent-1 and returns its token.
func (g *gateway) grant(b testing.TB, spec control.GrantSpec) string {
	b.Helper()
	spec.Agent, spec.Task, spec.TTL = "agent-1", "benchmark", "12h"
	c := &control.Client{Server: "http://" + g.api, Token: g.approver}
	iss, err := c.CreateGrant(context.Background(), spec)
	if err != nil {
		b.Fatal(err)
	}
	return iss.Token
}

// pid is the gateway process's id, for memory readings.
func (g *gateway) pid() int { return g.cmd.Process.Pid }

// startRecorderCluster runs a 3-node JetStream cluster with the users and
// permissions of deploy/nats/accounts.conf, as production runs it, and
// returns it with the nkey seed file of its gateway user.
func startRecorderCluster(b testing.TB) (*testenv.NATSCluster, string) {
	b.Helper()
	dir := b.TempDir()
	seeds := map[string]string{}
	var env []string
	for _, name := range []string{"gateway", "reviewer", "admin", "sys"} {
		kp, err := nkeys.CreateUser()
		if err != nil {
			b.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		seeds[name] = filepath.Join(dir, name+".nk")
		if err := os.WriteFile(seeds[name], seed, 0o600); err != nil {
			b.Fatal(err)
		}
		env = append(env, "AIRLOCK_NATS_"+strings.ToUpper(name)+"_NKEY="+pub)
	}
	admin, err := nats.NkeyOptionFromSeed(seeds["admin"])
	if err != nil {
		b.Fatal(err)
	}
	c := testenv.StartNATSCluster(b, testenv.NATSClusterOptions{
		Include:       filepath.Join(moduleRoot(b), "deploy", "nats", "accounts.conf"),
		Env:           env,
		ClientOptions: []nats.Option{admin},
	})
	return c, seeds["gateway"]
}

func freeAddr(b testing.TB) string { return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b)) }

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
