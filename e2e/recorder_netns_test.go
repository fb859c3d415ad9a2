package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/testenv"
)

// netns is a network namespace joined to the host by a veth pair: the
// agent's side of a deployment, which should reach the gateway and
// nothing else.
type netns struct {
	name      string
	hostIP    string // the host's end of the veth
	nsIP      string
	hostIface string
}

// newNetns creates the namespace, or skips the test with the reason when
// the machine refuses (no root, no CAP_SYS_ADMIN, no netns support).
func newNetns(t *testing.T) *netns {
	t.Helper()
	ip := testenv.RequireBinary(t, "ip", "iproute2")
	n, _ := rand.Int(rand.Reader, big.NewInt(200))
	sub := int(n.Int64()) + 20
	id := fmt.Sprintf("%d%d", os.Getpid()%10000, sub)
	ns := &netns{
		name:      "airlock-e2e-" + id,
		hostIP:    fmt.Sprintf("10.231.%d.1", sub),
		nsIP:      fmt.Sprintf("10.231.%d.2", sub),
		hostIface: "alk" + id + "h",
	}
	peer := "alk" + id + "n"
	if out, err := exec.Command(ip, "netns", "add", ns.name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here (ip netns add: %v: %s); run as root on a machine that allows it", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		_ = exec.Command(ip, "netns", "del", ns.name).Run()
		_ = exec.Command(ip, "link", "del", ns.hostIface).Run()
	})
	for _, args := range [][]string{
		{"link", "add", ns.hostIface, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", ns.name},
		{"addr", "add", ns.hostIP + "/30", "dev", ns.hostIface},
		{"link", "set", ns.hostIface, "up"},
		{"netns", "exec", ns.name, "ip", "addr", "add", ns.nsIP + "/30", "dev", peer},
		{"netns", "exec", ns.name, "ip", "link", "set", peer, "up"},
		{"netns", "exec", ns.name, "ip", "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Skipf("cannot set up the namespace's link (ip %s: %v: %s)", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return ns
}

// run runs a program inside the namespace.
func (ns *netns) run(ctx context.Context, env []string, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name, prog}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

// reachable reports whether a TCP connection to host:port opens from
// inside the namespace.
func (ns *netns) reachable(t *testing.T, host string, port int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := ns.run(ctx, nil, "timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+strconv.Itoa(port))
	return err == nil
}

// TestNetnsAgentReachesOnlyGateway puts the agent's psql in a network
// namespace whose only link leads to the gateway's listener. The agent's
// queries work; the NATS recorder and the upstream database, up and
// reachable from the host, cannot be reached from there.
func TestNetnsAgentReachesOnlyGateway(t *testing.T) {
	ns := newNetns(t)
	testenv.RequireBinary(t, "bash", "bash")
	gwPort := testenv.FreePort(t)
	g := startGateway(t, gatewayOptions{PostgresListen: fmt.Sprintf("%s:%d", ns.hostIP, gwPort)})
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-14: agent in a box", "--access", "read")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := fmt.Sprintf("host=%s port=%d user=agent-1 dbname=demo-pg sslmode=require connect_timeout=10", ns.hostIP, gwPort)
	out, err := ns.run(ctx, []string{"PGPASSWORD=" + iss.Token}, "psql", conn, "-X", "-At", "-c", "select count(*) from orders")
	if err != nil || strings.TrimSpace(string(out)) != "200" {
		t.Fatalf("psql from the namespace through the gateway: %v\n%s", err, out)
	}
	out, _ = ns.run(ctx, []string{"PGPASSWORD=" + iss.Token}, "psql", conn, "-X", "-At", "-c", "delete from orders")
	if !strings.Contains(string(out), "airlock") {
		t.Fatalf("a refused statement from the namespace: %s", out)
	}

	httpPort, _ := strconv.Atoi(g.URL[strings.LastIndex(g.URL, ":")+1:])
	backends := []struct {
		what string
		port int
	}{
		{"NATS (the recorder)", g.nats.Port},
		{"the upstream PostgreSQL", g.pg.Port},
		{"the gateway's HTTP API", httpPort},
	}
	for _, b := range backends {
		// Up and listening: reachable from the host.
		if !hostReachable(t, "127.0.0.1", b.port) {
			t.Fatalf("%s is not up on port %d", b.what, b.port)
		}
		for _, host := range []string{"127.0.0.1", ns.hostIP} {
			if ns.reachable(t, host, b.port) {
				t.Errorf("%s reachable from the agent's namespace at %s:%d", b.what, host, b.port)
			}
		}
	}
	if !ns.reachable(t, ns.hostIP, gwPort) {
		t.Errorf("the gateway's listener is not reachable from the namespace")
	}
}

func hostReachable(t *testing.T, host string, port int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := exec.CommandContext(ctx, "timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+strconv.Itoa(port)).Run()
	return err == nil
}
