package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/airlockhq/airlock/authz"
)

// holdStates counts the gateway's holds by state.
func holdStates(t *testing.T, g *gateway) map[authz.HoldState]int {
	t.Helper()
	var all []*authz.Hold
	g.CLIJSON(&all, "alice", "holds", "list")
	states := map[authz.HoldState]int{}
	for _, h := range all {
		states[h.State]++
	}
	return states
}

// mysqlErr is err's MySQL error number, 0 if it has none.
func mysqlErr(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// TestHoldMySQL: the real mysql client waits on a held DELETE until an
// approver lets it run; a prepared DELETE (COM_STMT_EXECUTE) is held
// with its parameters and denied (the session goes on); KILL QUERY from
// another connection of the grant ends a wait with the server's own
// ER_QUERY_INTERRUPTED; the timeout refuses; every session verifies.
func TestHoldMySQL(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-80 clean up orders", "write", "--hold", "DELETE", "--hold-timeout", "1m")

	// The mysql client: waits, then runs once approved.
	outc := make(chan string, 1)
	go func() {
		out, err := g.mysqlCLI("agent-1", iss.Token, "shop-mysql", "delete from orders where id = 1;\nselect 'after' as step;\n", "-N", "-B")
		if err != nil {
			out += "\nerror: " + err.Error()
		}
		outc <- out
	}()
	h := pendingHold(t, g)
	if h.Resource != "shop-mysql" || len(h.Statements) != 1 || h.Statements[0].Text != "delete from orders where id = 1" || h.Statements[0].Rule != authz.RuleHoldKind {
		t.Fatalf("hold: %+v", h)
	}
	select {
	case out := <-outc:
		t.Fatalf("mysql returned while its DELETE was held: %s", out)
	case <-time.After(300 * time.Millisecond):
	}
	g.MustCLI("alice", "holds", "approve", h.ID, "--comment", "INC-80 ok")
	if out := <-outc; strings.TrimSpace(out) != "after" {
		t.Fatalf("mysql after the approval: %q", out)
	}
	if n := g.my.QueryInt(t, "select count(*) from orders where id = 1"); n != 0 {
		t.Fatalf("order 1 after the approved delete: %d rows", n)
	}

	// A prepared DELETE through the Go driver: held with its parameter,
	// denied with a reason; the same connection goes on.
	db := g.mysqlDB("agent-1", iss.Token)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := conn.ExecContext(ctx, "delete from orders where id = ?", 2)
		errc <- err
	}()
	h = pendingHold(t, g)
	if h.Statements[0].Text != "delete from orders where id = ?" || !slices.Equal(h.Statements[0].Params, []string{"2"}) {
		t.Fatalf("prepared hold: %+v", h.Statements)
	}
	g.MustCLI("alice", "holds", "deny", h.ID, "--reason", "order 2 stays")
	if err := <-errc; mysqlErr(err) != 1142 || !strings.Contains(err.Error(), "order 2 stays") {
		t.Fatalf("denied prepared delete: %v", err)
	}
	var one int
	if err := conn.QueryRowContext(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("the session after the denial: %v", err)
	}

	// KILL QUERY from a second connection ends the wait.
	var id uint64
	if err := conn.QueryRowContext(ctx, "select connection_id()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := conn.ExecContext(ctx, "delete from orders where id = 3")
		errc <- err
	}()
	pendingHold(t, g)
	if _, err := db.ExecContext(ctx, "KILL QUERY "+strconv.FormatUint(id, 10)); err != nil {
		t.Fatalf("KILL QUERY of the waiting session: %v", err)
	}
	select {
	case err := <-errc:
		if mysqlErr(err) != 1317 {
			t.Fatalf("the killed wait: %v, want ERROR 1317", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held delete still waits 10s after KILL QUERY")
	}
	if err := conn.QueryRowContext(ctx, "select count(*) from orders where id = 3").Scan(&one); err != nil || one != 1 {
		t.Fatalf("after the killed wait: order 3 ×%d (%v)", one, err)
	}

	// The timeout.
	short := g.grantMySQL("agent-1", "INC-81 short hold", "write", "--hold", "DELETE", "--hold-timeout", "2s")
	start := time.Now()
	shortDB := g.mysqlDB("agent-1", short.Token)
	if _, err := shortDB.ExecContext(ctx, "delete from orders where id = 4"); mysqlErr(err) != 1142 || !strings.Contains(err.Error(), "timed out") || time.Since(start) < 2*time.Second {
		t.Fatalf("timed-out hold: %v after %v", err, time.Since(start))
	}

	if got := holdStates(t, g); got[authz.HoldApproved] != 1 || got[authz.HoldDenied] != 1 || got[authz.HoldCancelled] != 1 || got[authz.HoldExpired] != 1 {
		t.Errorf("holds by state: %v", got)
	}
	conn.Close()
	db.Close()
	shortDB.Close()
	verifyAll(t, g, g.lastSession("shop-mysql").Summary.Session)
}

// TestHoldSSH: a --hold-command pattern holds an exec the grant would
// otherwise refuse: approved, it runs on the target; denied, the client
// reads the reason on stderr and exits 126; ssh interrupted (Ctrl-C)
// while it waits cancels the hold, and nothing ran.
func TestHoldSSH(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})
	g.sshGrant("box", "INC-82 touch a marker", "--command", "echo *", "--hold-command", "touch *", "--hold-timeout", "1m")
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "approved")

	done := make(chan sshRun, 1)
	go func() { done <- g.sshAs("box", g.keyAuth(), "", "touch", marker) }()
	h := pendingHold(t, g)
	if h.Resource != "box" || h.Statements[0].Text != "touch "+marker || h.Statements[0].Rule != authz.RuleHoldCommand {
		t.Fatalf("hold: %+v", h)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the held command ran before anyone decided")
	}
	g.MustCLI("alice", "holds", "approve", h.ID)
	if r := <-done; r.code != 0 {
		t.Fatalf("approved touch: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the approved command did not run: %v", err)
	}

	denied := filepath.Join(dir, "denied")
	go func() { done <- g.sshAs("box", g.keyAuth(), "", "touch", denied) }()
	h = pendingHold(t, g)
	g.MustCLI("alice", "holds", "deny", h.ID, "--reason", "no more markers")
	if r := <-done; r.code != 126 || !strings.Contains(r.stderr, "no more markers") {
		t.Fatalf("denied touch: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := g.sshAs("box", g.keyAuth(), "", "echo", "still"); r.code != 0 || r.stdout != "still\n" {
		t.Fatalf("an allowed command after the denial: %+v", r)
	}

	// Ctrl-C: ssh without a terminal exits on SIGINT, closing its
	// connection; the gateway cancels the wait.
	cancelled := filepath.Join(dir, "cancelled")
	args := append(g.sshOpts(), g.keyAuth()...)
	args = append(args, "-p", g.ssh.port, "agent-1+box@"+g.ssh.host, "touch", cancelled)
	cmd := exec.Command("ssh", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	h = pendingHold(t, g)
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("ssh still running 10s after SIGINT")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got authz.Hold
		g.CLIJSON(&got, "alice", "holds", "show", h.ID)
		if got.State == authz.HoldCancelled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hold after ssh's SIGINT: %+v", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(cancelled); err == nil {
		t.Fatal("the cancelled command ran")
	}
	verifyAll(t, g, g.lastSession("box").Summary.Session)
}
