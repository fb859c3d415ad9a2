package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSClusterOptions configures StartNATSCluster. The zero value is three
// JetStream servers clustered on free loopback ports, without
// authentication.
type NATSClusterOptions struct {
	// Nodes is the number of servers; 0 means 3.
	Nodes int
	// Include is a configuration file every node includes, copied beside
	// each node's own file: accounts, users and permissions, e.g.
	// deploy/nats/accounts.conf. Empty: no authentication.
	Include string
	// Env is added to every node's environment, e.g. the nkeys the Include
	// refers to as $VARIABLES.
	Env []string
	// ClientOptions are what readiness probes connect with: the
	// credentials of a user with JetStream access when Include requires
	// authentication.
	ClientOptions []nats.Option
	// SyncAlways sets JetStream sync_interval: always, so every
	// acknowledged write is on disk.
	SyncAlways bool
}

// NATSCluster is a JetStream cluster of separate nats-server processes.
type NATSCluster struct {
	// URL lists every node's client URL, comma-separated, as nats.Connect
	// and the gateway's recorder.nats_url take it.
	URL   string
	Nodes []*NATSNode

	opts NATSClusterOptions
}

// NATSNode is one server of a cluster.
type NATSNode struct {
	Name        string
	URL         string // nats://127.0.0.1:PORT
	Port        int
	ClusterPort int
	StoreDir    string

	bin     string
	conf    string
	logPath string
	env     []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartNATSCluster starts the nodes and waits until every one serves
// clients and the cluster has a JetStream meta leader. t.Cleanup kills
// them.
func StartNATSCluster(t testing.TB, o NATSClusterOptions) *NATSCluster {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	bin := NATSServerBinary(t)
	c := &NATSCluster{opts: o}
	clientPorts, clusterPorts := make([]int, o.Nodes), make([]int, o.Nodes)
	for i := range o.Nodes {
		clientPorts[i], clusterPorts[i] = FreePort(t), FreePort(t)
	}
	var routes []string
	for _, p := range clusterPorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var urls []string
	for i := range o.Nodes {
		dir := t.TempDir()
		n := &NATSNode{
			Name:        fmt.Sprintf("n%d", i+1),
			Port:        clientPorts[i],
			ClusterPort: clusterPorts[i],
			URL:         fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]),
			StoreDir:    filepath.Join(dir, "store"),
			bin:         bin,
			conf:        filepath.Join(dir, "nats.conf"),
			logPath:     filepath.Join(dir, "nats-server.log"),
			env:         append(os.Environ(), o.Env...),
		}
		if err := n.writeConfig(o, routes); err != nil {
			t.Fatalf("testenv: nats node %s: %v", n.Name, err)
		}
		t.Cleanup(n.kill)
		c.Nodes = append(c.Nodes, n)
		urls = append(urls, n.URL)
	}
	c.URL = strings.Join(urls, ",")
	// All at once: a node waits for its routes before JetStream elects a
	// meta leader.
	for _, n := range c.Nodes {
		if err := n.spawn(); err != nil {
			t.Fatalf("testenv: start nats node %s: %v", n.Name, err)
		}
	}
	for _, n := range c.Nodes {
		if err := c.waitReady(n); err != nil {
			t.Fatalf("testenv: nats node %s: %v\nlog:\n%s", n.Name, err, tailFile(n.logPath, 4000))
		}
	}
	return c
}

func (n *NATSNode) writeConfig(o NATSClusterOptions, routes []string) error {
	if err := os.MkdirAll(n.StoreDir, 0o700); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\n", n.Name, n.Port)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n", n.StoreDir)
	if o.SyncAlways {
		b.WriteString("  sync_interval: always\n")
	}
	b.WriteString("}\n")
	if len(routes) > 1 {
		fmt.Fprintf(&b, "cluster {\n  name: airlock-test\n  listen: 127.0.0.1:%d\n  routes: [\n", n.ClusterPort)
		for _, r := range routes {
			fmt.Fprintf(&b, "    %s\n", r)
		}
		b.WriteString("  ]\n}\n")
	}
	if o.Include != "" {
		inc, err := os.ReadFile(o.Include)
		if err != nil {
			return err
		}
		name := filepath.Base(o.Include)
		if err := os.WriteFile(filepath.Join(filepath.Dir(n.conf), name), inc, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "include %q\n", name)
	}
	return os.WriteFile(n.conf, []byte(b.String()), 0o600)
}

// spawn starts the node's process without waiting for it.
func (n *NATSNode) spawn() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("already running")
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(n.bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = n.env
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	n.cmd, n.exited = cmd, exited
	return nil
}

