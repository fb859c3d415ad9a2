package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
)

// psqlSession is a psql process kept open on the gateway, fed statements
// on stdin one at a time, as an agent's interactive session.
type psqlSession struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan struct{}
}

func (p *psqlSession) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *psqlSession) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// openPsql starts psql as agent-1 with token on the gateway's Postgres
// listener and keeps it open.
func (g *gateway) openPsql(t *testing.T, token string) *psqlSession {
	t.Helper()
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	p := &psqlSession{t: t, done: make(chan struct{})}
	p.cmd = exec.Command("psql", fmt.Sprintf("host=%s port=%s user=agent-1 dbname=demo-pg sslmode=require connect_timeout=10", host, port), "-X")
	p.cmd.Env = append(os.Environ(), "PGPASSWORD="+token)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// run sends one statement and waits until psql has printed want (once
// more than before).
func (p *psqlSession) run(stmt, want string) {
	p.t.Helper()
	before := strings.Count(p.output(), want)
	if _, err := io.WriteString(p.stdin, stmt+"\n"); err != nil {
		p.t.Fatalf("psql stdin: %v\n%s", err, p.output())
	}
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(p.output(), want) <= before {
		if time.Now().After(deadline) {
			p.t.Fatalf("psql did not print %q after %s:\n%s", want, stmt, p.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gone waits until psql has noticed the server went away.
func (p *psqlSession) gone() {
	p.t.Helper()
	_, _ = io.WriteString(p.stdin, "select 'after the crash';\n")
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("psql still runs after the gateway died:\n%s", p.output())
	}
	if strings.Contains(p.output(), "after the crash\n") && !strings.Contains(p.output(), "connection") {
		p.t.Fatalf("a statement ran after the gateway died:\n%s", p.output())
	}
}

var instanceRe = regexp.MustCompile(`msg="gateway instance" instance=(gi_[a-z2-7]+)`)

// instanceOf is the instance id the gateway logged at its last start.
func (g *gateway) instanceOf() string {
	g.t.Helper()
	m := instanceRe.FindAllStringSubmatch(g.Log(), -1)
	if len(m) == 0 {
		g.t.Fatalf("the gateway did not log its instance:\n%s", g.Log())
	}
	return m[len(m)-1][1]
}

// TestRecorderInterruptedByReplica: two gateway replicas share the
// recorder. The first serves a psql session and is killed (SIGKILL) in
// the middle of it and not restarted. The second finds the first silent
// for recorder.instance_timeout and marks the session interrupted, with a
// note naming itself; its own live session and the first one's ended
// session are left alone. verify calls the session intact but
// interrupted.
func TestRecorderInterruptedByReplica(t *testing.T) {
	const timeout = 3 * time.Second
	rc := fmt.Sprintf("  instance_timeout: %s\n", timeout)
	a := startGateway(t, gatewayOptions{Recorder: rc})
	b := startGateway(t, gatewayOptions{ReplicaOf: a, Recorder: rc})
	var iss control.Issued
	a.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-12: replica notices", "--access", "read")

	// One finished session on a, one live session on b.
	if out, err := a.psql("agent-1", iss.Token, "demo-pg", "select 1;\n"); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	onB := b.openPsql(t, iss.Token)
	onB.run("select 'on b';", "(1 row)")

	p := a.openPsql(t, iss.Token)
	p.run("select count(*) from orders;", "(1 row)")
	p.run("select 'still here';", "(1 row)")
	a.Kill()
	killed := time.Now()
	p.gone()

	var sess recorder.Summary
	deadline := killed.Add(timeout + 20*time.Second)
	for {
		var list []recorder.Summary
		b.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
		var interrupted []recorder.Summary
		for _, s := range list {
			if s.Status == recorder.StatusInterrupted {
				interrupted = append(interrupted, s)
			}
		}
		if len(interrupted) > 1 {
			t.Fatalf("more than the killed session marked interrupted: %+v", list)
		}
		if len(interrupted) == 1 {
			sess = interrupted[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed gateway's session is not marked interrupted %s after the kill: %+v\n%s", time.Since(killed), list, b.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(killed)
	t.Logf("marked interrupted %s after the kill (instance_timeout %s)", took.Round(100*time.Millisecond), timeout)
	if took < timeout {
		t.Fatalf("marked %s after the kill, before the %s timeout", took, timeout)
	}
	aInstance, bInstance := a.instanceOf(), b.instanceOf()
	if sess.Instance != aInstance || sess.Interrupted.Instance != aInstance || sess.Interrupted.By != bInstance ||
		!strings.Contains(sess.Interrupted.Reason, "sent no heartbeat") {
		t.Fatalf("note: %+v %+v (a %s, b %s)", sess, sess.Interrupted, aInstance, bInstance)
	}

	// The others are as they were: b's live session open, a's first ended.
	var list []recorder.Summary
	b.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
	status := map[string]int{}
	for _, s := range list {
		status[s.Status]++
	}
	if status[recorder.StatusOpen] != 1 || status[recorder.StatusEnded] != 1 || status[recorder.StatusInterrupted] != 1 {
		t.Fatalf("sessions: %+v", list)
	}

	stdout, stderr, code := b.CLIRun("rita", "sessions", "verify", sess.Session)
	if code != 3 || !strings.Contains(stdout, sess.Session+": INTERRUPTED (intact)") || !strings.Contains(stdout, "sent no heartbeat") {
		t.Fatalf("verify: exit %d, want 3\n%s%s", code, stdout, stderr)
	}
	var d control.SessionDetail
	b.CLIJSON(&d, "rita", "sessions", "show", sess.Session)
	last := d.Events[len(d.Events)-1]
	if last.Type != recorder.TypeSessionInterrupted || last.Interrupted.LastSeq != last.Seq-1 || last.Time.Before(killed) {
		t.Fatalf("the last event: %+v", last)
	}
	onB.run("select 'b carries on';", "(1 row)")
}

// TestRecorderUnsignedTailAfterKill kills the gateway right after a
// session's statements, within recorder.sign_interval (set long here, so
// that none of them is signed yet). After the restart the session is
// marked interrupted, and verify reports the statements after the last
// signature as a chained, unsigned tail with their count: intact, not
// forged, and not reported as signed either.
func TestRecorderUnsignedTailAfterKill(t *testing.T) {
	g := startGateway(t, gatewayOptions{Recorder: "  sign_interval: 40s\n"})
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-12: unsigned tail", "--access", "read")
	p := g.openPsql(t, iss.Token)
	for i := range 3 {
		p.run(fmt.Sprintf("select %d as n;", i), "(1 row)")
	}
	g.Kill()
	p.gone()
	g.Restart()
	s := waitInterrupted(t, g, "rita", 15*time.Second)

	// The signed session.start, then four unsigned events: psql's
	// application_name, asked for at connect and recorded as a startup
	// setting, and the three statements.
	stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", s.Session)
	if code != 3 || !strings.Contains(stdout, "INTERRUPTED (intact)") || !strings.Contains(stdout, "chained, unsigned tail: the last 4 events (seq 2-5)") {
		t.Fatalf("verify: exit %d, want 3 and a 4-event unsigned tail\n%s%s", code, stdout, stderr)
	}
	var rep recorder.Report
	if err := json.Unmarshal([]byte(mustCLIJSONRaw(t, g, "sessions", "verify", s.Session)), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Status != recorder.VerifyInterrupted || rep.Unauthenticated != 4 || rep.LastSeq != 5 || rep.Interrupted == nil {
		t.Fatalf("verify --json: %+v", rep)
	}
	// The record as exported verifies offline the same way.
	file := t.TempDir() + "/s.json"
	if _, stderr, code := g.CLIRun("rita", "sessions", "export", s.Session, "-o", file); code != 0 {
		t.Fatalf("export: %s", stderr)
	}
	if stdout, _, code := g.CLIRun("rita", "sessions", "verify", "--file", file); code != 3 || !strings.Contains(stdout, "chained, unsigned tail") {
		t.Fatalf("verify --file: exit %d\n%s", code, stdout)
	}
}
