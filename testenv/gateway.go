package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// GatewayOptions configures StartGateway: the airlock.yaml it writes and
// how the process runs. Listeners are opened on free loopback ports.
type GatewayOptions struct {
	// Identities are the API identities; each without a Token gets a
	// random one. Gateway.Tokens holds them by name.
	Identities []GatewayIdentity
	// Resources are the upstreams. A resource's Password is put in the
	// gateway's environment as its PasswordEnv.
	Resources []GatewayResource
	// MySQL and SSH open those listeners (listen.mysql, listen.ssh); a
	// resource of that protocol opens it too. Metrics opens
	// listen.metrics. listen.postgres and listen.http are always open.
	MySQL, SSH, Metrics bool
	// PostgresListen is listen.postgres; empty: a free loopback port.
	PostgresListen string

	// NATSURL is recorder.nats_url: empty records to the gateway's
	// embedded JetStream server; a cluster's comma-separated URLs record
	// there, authenticated with NATSCredentials
	// (recorder.credentials_file).
	NATSURL         string
	NATSCredentials string
	// Replicas is recorder.replicas; 0 means 1.
	Replicas int
	// PublishTimeout (recorder.publish_timeout), MaxStatementBytes
	// (recorder.max_statement_bytes) and SigningKeyFile
	// (recorder.signing_key_file): zero leaves the gateway's default.
	PublishTimeout    time.Duration
	MaxStatementBytes int
	SigningKeyFile    string

	// ExtraListen and ExtraRecorder are YAML lines added to the listen
	// and recorder blocks (indented two spaces, e.g. "  start_timeout:
	// 5s\n"); ExtraResources are resources list items ("  - name: ...");
	// ExtraConfig is added at the top level (e.g. an aws: block).
	ExtraListen, ExtraRecorder, ExtraResources, ExtraConfig string
	// Env is added to the gateway's environment; later entries win.
	Env []string
	// LogLevel is --log-level; empty means debug.
	LogLevel string
	// NoWait returns as soon as the process runs, without WaitReady: for
	// tests of the start itself.
	NoWait bool
}

// GatewayIdentity is one entry of the identities list.
type GatewayIdentity struct {
	Name, Role string
	// Token is the API token; empty: a random one.
	Token string
	// SSHPublicKeys are the identity's registered keys (authorized_keys
	// lines).
	SSHPublicKeys []string
}

// GatewayResource is one upstream. Databases log in with a password from
// the environment, SSH targets with a private key and their host key
// pinned.
type GatewayResource struct {
	Name, Protocol, Address, User string
	// Postgres and MySQL: the database, and the password the gateway
	// logs in with, passed in the environment variable PasswordEnv.
	Database, PasswordEnv, Password string
	// SSH: the private key file the gateway logs in with and the host
	// key it pins ("ssh-ed25519 AAAA...").
	KeyFile, HostKey string
}

// Gateway is a running `airlock gateway` process, the real binary with a
// configuration in a temporary directory. t.Cleanup stops it, and shows
// its log when the test failed.
type Gateway struct {
	// Dir holds airlock.yaml (ConfigPath), the data_dir (DataDir) and
	// known_hosts.
	Dir, ConfigPath, DataDir string
	// Bin is the airlock binary, for the CLI.
	Bin string
	// The listeners, host:port; MySQLAddr, SSHAddr and MetricsAddr are
	// empty when not open. URL is the HTTP API's base URL.
	PostgresAddr, MySQLAddr, SSHAddr, MetricsAddr, HTTPAddr string
	URL                                                     string
	// Tokens are the identities' API tokens by name.
	Tokens map[string]string
	// With an SSH listener, once ready: the host key the gateway made in
	// its data_dir, and KnownHosts, a known_hosts file pinning it for
	// OpenSSH clients.
	HostKey    ssh.PublicKey
	KnownHosts string

	t      testing.TB
	args   []string
	env    []string
	cmd    *exec.Cmd
	exited chan struct{}
	logMu  sync.Mutex
	log    bytes.Buffer
	// cliTimedOut is set when a CLI call ran out of time: the cleanup
	// of a failed test then has the gateway dump its goroutines.
	cliTimedOut atomic.Bool
}