// waitReady polls node n with a real client until JetStream answers on it,
// which needs a meta leader: a quorum of the cluster is up.
func (c *NATSCluster) waitReady(n *NATSNode) error {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	return waitReady("nats-server", exited, 60*time.Second, func() error { return c.probe(n.URL) })
}

func (c *NATSCluster) probe(url string) error {
	opts := append([]nats.Option{nats.Timeout(time.Second), nats.NoReconnect()}, c.opts.ClientOptions...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// Kill stops node i with SIGKILL, as a crash or a pulled plug (for what
// the process had not written to the OS) would.
func (c *NATSCluster) Kill(t testing.TB, i int) {
	t.Helper()
	c.Nodes[i].signal(t, syscall.SIGKILL)
}

// Stop stops node i with SIGTERM and waits for it.
func (c *NATSCluster) Stop(t testing.TB, i int) {
	t.Helper()
	c.Nodes[i].signal(t, syscall.SIGTERM)
}

// Start starts node i again on its ports and store, and waits until it
// serves JetStream. It may still be catching up on streams; see
// WaitStreamCurrent.
func (c *NATSCluster) Start(t testing.TB, i int) {
	t.Helper()
	n := c.Nodes[i]
	if err := n.spawn(); err != nil {
		t.Fatalf("testenv: restart nats node %s: %v", n.Name, err)
	}
	if err := c.waitReady(n); err != nil {
		t.Fatalf("testenv: restart nats node %s: %v\nlog:\n%s", n.Name, err, tailFile(n.logPath, 4000))
	}
}

// WaitStreamCurrent waits until stream has a leader and every replica is
// current, so that losing another node keeps a quorum with every message.
func (c *NATSCluster) WaitStreamCurrent(t testing.TB, js jetstream.JetStream, stream string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := js.Stream(ctx, stream)
		cancel()
		if err != nil {
			last = err.Error()
		} else if ci := st.CachedInfo().Cluster; ci == nil || ci.Leader == "" {
			last = "no leader"
		} else {
			current := len(ci.Replicas) == len(c.Nodes)-1
			for _, r := range ci.Replicas {
				if !r.Current || r.Offline {
					current = false
				}
			}
			if current {
				return
			}
			last = fmt.Sprintf("leader %s, replicas %+v", ci.Leader, ci.Replicas)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("testenv: stream %s not current on every node after %s: %s", stream, timeout, last)
}

func (n *NATSNode) signal(t testing.TB, sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		t.Fatalf("testenv: nats node %s is not running", n.Name)
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.exited:
	case <-time.After(15 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
		t.Errorf("testenv: nats node %s ignored %s for 15s and was killed", n.Name, sig)
	}
	n.cmd = nil
}

// Log is the tail of the node's log, for a failing test's message.
func (n *NATSNode) Log() string { return tailFile(n.logPath, 8000) }

func (n *NATSNode) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Kill()
		<-n.exited
		n.cmd = nil
	}
}

// StopAll stops every running node with SIGTERM and waits for them, as a
// whole cluster going down.
func (c *NATSCluster) StopAll(t testing.TB) {
	t.Helper()
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		n.mu.Lock()
		running := n.cmd != nil
		n.mu.Unlock()
		if !running {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.signal(t, syscall.SIGTERM)
		}()
	}
	wg.Wait()
}

// Spawn starts node i again on its ports and store without waiting for
// it: alone, a node of a stopped cluster serves clients but has no
// JetStream until a quorum is back.
func (c *NATSCluster) Spawn(t testing.TB, i int) {
	t.Helper()
	n := c.Nodes[i]
	if err := n.spawn(); err != nil {
		t.Fatalf("testenv: restart nats node %s: %v", n.Name, err)
	}
}

// StartAll starts every stopped node at once, as a cluster restarts with
// its data, and waits until each serves JetStream.
func (c *NATSCluster) StartAll(t testing.TB) {
	t.Helper()
	for _, n := range c.Nodes {
		n.mu.Lock()
		running := n.cmd != nil
		n.mu.Unlock()
		if running {
			continue
		}
		if err := n.spawn(); err != nil {
			t.Fatalf("testenv: restart nats node %s: %v", n.Name, err)
		}
	}
	for _, n := range c.Nodes {
		if err := c.waitReady(n); err != nil {
			t.Fatalf("testenv: nats node %s: %v\nlog:\n%s", n.Name, err, tailFile(n.logPath, 4000))
		}
	}
}
