package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// A revoked or expired grant stops the statement it is running, not only
// the session (issue 22): each subtest starts a long statement through the
// gateway, waits until the real server runs it, ends the grant, and
// checks on the server itself (as its superuser) that the work is gone
// within 3 s, that a write it made was rolled back, and that the session's
// events say what ran, how it was stopped and how it ended, and verify.

// stopLimit is how soon after the grant ends the work must be gone.
const stopLimit = 3 * time.Second

// bgClient is a client program running in the background.
type bgClient struct {
	out  *lockedBuffer
	done chan struct{}
	err  error
}

// startBG starts prog with env added; t.Cleanup kills it.
func startBG(t *testing.T, env []string, prog string, args ...string) *bgClient {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = append(os.Environ(), env...)
	c := &bgClient{out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-c.done })
	return c
}

// endedWithin waits until the client exits, at most d after since.
func (c *bgClient) endedWithin(t *testing.T, since time.Time, d time.Duration) {
	t.Helper()
	select {
	case <-c.done:
		if took := time.Since(since); took > d {
			t.Errorf("the client ended %v after the grant did, want within %v", took.Round(time.Millisecond), d)
		}
	case <-time.After(time.Until(since.Add(d + 5*time.Second))):
		t.Fatalf("the client still runs %v after the grant ended; it printed:\n%s", d+5*time.Second, c.out.String())
	}
}

// running waits until the client's statement runs on the server.
func (c *bgClient) running(t *testing.T, cond func() bool) {
	t.Helper()
	if !waitFor(10*time.Second, cond) {
		t.Fatalf("the statement does not run on the server; the client printed:\n%s", c.out.String())
	}
}

// mustWait waits for cond (waitFor), failing the test when it does not
// hold within d.
func mustWait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitFor(d, cond) {
		t.Fatalf("%s: not within %v", what, d)
	}
}

// endGrant revokes the grant, or, with expires set, waits for it to
// expire; it returns when the grant ended.
func endGrant(t *testing.T, g *gateway, iss control.Issued, expire bool) time.Time {
	t.Helper()
	if !expire {
		g.MustCLI("alice", "grants", "revoke", iss.Grant.ID)
		return time.Now()
	}
	at := iss.Grant.ExpiresAt
	if time.Now().After(at) {
		t.Fatalf("the grant expired at %s before its statement ran", at)
	}
	time.Sleep(time.Until(at))
	return at
}

// checkStopped checks the recorded stop of the grant's only session:
// the statement holding text ran, was stopped by methods, and ended as
// the server said (its error holding serverSaid); airlock verify passes.
func checkStopped(t *testing.T, g *gateway, grant, text string, methods []string, serverSaid string) {
	t.Helper()
	var evs []recorder.Event
	mustWait(t, 10*time.Second, "the session's end recorded", func() bool {
		ss := g.sessionEvents(grant)
		if len(ss) == 0 {
			return false
		}
		evs = ss[len(ss)-1]
		return evs[len(evs)-1].Type == recorder.TypeSessionEnd
	})
	end := evs[len(evs)-1].End
	stop := end.Stop
	if stop == nil {
		t.Fatalf("session.end has no stop: %+v\n%s", end, g.MustCLI("rita", "sessions", "show", "--json", evs[0].Session))
	}
	if stop.Outcome != recorder.StopStopped || !slices.Equal(stop.Methods, methods) || len(stop.Running) != 1 || !strings.Contains(stop.Running[0].Text, text) {
		t.Errorf("stop %+v, want %q stopped by %v", stop, text, methods)
	}
	if !strings.Contains(end.Reason, "grant") {
		t.Errorf("end reason %q does not say the grant ended", end.Reason)
	}
	sts, res := statements(evs)
	var found bool
	for _, st := range sts {
		if st.ID != stop.Running[0].ID {
			continue
		}
		found = true
		r := res[st.ID]
		if r == nil {
			t.Fatalf("statement %d (%s) has no outcome", st.ID, st.Text)
		}
		if !slices.Equal(r.Stopped, methods) || !strings.Contains(r.Error+" "+r.SQLState+" "+r.ExitSignal, serverSaid) {
			t.Errorf("outcome %+v, want stopped by %v and the server saying %q", r, methods, serverSaid)
		}
	}
	if !found {
		t.Errorf("no statement %d in the session", stop.Running[0].ID)
	}
	if stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", evs[0].Session); code != 0 {
		t.Errorf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
	show := g.MustCLI("rita", "sessions", "show", evs[0].Session)
	if !strings.Contains(show, "stopped by "+strings.Join(methods, ", ")) {
		t.Errorf("sessions show does not tell the stop:\n%s", show)
	}
}

