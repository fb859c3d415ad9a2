package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
)

// sshDirect runs OpenSSH ssh straight to the box's sshd (its client key,
// its host key pinned), with extra options, then the command args.
func (g *gateway) sshDirect(t *testing.T, stdin string, extra []string, args ...string) sshRun {
	t.Helper()
	d := g.ssh.sshd
	a := []string{"-F", "/dev/null", "-o", "UserKnownHostsFile=" + d.KnownHostsFile, "-o", "StrictHostKeyChecking=yes",
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
		"-i", d.ClientKeyFile, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"}
	a = append(append(a, extra...), "-p", strconv.Itoa(d.Port), d.User+"@"+d.Host)
	return runBounded(t, stdin, "ssh", append(a, args...)...)
}

// sshThrough runs the same through the gateway, as agent-1+box by key.
func (g *gateway) sshThrough(t *testing.T, stdin string, extra []string, args ...string) sshRun {
	t.Helper()
	a := append(append(g.sshOpts(), g.keyAuth()...), extra...)
	a = append(a, "-p", g.ssh.port, "agent-1+box@"+g.ssh.host)
	return runBounded(t, stdin, "ssh", append(a, args...)...)
}

// sessionEnd is a session's end event.
func sessionEnd(t *testing.T, d control.SessionDetail) *recorder.End {
	t.Helper()
	for _, e := range d.Events {
		if e.Type == recorder.TypeSessionEnd && e.End != nil {
			return e.End
		}
	}
	t.Fatalf("session %s has no end event", d.Summary.Session)
	return nil
}

// exitOf describes an exit status or signal, as the tests compare them.
func exitOf(status *int, signal string) string {
	switch {
	case status != nil && signal != "":
		return "exit " + strconv.Itoa(*status) + " and signal " + signal
	case status != nil:
		return "exit " + strconv.Itoa(*status)
	case signal != "":
		return "signal " + signal
	}
	return "none"
}

// TestSSHExitStatus: a command's exit status, or the signal that killed
// it, reaches the agent's client as it would from the target directly
// (OpenSSH's ssh against the box's sshd is the reference), and is
// recorded in the statement's result and in the session's end: for an
// exec, a shell with a terminal, the sftp subsystem, a refused command,
// and a connection with several channels (the end carries the last).
func TestSSHExitStatus(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})
	g.sshGrant("box", "INC-16: exit statuses", "--command", "exit *", "--command", "sh -c *",
		"--command", "raw:kill -TERM $$", "--shell", "--files", "read")

	// The remote shell's own exit, and commands killed by a signal, the
	// login shell itself (kill $$) and a child shell.
	execs := []struct {
		cmd, kind, text string
		status          *int
		signal          string
	}{
		{cmd: "exit 3", text: "exit 3", status: ptr(3)},
		{cmd: "kill -TERM $$", text: "kill -TERM", signal: "TERM"},
		{cmd: "sh -c 'kill -KILL $$'", text: "kill -KILL", signal: "KILL"},
	}
	for _, c := range execs {
		direct := g.sshDirect(t, "", nil, c.cmd)
		through := g.sshThrough(t, "", nil, c.cmd)
		if through.code != direct.code || through.stdout != direct.stdout || through.stderr != direct.stderr {
			t.Errorf("%s: through airlock exit %d, stdout %q, stderr %q; directly exit %d, stdout %q, stderr %q",
				c.cmd, through.code, through.stdout, through.stderr, direct.code, direct.stdout, direct.stderr)
		}
		t.Logf("%s directly: exit %d, stderr %q", c.cmd, direct.code, direct.stderr)
		if c.status != nil && through.code != *c.status {
			t.Errorf("%s: exit %d, want %d", c.cmd, through.code, *c.status)
		}
		d := g.lastSession("box")
		_, res := findStatement(t, d.Events, "EXEC", c.text)
		want := exitOf(c.status, c.signal)
		if res == nil || exitOf(res.ExitStatus, res.ExitSignal) != want {
			t.Errorf("%s: result %+v, want %s", c.cmd, res, want)
		}
		if end := sessionEnd(t, d); exitOf(end.ExitStatus, end.ExitSignal) != want {
			t.Errorf("%s: session end %+v, want %s", c.cmd, end, want)
		}
	}

	// A shell in a terminal: it exits with a status, or is killed.
	shells := []struct {
		input, text string
		status      *int
		signal      string
	}{
		{input: "exit 4\n", status: ptr(4)},
		{input: "kill -KILL $$\n", signal: "KILL"},
	}
	for _, c := range shells {
		direct := g.sshDirect(t, c.input, []string{"-tt"})
		through := g.sshThrough(t, c.input, []string{"-tt"})
		if through.code != direct.code {
			t.Errorf("shell fed %q: through airlock exit %d (stderr %q); directly exit %d (stderr %q)", c.input, through.code, through.stderr, direct.code, direct.stderr)
		}
		d := g.lastSession("box")
		_, res := findStatement(t, d.Events, "SHELL", "")
		want := exitOf(c.status, c.signal)
		if res == nil || exitOf(res.ExitStatus, res.ExitSignal) != want {
			t.Errorf("shell fed %q: result %+v, want %s", c.input, res, want)
		}
		if end := sessionEnd(t, d); exitOf(end.ExitStatus, end.ExitSignal) != want {
			t.Errorf("shell fed %q: session end %+v, want %s", c.input, end, want)
		}
	}

	// The sftp subsystem ends with sftp-server's status.
	batch := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(batch, []byte("ls /\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := append(append(g.sshOpts(), g.keyAuth()...), "-b", batch, "-P", g.ssh.port, "agent-1+box@"+g.ssh.host)
	if r := runBounded(t, "", "sftp", a...); r.code != 0 {
		t.Fatalf("sftp: exit %d, stderr %q", r.code, r.stderr)
	}
	d := g.lastSession("box")
	if _, res := findStatement(t, d.Events, "SUBSYSTEM", "sftp"); res == nil || exitOf(res.ExitStatus, res.ExitSignal) != "exit 0" {
		t.Errorf("sftp subsystem result %+v", res)
	}
	if end := sessionEnd(t, d); exitOf(end.ExitStatus, end.ExitSignal) != "exit 0" {
		t.Errorf("sftp session end %+v", end)
	}

	// A refused command: the client gets 126, and so does the end.
	if r := g.sshThrough(t, "", nil, "reboot"); r.code != 126 {
		t.Errorf("refused command: exit %d, stderr %q", r.code, r.stderr)
	}
	if end := sessionEnd(t, g.lastSession("box")); exitOf(end.ExitStatus, end.ExitSignal) != "exit 126" {
		t.Errorf("refused command: session end %+v", end)
	}

	// Several channels on one connection: each result has its own, the
	// end the last one's.
	key, err := os.ReadFile(g.ssh.agentKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.dialSSH("agent-1+box", ssh.PublicKeys(signer))
	if err != nil {
		t.Fatal(err)
	}
	var ee *ssh.ExitError
	for _, cmd := range []struct {
		cmd    string
		status int // x/crypto reports a signal as 128 + its number
		signal string
	}{{"exit 5", 5, ""}, {"sh -c 'kill -TERM $$'", 128 + 15, "TERM"}} {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		err = sess.Run(cmd.cmd)
		if !errors.As(err, &ee) || ee.ExitStatus() != cmd.status || ee.Signal() != cmd.signal {
			t.Errorf("x/crypto %s: %v", cmd.cmd, err)
		}
	}
	c.Close()
	d = g.lastSession("box")
	if _, res := findStatement(t, d.Events, "EXEC", "exit 5"); res == nil || exitOf(res.ExitStatus, res.ExitSignal) != "exit 5" {
		t.Errorf("first channel's result %+v", res)
	}
	if end := sessionEnd(t, d); exitOf(end.ExitStatus, end.ExitSignal) != "signal TERM" {
		t.Errorf("session of two channels: end %+v, want the last one's signal TERM", end)
	}
	// airlock sessions show prints it.
	if out := g.MustCLI("rita", "sessions", "show", d.Summary.Session); !strings.Contains(out, "denied; last command: signal TERM)") {
		t.Errorf("sessions show does not show how the session's last command ended:\n%s", out)
	}
}

func ptr[T any](v T) *T { return &v }