// StartGateway builds (once per process) and starts the airlock gateway
// on the configuration o describes, and waits until it is ready (see
// WaitReady) unless o.NoWait.
func StartGateway(t testing.TB, o GatewayOptions) *Gateway {
	t.Helper()
	dir := t.TempDir()
	g := &Gateway{
		Dir:          dir,
		ConfigPath:   filepath.Join(dir, "airlock.yaml"),
		DataDir:      filepath.Join(dir, "data"),
		Bin:          BuildAirlock(t),
		PostgresAddr: o.PostgresListen,
		HTTPAddr:     freeAddr(t),
		Tokens:       map[string]string{},
		t:            t,
	}
	g.URL = "http://" + g.HTTPAddr
	if g.PostgresAddr == "" {
		g.PostgresAddr = freeAddr(t)
	}
	for _, r := range o.Resources {
		o.MySQL = o.MySQL || r.Protocol == "mysql"
		o.SSH = o.SSH || r.Protocol == "ssh"
	}
	if o.MySQL {
		g.MySQLAddr = freeAddr(t)
	}
	if o.SSH {
		g.SSHAddr = freeAddr(t)
		g.KnownHosts = filepath.Join(dir, "known_hosts")
	}
	if o.Metrics {
		g.MetricsAddr = freeAddr(t)
	}
	if err := os.WriteFile(g.ConfigPath, []byte(g.config(o)), 0o600); err != nil {
		t.Fatal(err)
	}
	g.env = os.Environ()
	for _, r := range o.Resources {
		if r.PasswordEnv != "" {
			g.env = append(g.env, r.PasswordEnv+"="+r.Password)
		}
	}
	g.env = append(g.env, o.Env...)
	level := o.LogLevel
	if level == "" {
		level = "debug"
	}
	g.args = []string{"gateway", "--config", g.ConfigPath, "--log-level", level}
	g.Start()
	t.Cleanup(func() {
		sig := os.Interrupt
		if t.Failed() && g.cliTimedOut.Load() {
			// A CLI call hung: the gateway's stacks say where its
			// request was stuck (SIGQUIT prints them into the log).
			sig = syscall.SIGQUIT
		}
		_ = g.cmd.Process.Signal(sig)
		select {
		case <-g.exited:
		case <-time.After(10 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.exited
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.Log())
		}
	})
	if !o.NoWait {
		g.WaitReady()
	}
	return g
}

// config is the airlock.yaml for o, g's addresses and fresh tokens.
func (g *Gateway) config(o GatewayOptions) string {
	var c strings.Builder
	fmt.Fprintf(&c, "data_dir: %q\nlisten:\n  postgres: %q\n  http: %q\n", g.DataDir, g.PostgresAddr, g.HTTPAddr)
	for _, l := range []struct{ key, addr string }{{"mysql", g.MySQLAddr}, {"ssh", g.SSHAddr}, {"metrics", g.MetricsAddr}} {
		if l.addr != "" {
			fmt.Fprintf(&c, "  %s: %q\n", l.key, l.addr)
		}
	}
	c.WriteString(o.ExtraListen)

	replicas := o.Replicas
	if replicas == 0 {
		replicas = 1
	}
	fmt.Fprintf(&c, "recorder:\n  replicas: %d\n", replicas)
	for _, s := range []struct{ key, value string }{
		{"nats_url", o.NATSURL}, {"credentials_file", o.NATSCredentials}, {"signing_key_file", o.SigningKeyFile},
	} {
		if s.value != "" {
			fmt.Fprintf(&c, "  %s: %q\n", s.key, s.value)
		}
	}
	if o.PublishTimeout != 0 {
		fmt.Fprintf(&c, "  publish_timeout: %s\n", o.PublishTimeout)
	}
	if o.MaxStatementBytes != 0 {
		fmt.Fprintf(&c, "  max_statement_bytes: %d\n", o.MaxStatementBytes)
	}
	c.WriteString(o.ExtraRecorder)

	c.WriteString("identities:\n")
	for _, id := range o.Identities {
		if id.Token == "" {
			id.Token = randomToken()
		}
		g.Tokens[id.Name] = id.Token
		sum := sha256.Sum256([]byte(id.Token))
		fmt.Fprintf(&c, "  - { name: %s, role: %s, token_sha256: %q", id.Name, id.Role, hex.EncodeToString(sum[:]))
		if len(id.SSHPublicKeys) > 0 {
			keys, _ := json.Marshal(id.SSHPublicKeys) // a JSON array of strings is a YAML flow sequence
			fmt.Fprintf(&c, ", ssh_public_keys: %s", keys)
		}
		c.WriteString(" }\n")
	}

	c.WriteString("resources:\n")
	for _, r := range o.Resources {
		if r.Protocol == "ssh" {
			fmt.Fprintf(&c, "  - { name: %s, protocol: ssh, address: %q, user: %s, auth: { type: private_key, key_file: %q }, host_key: %q }\n",
				r.Name, r.Address, r.User, r.KeyFile, r.HostKey)
			continue
		}
		fmt.Fprintf(&c, "  - { name: %s, protocol: %s, address: %q, database: %s, user: %s, auth: { type: password, password_env: %s } }\n",
			r.Name, r.Protocol, r.Address, r.Database, r.User, r.PasswordEnv)
	}
	c.WriteString(o.ExtraResources)
	c.WriteString(o.ExtraConfig)
	return c.String()
}