func TestRevokeStopsRunningWork(t *testing.T) {
	// A shorter grace than the default 2s, so that a statement which
	// ignores the cancel is terminated well within the 3 s.
	g := startGateway(t, gatewayOptions{MySQL: true, SSH: true, Config: "grants:\n  stop_grace: 1s\n"})
	g.pg.Exec(t, "create table stopme (id int primary key, v int); insert into stopme values (1, 10);")
	g.my.Exec(t, "create table stopme (id int primary key, v int) engine=InnoDB; insert into stopme values (1, 10);")

	pgRunning := func(prefix string) int64 {
		return g.pg.QueryInt(t, fmt.Sprintf("select count(*) from pg_stat_activity where query like '%s%%' and pid <> pg_backend_pid()", prefix))
	}
	// pgSleeping counts the backends of prefix inside their pg_sleep: for
	// the stubborn block, past its UPDATE and inside the loop that
	// ignores a cancel (revoked before that, a cancel stops it).
	pgSleeping := func(prefix string) int64 {
		return g.pg.QueryInt(t, fmt.Sprintf("select count(*) from pg_stat_activity where query like '%s%%' and wait_event = 'PgSleep' and pid <> pg_backend_pid()", prefix))
	}
	psqlBG := func(token, sql string) *bgClient {
		host, port, _ := strings.Cut(g.PostgresAddr, ":")
		return startBG(t, []string{"PGPASSWORD=" + token}, "psql",
			fmt.Sprintf("host=%s port=%s user=agent-1 dbname=demo-pg sslmode=require connect_timeout=10", host, port), "-X", "-c", sql)
	}
	// stubborn updates the row, then sleeps swallowing every cancel: only
	// terminating its backend stops it.
	const stubborn = "do $$ begin update stopme set v = v + 1 where id = 1; loop begin perform pg_sleep(60); exception when query_canceled then null; end; end loop; end $$"
	for _, tc := range []struct {
		name, sql, prefix string
		expire            bool
		// methods and code are how it is stopped and what the server
		// says (default: a cancel, 57014).
		methods []string
		code    string
	}{
		{name: "postgres sleep revoked", sql: "select pg_sleep(60)", prefix: "select pg_sleep(60)"},
		{name: "postgres update revoked", sql: "update stopme set v = v + 1 where id = 1 and pg_sleep(60) is not null", prefix: "update stopme"},
		{name: "postgres update expired", sql: "update stopme set v = v + 1 where id = 1 and pg_sleep(60) is not null", prefix: "update stopme", expire: true},
		{name: "postgres cancel ignored", sql: stubborn, prefix: "do $$ begin update stopme", methods: []string{"cancel", "terminate"}, code: "57P01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.methods == nil {
				tc.methods, tc.code = []string{"cancel"}, "57014"
			}
			flags := []string{"--access", "admin"}
			if tc.expire {
				flags = append(flags, "--ttl", "6s")
			}
			iss := g.grant("demo-pg", "INC-22: "+tc.name, flags...)
			c := psqlBG(iss.Token, tc.sql)
			c.running(t, func() bool { return pgSleeping(tc.prefix) > 0 })
			ended := endGrant(t, g, iss, tc.expire)
			c.endedWithin(t, ended, stopLimit)
			mustWait(t, time.Until(ended.Add(stopLimit)), "no backend runs the statement", func() bool { return pgRunning(tc.prefix) == 0 })
			if v := g.pg.QueryInt(t, "select v from stopme where id = 1"); v != 10 {
				t.Errorf("the row holds %d, want 10: the update was not rolled back", v)
			}
			if out := c.out.String(); !strings.Contains(out, "the statement was stopped: grant "+iss.Grant.ID) {
				t.Errorf("psql was not told: %s", out)
			}
			checkStopped(t, g, iss.Grant.ID, tc.prefix, tc.methods, tc.code)
		})
	}

	myRunning := func(prefix string) int64 {
		return g.my.QueryInt(t, fmt.Sprintf("select count(*) from information_schema.processlist where info like '%s%%' and id <> connection_id()", prefix))
	}
	for _, tc := range []struct {
		name, sql, prefix string
		expire            bool
	}{
		{name: "mysql sleep revoked", sql: "SELECT SLEEP(60)", prefix: "SELECT SLEEP(60)"},
		{name: "mysql update revoked", sql: "update stopme set v = v + 1 where id = 1 and sleep(60) = 0", prefix: "update stopme"},
		{name: "mysql update expired", sql: "update stopme set v = v + 1 where id = 1 and sleep(60) = 0", prefix: "update stopme", expire: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var flags []string
			if tc.expire {
				flags = append(flags, "--ttl", "6s")
			}
			iss := g.grantMySQL("agent-1", "INC-22: "+tc.name, "write", flags...)
			bin := testenv.RequireBinary(t, "mariadb", "mariadb-client")
			host, port, _ := strings.Cut(g.MySQLAddr, ":")
			c := startBG(t, nil, bin, "--no-defaults", "-h", host, "-P", port, "-u", "agent-1", "--password="+iss.Token,
				"--ssl", "--connect-timeout=10", "shop-mysql", "-e", tc.sql)
			c.running(t, func() bool { return myRunning(tc.prefix) > 0 })
			ended := endGrant(t, g, iss, tc.expire)
			c.endedWithin(t, ended, stopLimit)
			mustWait(t, time.Until(ended.Add(stopLimit)), "no thread runs the statement", func() bool { return myRunning(tc.prefix) == 0 })
			if v := g.my.QueryInt(t, "select v from stopme where id = 1"); v != 10 {
				t.Errorf("the row holds %d, want 10: the update was not rolled back", v)
			}
			checkStopped(t, g, iss.Grant.ID, tc.prefix, []string{"kill-query"}, "1317")
		})
	}

	// The remote command writes its pid, as the target's process, so the
	// test can see it end.
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "sleep.pid")
	script := filepath.Join(dir, "sleep60")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho $$ > "+pidFile+"\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		expire bool
	}{{name: "ssh sleep revoked"}, {name: "ssh sleep expired", expire: true}} {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.Remove(pidFile)
			flags := []string{"--command", script}
			if tc.expire {
				flags = append(flags, "--ttl", "6s")
			}
			iss := g.sshGrant("box", "INC-22: "+tc.name, flags...)
			args := append(append(g.sshOpts(), g.keyAuth()...), "-p", g.ssh.port, "agent-1+box@"+g.ssh.host, script)
			c := startBG(t, nil, "ssh", args...)
			var pid int
			mustWait(t, 10*time.Second, "the remote command runs", func() bool {
				b, err := os.ReadFile(pidFile)
				pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
				return err == nil && pid > 0 && processRunning(pid)
			})
			ended := endGrant(t, g, iss, tc.expire)
			c.endedWithin(t, ended, stopLimit)
			if !waitFor(time.Until(ended.Add(stopLimit)), func() bool { return !processRunning(pid) }) {
				t.Fatalf("the remote sleep (pid %d) still runs %v after the grant ended; sshd's log:\n%s", pid, stopLimit, g.ssh.sshd.Log())
			}
			if out := c.out.String(); !strings.Contains(out, "grant "+iss.Grant.ID) {
				t.Errorf("the agent was not told: %s", out)
			}
			// sshd refuses signal requests on a root login (tests run
			// as root in CI): then airlock kills the command itself.
			if os.Geteuid() == 0 {
				checkStopped(t, g, iss.Grant.ID, script, []string{"signal", "kill"}, "KILL")
			} else {
				checkStopped(t, g, iss.Grant.ID, script, []string{"signal"}, "TERM")
			}
		})
	}
}

// processRunning reports whether pid is a live process (not a zombie).
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}
