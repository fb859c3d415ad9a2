package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsModule is the module the nats-server binary is built from, at the
// version this repository's go.mod requires, so tests run the same server
// code as the gateway's embedded one.
const natsModule = "github.com/nats-io/nats-server/v2"

// NATSOptions configures StartNATS. The zero value is a JetStream server
// on a free port with its store in a temporary directory.
type NATSOptions struct {
	// DisableJetStream starts a core NATS server only. (Inverted so that
	// the zero value keeps JetStream on.)
	DisableJetStream bool
	// Port to listen on; 0 picks a free one.
	Port int
	// StoreDir is the JetStream store; "" means a temporary directory.
	StoreDir string
	// Binary is the nats-server to run; "" means one built from the
	// version in go.mod (NATSServerBinary). Tests of other versions pass
	// one, e.g. Debian's /usr/sbin/nats-server.
	Binary string
}

// NATS is a running nats-server process.
type NATS struct {
	URL      string // nats://127.0.0.1:PORT
	Port     int
	StoreDir string

	bin       string
	jetStream bool
	logPath   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// StartNATS starts a nats-server process on 127.0.0.1 and waits until it
// accepts clients (and JetStream answers, when enabled). t.Cleanup kills it.
func StartNATS(t testing.TB, o NATSOptions) *NATS {
	t.Helper()
	n := &NATS{
		StoreDir:  o.StoreDir,
		bin:       o.Binary,
		jetStream: !o.DisableJetStream,
	}
	if n.bin == "" {
		n.bin = NATSServerBinary(t)
	}
	if n.StoreDir == "" {
		n.StoreDir = t.TempDir()
	}
	logDir := t.TempDir()
	n.logPath = filepath.Join(logDir, "nats-server.log")
	// Registered after the TempDirs, so it runs before they are removed.
	t.Cleanup(n.kill)

	// A probed free port can be taken before the server binds it; only
	// then is another port worth a try.
	attempts := 1
	if o.Port == 0 {
		attempts = 3
	}
	var err error
	for i := 0; i < attempts; i++ {
		n.Port = o.Port
		if n.Port == 0 {
			n.Port = FreePort(t)
		}
		n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.Port)
		if err = n.start(); err == nil {
			return n
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("testenv: start nats-server: %v", err)
	return nil
}

// Stop terminates the server with SIGTERM and waits for it, so a test can
// watch its clients lose the recorder.
func (n *NATS) Stop(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		t.Fatalf("testenv: nats-server on port %d is not running", n.Port)
	}
	if terminate(n.cmd, n.exited, 15*time.Second) {
		t.Errorf("testenv: nats-server ignored SIGTERM for 15s and was killed")
	}
	n.cmd = nil
}

// Start starts the server again on the same port and store directory.
func (n *NATS) Start(t testing.TB) {
	t.Helper()
	if err := n.start(); err != nil {
		t.Fatalf("testenv: restart nats-server: %v", err)
	}
}

func (n *NATS) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("nats-server on port %d is already running", n.Port)
	}
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(n.Port)}
	if n.jetStream {
		args = append(args, "-js", "-sd", n.StoreDir)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	offset, _ := logf.Seek(0, 2)

	cmd := exec.Command(n.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	// An open port does not yet mean JetStream has recovered its store:
	// wait until a real client is served.
	if err := waitReady("nats-server", exited, 30*time.Second, n.probe); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%v; log:\n%s", err, n.logSince(offset))
	}
	n.cmd, n.exited = cmd, exited
	return nil
}

func (n *NATS) probe() error {
	nc, err := nats.Connect(n.URL, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	if !n.jetStream {
		return nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

func (n *NATS) logSince(offset int64) string {
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return err.Error()
	}
	if offset <= int64(len(b)) {
		b = b[offset:]
	}
	return tail(b, 4000)
}

func (n *NATS) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Kill()
		<-n.exited
		n.cmd = nil
	}
}

var natsBinary struct {
	mu   sync.Mutex
	path string
}

// NATSServerBinary returns a nats-server built from the version of
// natsModule in go.mod. The build is cached per user and version, so it
// happens once per machine; a file lock makes parallel test processes wait
// for one build instead of each doing it.
func NATSServerBinary(t testing.TB) string {
	t.Helper()
	b := &natsBinary
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.path == "" {
		p, err := buildNATSServer()
		if err != nil {
			t.Fatalf("testenv: nats-server binary: %v", err)
		}
		b.path = p
	}
	return b.path
}

func buildNATSServer() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	gobin, err := goTool()
	if err != nil {
		return "", err
	}
	// go list resolves the version the build will use, replace directives
	// included.
	cmd := exec.Command(gobin, "list", "-m", "-f",
		"{{.Version}} {{with .Replace}}{{.Path}} {{.Version}}{{end}}", natsModule)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s (is it in go.mod?): %v", natsModule, err)
	}
	f := strings.Fields(string(out))
	version := f[0]
	local := len(f) == 2 // replaced by a directory: its content has no version
	if len(f) == 3 {
		version = f[2]
	}
	dir, err := binCacheDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "nats-server-"+version)
	if local {
		// Rebuilt by every test process; the go build cache keeps it cheap.
		path = filepath.Join(dir, "nats-server-local")
	}
	if !local && fileExists(path) {
		return path, nil
	}
	unlock, err := lockFile(path + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if !local && fileExists(path) { // built by another process meanwhile
		return path, nil
	}
	return path, goBuild(root, natsModule, path)
}