// Start starts the gateway process on its configuration: the first time,
// and again after Kill or Stop (same data_dir, so the same host and
// signing keys). It does not wait; see WaitReady and Restart.
func (g *Gateway) Start() {
	g.t.Helper()
	g.cmd = exec.Command(g.Bin, g.args...)
	g.cmd.Env = g.env
	g.cmd.Stdout = gatewayLog{g}
	g.cmd.Stderr = gatewayLog{g}
	if err := g.cmd.Start(); err != nil {
		g.t.Fatalf("testenv: start the gateway: %v", err)
	}
	exited := make(chan struct{})
	g.exited = exited
	cmd := g.cmd
	go func() { _ = cmd.Wait(); close(exited) }()
}

// Restart starts a killed or stopped gateway again and waits until it is
// ready.
func (g *Gateway) Restart() {
	g.t.Helper()
	g.Start()
	g.WaitReady()
}

// Kill stops the gateway with SIGKILL, as a crash would: no session is
// ended, nothing is drained.
func (g *Gateway) Kill() {
	g.t.Helper()
	_ = g.cmd.Process.Kill()
	<-g.exited
}

// Stop ends the gateway as an operator does (SIGINT) and waits for it;
// the test fails if it still runs 20s later.
func (g *Gateway) Stop() {
	g.t.Helper()
	_ = g.cmd.Process.Signal(os.Interrupt)
	select {
	case <-g.exited:
	case <-time.After(20 * time.Second):
		g.t.Fatalf("the gateway did not stop within 20s of SIGINT:\n%s", g.Log())
	}
}

// WaitExit waits up to d for the gateway process to exit and returns its
// exit code; the test fails if it still runs.
func (g *Gateway) WaitExit(d time.Duration) int {
	g.t.Helper()
	select {
	case <-g.exited:
	case <-time.After(d):
		g.t.Fatalf("the gateway still runs after %s:\n%s", d, g.Log())
	}
	return g.cmd.ProcessState.ExitCode()
}

// Exited is closed when the current gateway process has exited.
func (g *Gateway) Exited() <-chan struct{} { return g.exited }

// PID is the current gateway process's id.
func (g *Gateway) PID() int { return g.cmd.Process.Pid }

