package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlockhq/airlock/testenv"
)

// mysqlProc is a mysql client process running through the gateway, with
// its output read line by line as it comes.
type mysqlProc struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
	out   strings.Builder
}

func (g *gateway) startMySQLCLI(token string, args ...string) *mysqlProc {
	g.t.Helper()
	cmd := g.mysqlCommand(token, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &mysqlProc{cmd: cmd, lines: make(chan string, 100), done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() { err := cmd.Wait(); pw.Close(); p.done <- err }()
	g.t.Cleanup(func() { _ = cmd.Process.Kill() })
	return p
}

// mysqlCommand is the mysql client as agent-1 on shop-mysql with token,
// in batch mode without column names, then args.
func (g *gateway) mysqlCommand(token string, args ...string) *exec.Cmd {
	g.t.Helper()
	bin := testenv.RequireBinary(g.t, "mariadb", "mariadb-client")
	host, port, _ := strings.Cut(g.MySQLAddr, ":")
	return exec.Command(bin, append([]string{"--no-defaults", "-h", host, "-P", port, "-u", "agent-1", "--password=" + token,
		"--ssl", "--connect-timeout=10", "-N", "-B", "--unbuffered", "shop-mysql"}, args...)...)
}

// line returns the client's next line of output.
func (p *mysqlProc) line(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatalf("the mysql client ended; it printed:\n%s", p.out.String())
		}
		p.out.WriteString(l + "\n")
		return l
	case <-time.After(within):
		t.Fatalf("no output from the mysql client within %v; it printed:\n%s", within, p.out.String())
	}
	return ""
}

// until reads the client's output up to a line holding s.
func (p *mysqlProc) until(t *testing.T, s string, within time.Duration) {
	t.Helper()
	for !strings.Contains(p.line(t, within), s) {
	}
}

// waitSleeping waits until the upstream runs a SLEEP statement.
func waitSleeping(t *testing.T, g *gateway) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); g.my.QueryInt(t, "select count(*) from information_schema.processlist where info like 'select sleep(30)%'") == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow statement never started upstream")
		}
	}
}

// TestMySQLKill: KILL with the id the client saw. One mysql client runs
// SELECT SLEEP(30); another of the same grant kills it by the first one's
// CONNECTION_ID() (the upstream's thread id) and the sleep ends within 2 s.
// A kill from a session of another grant, or of an id no session has, is
// refused with the server's error for an unknown thread (1094) and
// recorded. The mysql client's own Ctrl-C (KILL QUERY with the greeting's
// id, on a second connection that names no database) works too.
func TestMySQLKill(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	slow := g.grantMySQL("agent-1", "INC-73: a slow report", "write")
	other := g.grantMySQL("agent-1", "INC-74: another task", "write")
	stranger := g.grantMySQL("agent-2", "INC-75: someone else", "read")

	victim := g.startMySQLCLI(slow.Token, "-e", "select connection_id(); select sleep(30);")
	id, err := strconv.ParseUint(victim.line(t, 20*time.Second), 10, 32)
	if err != nil {
		t.Fatalf("CONNECTION_ID(): %v\n%s", err, victim.out.String())
	}
	waitSleeping(t, g)

	// Refused: another grant of the same agent, another agent, an id no
	// session has. The sleep goes on.
	for _, c := range []struct {
		name, token string
		id          uint64
	}{
		{"another grant", other.Token, id},
		{"another agent", stranger.Token, id},
		{"no such id", slow.Token, 987654},
	} {
		user := "agent-1"
		if c.token == stranger.Token {
			user = "agent-2"
		}
		out, err := g.mysqlCLI(user, c.token, "shop-mysql", fmt.Sprintf("KILL QUERY %d;\n", c.id))
		want := fmt.Sprintf("ERROR 1094 (HY000) at line 1: Unknown thread id: %d (airlock: ", c.id)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("%s: KILL QUERY %d: %v, want %q in:\n%s", c.name, c.id, err, want, out)
		}
	}
	select {
	case err := <-victim.done:
		t.Fatalf("the sleep ended before it was killed: %v\n%s", err, victim.out.String())
	default:
	}

	// The same grant kills it by CONNECTION_ID().
	killed := time.Now()
	out, err := g.mysqlCLI("agent-1", slow.Token, "shop-mysql", fmt.Sprintf("KILL QUERY %d;\n", id))
	if err != nil {
		t.Fatalf("KILL QUERY %d by the same grant: %v\n%s", id, err, out)
	}
	victim.until(t, "ERROR 1317 (70100)", 5*time.Second)
	if d := time.Since(killed); d > 2*time.Second {
		t.Errorf("the sleep ended %v after the KILL, want within 2s", d)
	}
	t.Logf("killed by CONNECTION_ID() %d; the sleep ended after %v", id, time.Since(killed).Round(time.Millisecond))

	// The mysql client's Ctrl-C: it sends KILL QUERY with the greeting's
	// connection id on a new connection without a database.
	ctrlc := g.startMySQLCLI(slow.Token, "-e", "select sleep(30);")
	waitSleeping(t, g)
	if err := ctrlc.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	interrupted := time.Now()
	ctrlc.until(t, "ERROR 1317 (70100)", 5*time.Second)
	if d := time.Since(interrupted); d > 2*time.Second {
		t.Errorf("Ctrl-C stopped the sleep after %v, want within 2s", d)
	}
	if strings.Contains(ctrlc.out.String(), "cannot connect to server to kill query") {
		t.Errorf("the mysql client could not connect to kill:\n%s", ctrlc.out.String())
	}

	// KILL CONNECTION by CONNECTION_ID() ends the other session.
	c := g.mysqlRaw("agent-1", slow.Token)
	r, err := c.Execute("select connection_id()")
	if err != nil {
		t.Fatal(err)
	}
	thread, _ := r.GetInt(0, 0)
	if out, err := g.mysqlCLI("agent-1", slow.Token, "shop-mysql", fmt.Sprintf("KILL %d;\n", thread)); err != nil {
		t.Fatalf("KILL %d: %v\n%s", thread, err, out)
	}
	if _, err := c.Execute("select 1"); err == nil {
		t.Error("the killed connection still answers")
	}

	// The record: the allowed kills by own-session, the refused ones by
	// no-such-thread.
	allowed, refused := 0, 0
	for _, grant := range []string{slow.Grant.ID, other.Grant.ID, stranger.Grant.ID} {
		for _, evs := range g.sessionEvents(grant) {
			for _, e := range evs {
				st := e.Statement
				switch {
				case st == nil || !strings.HasPrefix(st.Class.Kind, "KILL"):
				case st.Decision == "allow" && st.Rule == "own-session":
					allowed++
				case st.Decision == "deny" && st.Rule == "no-such-thread":
					refused++
				default:
					t.Errorf("KILL recorded as %s by %s: %s", st.Decision, st.Rule, st.Reason)
				}
			}
		}
	}
	if allowed != 3 || refused != 3 {
		t.Errorf("recorded %d allowed and %d refused KILLs, want 3 and 3", allowed, refused)
	}
}
