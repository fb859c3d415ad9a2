package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	gossh "golang.org/x/crypto/ssh"

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

// heldClient is a client program whose statement waits for an approver.
type heldClient struct {
	cmd  *exec.Cmd
	out  *lockedBuffer // stdout and stderr
	errb *lockedBuffer // stderr alone
	done chan error
}

// startHeld starts cmd, which is to wait on a held statement.
func startHeld(t *testing.T, cmd *exec.Cmd) *heldClient {
	t.Helper()
	c := &heldClient{cmd: cmd, out: &lockedBuffer{}, errb: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = c.out, io.MultiWriter(c.out, c.errb)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return c
}

// waiting fails the test if the client has already ended.
func (c *heldClient) waiting(t *testing.T) {
	t.Helper()
	select {
	case err := <-c.done:
		t.Fatalf("%s returned while its statement was held: %v\n%s", c.cmd.Path, err, c.out)
	default:
	}
}

// end waits for the client to end and returns how it did.
func (c *heldClient) end(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(within):
		_ = c.cmd.Process.Kill()
		t.Fatalf("%s still running %v after its wait should have ended:\n%s", c.cmd.Path, within, c.out)
	}
	return nil
}

// holdState waits for hold id to leave pending and returns its state.
func holdState(t *testing.T, g *gateway, id string) authz.HoldState {
	t.Helper()
	var h authz.Hold
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		g.CLIJSON(&h, "alice", "holds", "show", id)
		if h.State != authz.HoldPending {
			return h.State
		}
	}
	t.Fatalf("hold %s still pending", id)
	return ""
}