// WaitReady waits until /healthz answers 200 (the grant store is in sync)
// and every listener accepts: the API answers before the MySQL and SSH
// listeners are up. With an SSH listener it then reads the host key and
// writes KnownHosts. The test fails, with the gateway's log, if the
// process exits or is not ready within a minute.
func (g *Gateway) WaitReady() {
	g.t.Helper()
	err := waitReady("gateway", g.exited, time.Minute, func() error {
		resp, err := http.Get(g.URL + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s", resp.Status)
		}
		for _, addr := range []string{g.PostgresAddr, g.MySQLAddr, g.SSHAddr, g.MetricsAddr} {
			if addr == "" {
				continue
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		g.t.Fatalf("testenv: %v\n%s", err, g.Log())
	}
	if g.SSHAddr != "" {
		g.pinHostKey()
	}
}

// pinHostKey reads the SSH host key the gateway made in its data_dir and
// writes KnownHosts for it.
func (g *Gateway) pinHostKey() {
	g.t.Helper()
	pub, err := os.ReadFile(filepath.Join(g.DataDir, "ssh_host_ed25519_key.pub"))
	if err != nil {
		g.t.Fatalf("testenv: the gateway's SSH host key: %v\n%s", err, g.Log())
	}
	if g.HostKey, _, _, _, err = ssh.ParseAuthorizedKey(pub); err != nil {
		g.t.Fatalf("testenv: the gateway's SSH host key: %v", err)
	}
	host, port, _ := net.SplitHostPort(g.SSHAddr)
	line := fmt.Sprintf("[%s]:%s %s", host, port, pub)
	if err := os.WriteFile(g.KnownHosts, []byte(line), 0o600); err != nil {
		g.t.Fatal(err)
	}
}

// Log is everything the gateway processes printed so far.
func (g *Gateway) Log() string {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	return g.log.String()
}

// LogWriter adds to the gateway's log, e.g. the stderr of a CLI process
// the test runs beside it.
func (g *Gateway) LogWriter() io.Writer { return gatewayLog{g} }

// gatewayLog collects the output of every process Start ran.
type gatewayLog struct{ g *Gateway }

func (w gatewayLog) Write(p []byte) (int, error) {
	w.g.logMu.Lock()
	defer w.g.logMu.Unlock()
	return w.g.log.Write(p)
}

// CLI runs the airlock CLI against the gateway as identity and returns
// its stdout; a non-zero exit is returned as an error carrying stderr.
func (g *Gateway) CLI(identity string, args ...string) (string, error) {
	g.t.Helper()
	out, errs, err := g.runCLI(30*time.Second, identity, args)
	if err != nil {
		return out, fmt.Errorf("airlock %s: %v: %s", strings.Join(args, " "), err, errs)
	}
	return out, nil
}

// CLIRun runs the airlock CLI as identity and returns stdout, stderr and
// the exit status, for commands whose status carries meaning; the test
// fails if the CLI cannot run at all.
func (g *Gateway) CLIRun(identity string, args ...string) (stdout, stderr string, code int) {
	g.t.Helper()
	stdout, stderr, err := g.runCLI(2*time.Minute, identity, args)
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.Is(err, errCLITimeout):
		g.t.Fatalf("airlock %s: %v\n%s", strings.Join(args, " "), err, stderr)
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		g.t.Fatalf("airlock %s: %v", strings.Join(args, " "), err)
	}
	return stdout, stderr, code
}

// errCLITimeout is a CLI call that ran out of time.
var errCLITimeout = errors.New("timed out")

// runCLI runs the CLI for at most timeout. Out of time, the CLI gets
// SIGQUIT first, so its goroutines (where it waited) are in stderr, and
// SIGKILL 5 s later.
func (g *Gateway) runCLI(timeout time.Duration, identity string, args []string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := g.Command(ctx, identity, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err = cmd.Run()
	if ctx.Err() != nil {
		g.cliTimedOut.Store(true)
		err = fmt.Errorf("%w after %s (%v); the CLI's goroutines, dumped on SIGQUIT, follow", errCLITimeout, time.Since(start).Round(time.Millisecond), err)
	}
	return out.String(), errb.String(), err
}

// Command is the airlock CLI with args, run as identity against the
// gateway (AIRLOCK_SERVER and AIRLOCK_TOKEN set), for tests that need
// more than CLI: an exit status, a process in the background.
func (g *Gateway) Command(ctx context.Context, identity string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, g.Bin, args...)
	cmd.Env = append(os.Environ(), "AIRLOCK_SERVER="+g.URL, "AIRLOCK_TOKEN="+g.Tokens[identity])
	return cmd
}

// MustCLI is CLI that fails the test on error.
func (g *Gateway) MustCLI(identity string, args ...string) string {
	g.t.Helper()
	out, err := g.CLI(identity, args...)
	if err != nil {
		g.t.Fatal(err)
	}
	return out
}

// CLIJSON runs a CLI command with --json and decodes its output into v.
func (g *Gateway) CLIJSON(v any, identity string, args ...string) {
	g.t.Helper()
	out := g.MustCLI(identity, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		g.t.Fatalf("airlock %v --json printed unreadable JSON: %v\n%s", args, err, out)
	}
}

func freeAddr(t testing.TB) string { return fmt.Sprintf("127.0.0.1:%d", FreePort(t)) }

func randomToken() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
