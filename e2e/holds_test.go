package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
)

// pendingHold waits for the one pending hold of the gateway and returns it.
func pendingHold(t *testing.T, g *gateway) *authz.Hold {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var hs []*authz.Hold
		g.CLIJSON(&hs, "alice", "holds", "list", "--state", "pending")
		if len(hs) == 1 {
			return hs[0]
		}
		if len(hs) > 1 {
			t.Fatalf("%d pending holds, want one", len(hs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no hold became pending")
	return nil
}

// TestHoldPostgres: a held DELETE waits in psql until an approver decides;
// approved it runs as held, denied or timed out the client gets an error
// and the session goes on, cancelled the wait ends with 57014; each step
// is in the session's events.
func TestHoldPostgres(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "write", "--hold", "DELETE", "--hold-timeout", "3s")

	// Approve, from the CLI: psql waits, then the row is gone.
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	psql := exec.Command("psql", fmt.Sprintf("host=%s port=%s user=agent-1 dbname=demo-pg sslmode=require", host, port), "-X", "-v", "ON_ERROR_STOP=1", "-c", "delete from orders where id = 1")
	psql.Env = append(os.Environ(), "PGPASSWORD="+tok)
	out := &strings.Builder{}
	psql.Stdout, psql.Stderr = out, out
	if err := psql.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- psql.Wait() }()
	h := pendingHold(t, g)
	if len(h.Statements) != 1 || h.Statements[0].Text != "delete from orders where id = 1" || !h.Statements[0].Hold || h.Agent != "agent-1" {
		t.Fatalf("hold: %+v", h)
	}
	select {
	case err := <-done:
		t.Fatalf("psql returned while its DELETE was held: %v\n%s", err, out)
	default:
	}
	g.MustCLI("alice", "holds", "approve", h.ID, "--comment", "INC-9 cleanup")
	select {
	case err := <-done:
		if err != nil || !strings.Contains(out.String(), "DELETE 1") {
			t.Fatalf("psql after approval: %v\n%s", err, out)
		}
	case <-time.After(10 * time.Second):
		_ = psql.Process.Kill()
		t.Fatalf("psql still waiting 10s after approval:\n%s", out)
	}
	if got, err := g.psql("agent-1", tok, "demo-pg", "select count(*) from orders where id = 1;"); err != nil || !strings.Contains(got, " 0\n") {
		t.Fatalf("row 1 after the approved delete: %v\n%s", err, got)
	}
	evs := sessionEvents(t, g, func(evs []recorder.Event) bool {
		for _, e := range evs {
			if e.Statement != nil && e.Statement.Rule == "hold-approved" {
				return true
			}
		}
		return false
	})
	var steps []string
	approvedID := uint64(0)
	for _, e := range evs {
		if st := e.Statement; st != nil && strings.HasPrefix(st.Text, "delete") {
			steps = append(steps, st.Decision+"/"+st.Rule)
			if st.Rule == "hold-approved" {
				approvedID = st.ID
				if !strings.Contains(st.Reason, "alice") || !strings.Contains(st.Reason, "INC-9 cleanup") {
					t.Errorf("approval event's reason %q does not name the approver and comment", st.Reason)
				}
			}
		}
		for _, r := range e.Outcomes() {
			if r.ID == approvedID && approvedID != 0 {
				steps = append(steps, "result/"+r.Tag)
			}
		}
	}
	if strings.Join(steps, " ") != "hold/"+authz.RuleHoldKind+" allow/hold-approved result/DELETE 1" {
		t.Errorf("events of the held delete: %v", steps)
	}

	// Deny: the client gets 42501 with the reason, the session goes on.
	conn := connectPgx(t, g, "agent-1", tok)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "delete from orders where id = 2")
		errc <- err
	}()
	h = pendingHold(t, g)
	if _, err := g.CLI("alice", "holds", "deny", h.ID); err == nil {
		t.Error("holds deny without --reason succeeded")
	}
	g.MustCLI("alice", "holds", "deny", h.ID, "--reason", "not during business hours")
	var pgErr *pgconn.PgError
	if err := <-errc; !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "not during business hours") {
		t.Fatalf("denied held delete: %v", err)
	}
	var n int
	if err := conn.QueryRow(context.Background(), "select count(*) from orders where id = 2").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after the denial the session should go on and row 2 stay: %d, %v", n, err)
	}

	// Timeout: nobody decides within the grant's 3s.
	start := time.Now()
	_, err := conn.Exec(context.Background(), "delete from orders where id = 3")
	if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, "timed out") || time.Since(start) < 2*time.Second {
		t.Fatalf("held delete nobody decides: %v after %v", err, time.Since(start))
	}

	// Cancel: psql interrupted by SIGINT, as a terminal's Ctrl-C, sends a
	// cancel request; the wait ends and psql reads 57014's message.
	psql = exec.Command("psql", fmt.Sprintf("host=%s port=%s user=agent-1 dbname=demo-pg sslmode=require", host, port), "-X", "-c", "delete from orders where id = 4")
	psql.Env = append(os.Environ(), "PGPASSWORD="+tok)
	out.Reset()
	psql.Stdout, psql.Stderr = out, out
	if err := psql.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- psql.Wait() }()
	pendingHold(t, g)
	_ = psql.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = psql.Process.Kill()
		t.Fatalf("psql still waiting 10s after SIGINT:\n%s", out)
	}
	if !strings.Contains(out.String(), "cancelled") {
		t.Errorf("psql after SIGINT on a held statement:\n%s", out)
	}
	// --hold-denied: what the read grant refuses waits, over the simple
	// protocol; refused at Parse (the extended protocol, which prepares
	// before anything runs) it stays refused and nothing waits.
	_, readTok := grantFor(t, g, "read", "--hold-denied", "--hold-timeout", "3s")
	rc := connectPgx(t, g, "agent-1", readTok)
	start = time.Now()
	if _, err := rc.Exec(context.Background(), "delete from orders where id = $1", 5); !errors.As(err, &pgErr) || pgErr.Code != "42501" || time.Since(start) > 2*time.Second {
		t.Fatalf("delete refused at Parse under --hold-denied: %v after %v", err, time.Since(start))
	}
	go func() {
		_, err := rc.Exec(context.Background(), "delete from orders where id = 5", pgx.QueryExecModeSimpleProtocol)
		errc <- err
	}()
	h = pendingHold(t, g)
	if h.Statements[0].Rule != authz.RuleHoldDenied {
		t.Errorf("held under --hold-denied with rule %q", h.Statements[0].Rule)
	}
	g.MustCLI("alice", "holds", "deny", h.ID, "--reason", "read grant")
	if err := <-errc; !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("denied hold of a refused delete: %v", err)
	}
	rc.Close(context.Background())

	var all []*authz.Hold
	g.CLIJSON(&all, "alice", "holds", "list")
	states := map[authz.HoldState]int{}
	for _, h := range all {
		states[h.State]++
	}
	if states[authz.HoldApproved] != 1 || states[authz.HoldDenied] != 2 || states[authz.HoldExpired] != 1 || states[authz.HoldCancelled] != 1 {
		t.Errorf("holds by state: %v", states)
	}
	// Every session verifies, with its held, approved and refused
	// statements, once the last one has ended.
	conn.Close(context.Background())
	var verr error
	for range 50 {
		var vout string
		if vout, verr = g.CLI("rita", "sessions", "verify", "--all", "--since", "1h"); verr == nil {
			break
		} else if !strings.Contains(vout, "unterminated") && !strings.Contains(verr.Error(), "unterminated") {
			t.Fatalf("verify after holds: %v\n%s", verr, vout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if verr != nil {
		t.Errorf("verify after holds: %v", verr)
	}
}