// approvedSteps returns the life of the held statement whose text starts
// with prefix and that an approver let run, from its session's events:
// "hold/RULE allow/hold-approved result/TAG". The approval's reason must
// name the approver and the comment.
func approvedSteps(t *testing.T, g *gateway, prefix, comment string) string {
	t.Helper()
	evs := sessionEvents(t, g, func(evs []recorder.Event) bool {
		for _, e := range evs {
			if st := e.Statement; st != nil && st.Rule == "hold-approved" && strings.HasPrefix(st.Text, prefix) {
				return true
			}
		}
		return false
	})
	var steps []string
	approvedID := uint64(0)
	for _, e := range evs {
		if st := e.Statement; st != nil && strings.HasPrefix(st.Text, prefix) {
			steps = append(steps, st.Decision+"/"+st.Rule)
			if st.Rule == "hold-approved" {
				approvedID = st.ID
				if !strings.Contains(st.Reason, "alice") || !strings.Contains(st.Reason, comment) {
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
	return strings.Join(steps, " ")
}

// checkHoldStates checks how many of the gateway's holds ended in each
// state.
func checkHoldStates(t *testing.T, g *gateway, want map[authz.HoldState]int) {
	t.Helper()
	var all []*authz.Hold
	g.CLIJSON(&all, "alice", "holds", "list")
	got := map[authz.HoldState]int{}
	for _, h := range all {
		got[h.State]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("holds by state: %v, want %v", got, want)
	}
}

// verifyAllSessions checks that every session verifies, with its held,
// approved and refused statements, once the last one has ended.
func verifyAllSessions(t *testing.T, g *gateway) {
	t.Helper()
	var verr error
	for range 50 {
		var vout string
		if vout, verr = g.CLI("rita", "sessions", "verify", "--all", "--since", "1h"); verr == nil {
			return
		} else if !strings.Contains(vout, "unterminated") && !strings.Contains(verr.Error(), "unterminated") {
			t.Fatalf("verify after holds: %v\n%s", verr, vout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("verify after holds: %v", verr)
}

// TestHoldPostgres: a held DELETE waits in psql until an approver decides;
// approved it runs as held, denied or timed out the client gets an error
// and the session goes on, cancelled the wait ends with 57014; each step
// is in the session's events.
func TestHoldPostgres(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "write", "--hold", "DELETE", "--hold-timeout", "3s")
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	psql := func(args ...string) *heldClient {
		cmd := exec.Command("psql", append([]string{fmt.Sprintf("host=%s port=%s user=agent-1 dbname=demo-pg sslmode=require", host, port), "-X"}, args...)...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+tok)
		return startHeld(t, cmd)
	}

	// Approve, from the CLI: psql waits, then the row is gone.
	c := psql("-v", "ON_ERROR_STOP=1", "-c", "delete from orders where id = 1")
	h := pendingHold(t, g)
	if len(h.Statements) != 1 || h.Statements[0].Text != "delete from orders where id = 1" || !h.Statements[0].Hold || h.Agent != "agent-1" {
		t.Fatalf("hold: %+v", h)
	}
	c.waiting(t)
	g.MustCLI("alice", "holds", "approve", h.ID, "--comment", "INC-9 cleanup")
	if err := c.end(t, 10*time.Second); err != nil || !strings.Contains(c.out.String(), "DELETE 1") {
		t.Fatalf("psql after approval: %v\n%s", err, c.out)
	}
	if got, err := g.psql("agent-1", tok, "demo-pg", "select count(*) from orders where id = 1;"); err != nil || !strings.Contains(got, " 0\n") {
		t.Fatalf("row 1 after the approved delete: %v\n%s", err, got)
	}
	if got := approvedSteps(t, g, "delete", "INC-9 cleanup"); got != "hold/"+authz.RuleHoldKind+" allow/hold-approved result/DELETE 1" {
		t.Errorf("events of the held delete: %v", got)
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
	c = psql("-c", "delete from orders where id = 4")
	pendingHold(t, g)
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	_ = c.end(t, 10*time.Second)
	if !strings.Contains(c.out.String(), "cancelled") {
		t.Errorf("psql after SIGINT on a held statement:\n%s", c.out)
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

	checkHoldStates(t, g, map[authz.HoldState]int{authz.HoldApproved: 1, authz.HoldDenied: 2, authz.HoldExpired: 1, authz.HoldCancelled: 1})
	conn.Close(context.Background())
	verifyAllSessions(t, g)
}

// TestHoldMySQL: a held DELETE waits in the mysql client until an approver
// decides; approved it runs, denied or timed out the client gets an ERROR
// with the reason and the session goes on; the client's Ctrl-C, or a KILL
// QUERY from another connection of the grant, ends the wait as a killed
// query (1317); a prepared statement's execution is held with its
// parameters.
func TestHoldMySQL(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	tok := g.grantMySQL("agent-1", t.Name(), "write", "--hold", "DELETE", "--hold-timeout", "3s").Token
	gone := func(id int) bool {
		return g.my.QueryInt(t, fmt.Sprintf("select count(*) from orders where id = %d", id)) == 0
	}

	// Approve, from the CLI: the mysql client waits, then the row is gone.
	c := g.startMySQLCLI(tok, "-e", "delete from orders where id = 1; select row_count();")
	h := pendingHold(t, g)
	if len(h.Statements) != 1 || h.Statements[0].Text != "delete from orders where id = 1" || h.Statements[0].Rule != authz.RuleHoldKind || h.Resource != "shop-mysql" {
		t.Fatalf("hold: %+v", h)
	}
	select {
	case err := <-c.done:
		t.Fatalf("mysql returned while its DELETE was held: %v", err)
	default:
	}
	g.MustCLI("alice", "holds", "approve", h.ID, "--comment", "INC-9 cleanup")
	if l := c.line(t, 10*time.Second); l != "1" {
		t.Fatalf("row_count() after the approved delete: %q", l)
	}
	if err := <-c.done; err != nil || !gone(1) {
		t.Fatalf("mysql after approval: %v, row 1 gone: %v\n%s", err, gone(1), c.out.String())
	}
	if got := approvedSteps(t, g, "delete", "INC-9 cleanup"); got != "hold/"+authz.RuleHoldKind+" allow/hold-approved result/OK 1" {
		t.Errorf("events of the held delete: %v", got)
	}

	// Deny: an ERROR with the reason, and the same session goes on
	// (--force: the client carries on after an error).
	cmd := g.mysqlCommand(tok, "--force")
	cmd.Stdin = strings.NewReader("delete from orders where id = 2;\nselect count(*) from orders where id = 2;\n")
	hc := startHeld(t, cmd)
	h = pendingHold(t, g)
	g.MustCLI("alice", "holds", "deny", h.ID, "--reason", "not during business hours")
	_ = hc.end(t, 10*time.Second)
	// The error, then the next statement's answer: row 2 is still there.
	if !regexp.MustCompile(`(?m)^ERROR 1142 \(42000\) at line 1: airlock: the held statement was denied: denied by alice: not during business hours \(hold hold_\w+\)\n1\n$`).MatchString(hc.out.String()) {
		t.Errorf("denied held delete, then the session goes on:\n%s", hc.out)
	}

	// Timeout: nobody decides within the grant's 3s; go-sql-driver reads
	// the server's error number.
	db := g.mysqlDB("agent-1", tok)
	start := time.Now()
	_, err := db.Exec("delete from orders where id = 3")
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 1142 || !strings.Contains(myErr.Message, "timed out") || time.Since(start) < 2*time.Second {
		t.Fatalf("held delete nobody decides: %v after %v", err, time.Since(start))
	}

	// The mysql client's Ctrl-C: it sends KILL QUERY with its greeting's
	// connection id on a second connection; the wait ends as a killed
	// query does.
	c = g.startMySQLCLI(tok, "-e", "delete from orders where id = 4")
	h = pendingHold(t, g)
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	c.until(t, "ERROR 1317 (70100)", 10*time.Second)
	if st := holdState(t, g, h.ID); st != authz.HoldCancelled || gone(4) {
		t.Errorf("hold after the client's Ctrl-C: %s, row 4 gone: %v", st, gone(4))
	}

	// KILL QUERY by CONNECTION_ID(), from another client of the grant: it
	// is recorded in that client's session and ends the wait; nothing is
	// killed upstream, where the held statement never started.
	c = g.startMySQLCLI(tok, "-e", "select connection_id(); delete from orders where id = 4;")
	id := c.line(t, 20*time.Second)
	h = pendingHold(t, g)
	if out, err := g.mysqlCLI("agent-1", tok, "shop-mysql", "KILL QUERY "+id+";\n"); err != nil {
		t.Fatalf("KILL QUERY %s of a held statement: %v\n%s", id, err, out)
	}
	c.until(t, "ERROR 1317 (70100)", 10*time.Second)
	if st := holdState(t, g, h.ID); st != authz.HoldCancelled || gone(4) {
		t.Errorf("hold after KILL QUERY: %s, row 4 gone: %v", st, gone(4))
	}
	evs := sessionEvents(t, g, func(evs []recorder.Event) bool {
		for _, e := range evs {
			if e.Statement != nil && e.Statement.Text == "KILL QUERY "+id {
				return true
			}
		}
		return false
	})
	if kill, res := findStatement(t, evs, "KILL QUERY", "KILL QUERY "+id); kill.Decision != "allow" || res == nil || !res.Executed {
		t.Errorf("the KILL QUERY: %+v, result %+v", kill, res)
	}

	// A prepared DELETE (COM_STMT_EXECUTE, through go-sql-driver): held
	// with its parameter, approved, it runs.
	errc := make(chan error, 1)
	go func() {
		_, err := db.Exec("delete from orders where id = ?", 6)
		errc <- err
	}()
	h = pendingHold(t, g)
	if len(h.Statements) != 1 || h.Statements[0].Text != "delete from orders where id = ?" || fmt.Sprint(h.Statements[0].Params) != "[6]" {
		t.Fatalf("hold of a prepared delete: %+v", h.Statements)
	}
	g.MustCLI("alice", "holds", "approve", h.ID, "--comment", "prepared")
	if err := <-errc; err != nil || !gone(6) {
		t.Fatalf("prepared delete after approval: %v, row 6 gone: %v", err, gone(6))
	}
	db.Close()

	checkHoldStates(t, g, map[authz.HoldState]int{authz.HoldApproved: 2, authz.HoldDenied: 1, authz.HoldExpired: 1, authz.HoldCancelled: 2})
	verifyAllSessions(t, g)
}

// TestHoldSSH: an exec the grant holds by command pattern (--hold-command)
// waits in ssh until an approver decides: approved it runs and ssh exits
// 0, denied ssh reads the reason on stderr and exits non-zero; ssh's
// Ctrl-C (without a terminal it ends the client, and its connection), or
// a signal request, ends the wait as cancelled.
func TestHoldSSH(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})
	iss := g.sshGrant("box", t.Name(), "--command", "rm -f *", "--command", "rm -i *", "--command", "uptime", "--shell", "--hold-command", "rm **", "--hold-timeout", "30s")
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	sshCmd := func(command string, opts ...string) *exec.Cmd {
		a := append(append(append(g.sshOpts(), g.keyAuth()...), opts...), "-p", g.ssh.port, "agent-1+box@"+g.ssh.host, command)
		return exec.Command("ssh", a...)
	}
	ssh := func(command string) *heldClient { return startHeld(t, sshCmd(command)) }

	// --hold-command is for ssh, and a pattern must read as a --command
	// rule.
	for _, bad := range [][]string{
		{"--resource", "demo-pg", "--access", "write", "--hold-command", "rm *"},
		{"--resource", "box", "--command", "uptime", "--hold-command", "raw:"},
	} {
		args := append([]string{"grants", "create", "--agent", "agent-1", "--task", t.Name()}, bad...)
		if out, err := g.CLI("alice", args...); err == nil || !strings.Contains(out+err.Error(), "--hold-command") {
			t.Errorf("grants create %v: %v\n%s", bad, err, out)
		}
	}

	// Not held: a command no --hold-command matches runs at once.
	if r := g.sshThrough(t, "", nil, "uptime"); r.code != 0 {
		t.Fatalf("uptime under a grant that holds rm: exit %d, %s", r.code, r.stderr)
	}

	// Approve: ssh waits, then the command runs and ssh exits 0.
	a := file("approved")
	c := ssh("rm -f " + a)
	h := pendingHold(t, g)
	if len(h.Statements) != 1 || h.Statements[0].Text != "rm -f "+a || h.Statements[0].Rule != authz.RuleHoldCommand || h.Statements[0].Kind != "EXEC" {
		t.Fatalf("hold: %+v", h.Statements)
	}
	c.waiting(t)
	if !exists(a) {
		t.Fatal("the held command ran before it was approved")
	}
	g.MustCLI("alice", "holds", "approve", h.ID, "--comment", "INC-9 cleanup")
	if err := c.end(t, 10*time.Second); err != nil || exists(a) {
		t.Fatalf("ssh after approval: %v, file left: %v\n%s", err, exists(a), c.out)
	}
	if got := approvedSteps(t, g, "rm -f "+a, "INC-9 cleanup"); got != "hold/"+authz.RuleHoldCommand+" allow/hold-approved result/exit 0" {
		t.Errorf("events of the held command: %v", got)
	}

	// Deny: the reason on stderr, a non-zero exit, nothing ran.
	d := file("denied")
	c = ssh("rm -f " + d)
	h = pendingHold(t, g)
	g.MustCLI("alice", "holds", "deny", h.ID, "--reason", "keep that file")
	err := c.end(t, 10*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 126 || !strings.Contains(c.errb.String(), "keep that file") || !exists(d) {
		t.Errorf("ssh after denial: %v, stderr %q, file kept: %v", err, c.errb, exists(d))
	}

	// Ctrl-C: SIGINT ends ssh (no terminal) and its connection; the wait
	// ends as cancelled.
	c = ssh("rm -f " + d)
	h = pendingHold(t, g)
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	_ = c.end(t, 10*time.Second)
	if st := holdState(t, g, h.ID); st != authz.HoldCancelled || !exists(d) {
		t.Errorf("hold after ssh's Ctrl-C: %s, file kept: %v", st, exists(d))
	}

	// With a terminal (-tt), what the agent types while the command waits
	// reaches it once approved: rm -i reads its answer.
	i := file("interactive")
	cmd := sshCmd("rm -i "+i, "-tt")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c = startHeld(t, cmd)
	h = pendingHold(t, g)
	if _, err := stdin.Write([]byte("y\n")); err != nil {
		t.Fatal(err)
	}
	g.MustCLI("alice", "holds", "approve", h.ID, "--comment", "interactive")
	if err := c.end(t, 10*time.Second); err != nil || exists(i) {
		t.Errorf("ssh -tt rm -i after approval, with y typed while it waited: %v, file left: %v\n%s", err, exists(i), c.out)
	}

	// With a terminal, Ctrl-C is a 0x03 byte of input: it ends the wait
	// as cancelled.
	cmd = sshCmd("rm -f "+d, "-tt")
	if stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	c = startHeld(t, cmd)
	h = pendingHold(t, g)
	if _, err := stdin.Write([]byte{0x03}); err != nil {
		t.Fatal(err)
	}
	if err := c.end(t, 10*time.Second); err == nil || !strings.Contains(c.out.String(), "cancelled") {
		t.Errorf("ssh -tt after Ctrl-C while held: %v\n%s", err, c.out)
	}
	if st := holdState(t, g, h.ID); st != authz.HoldCancelled || !exists(d) {
		t.Errorf("hold after Ctrl-C on a terminal: %s, file kept: %v", st, exists(d))
	}

	// A signal request (x/crypto's client; OpenSSH's sends none) ends the
	// wait too: the agent reads why and exit status 126.
	client, err := g.dialSSH("agent-1+box", gossh.Password(iss.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	sess.Stderr = stderr
	runc := make(chan error, 1)
	go func() { runc <- sess.Run("rm -f " + d) }()
	h = pendingHold(t, g)
	if err := sess.Signal(gossh.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-runc:
	case <-time.After(10 * time.Second):
		t.Fatal("the exec still waits 10s after a signal")
	}
	var xe *gossh.ExitError
	if !errors.As(err, &xe) || xe.ExitStatus() != 126 || !strings.Contains(stderr.String(), "cancelled") || !exists(d) {
		t.Errorf("exec after a signal while held: %v, stderr %q, file kept: %v", err, stderr, exists(d))
	}
	if st := holdState(t, g, h.ID); st != authz.HoldCancelled {
		t.Errorf("hold after a signal: %s", st)
	}
	client.Close()

	checkHoldStates(t, g, map[authz.HoldState]int{authz.HoldApproved: 2, authz.HoldDenied: 1, authz.HoldCancelled: 3})
	verifyAllSessions(t, g)
}
