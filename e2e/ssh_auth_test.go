package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// clientLimit bounds every client run in these tests. It is not a timing
// assertion: a client waiting at a prompt nothing answers would wait
// forever, and this turns that hang into a failure.
const clientLimit = 45 * time.Second

// sshpassWrongPassword is sshpass's exit status when it sees a second
// password prompt (RETURN_INCORRECT_PASSWORD in its source).
const sshpassWrongPassword = 5

// runBounded runs a client program with no askpass and no agent, fed
// stdin, and fails t if it has not ended within clientLimit.
func runBounded(t *testing.T, stdin string, prog string, args ...string) sshRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	// Killing sshpass closes the terminal it made, which hangs up the ssh
	// it runs; WaitDelay bounds the wait for their output pipes.
	cmd.WaitDelay = 5 * time.Second
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSH_ASKPASS") && !strings.HasPrefix(kv, "SSH_AUTH_SOCK=") && !strings.HasPrefix(kv, "DISPLAY=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "LANG=C.UTF-8")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := sshRun{stdout: out.String(), stderr: errb.String()}
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not end within %v (waiting at a prompt?); stdout %q, stderr %q", prog, strings.Join(args, " "), clientLimit, r.stdout, r.stderr)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", prog, err)
	}
	name := filepath.Base(prog)
	if name == "sshpass" && len(args) > 2 {
		name += " " + args[2] // sshpass -p TOKEN PROG
	}
	t.Logf("%s: exit %d in %v", name, r.code, time.Since(start).Round(time.Millisecond))
	return r
}

// sshpassArgs are sshpass -p token, then prog with the gateway's pinned
// host key and no user config, then args.
func (g *gateway) sshpassArgs(token, prog string, args ...string) []string {
	return append(append([]string{"-p", token, prog}, g.sshOpts()...), args...)
}

// authFailures counts the auth.failed sessions of agent-1 on box.
func (g *gateway) authFailures(t *testing.T) []recorder.Summary {
	t.Helper()
	var out []recorder.Summary
	for _, s := range g.sessionsOf("box") {
		if s.Status == recorder.StatusAuthFailed {
			out = append(out, s)
		}
	}
	return out
}

// TestSSHPasswordClients: every common way of handing ssh, scp and sftp a
// password works with the grant token as the password: sshpass (which
// answers any prompt containing "assword") with ssh, scp and sftp, by
// keyboard-interactive (OpenSSH's first choice) and by password, and
// paramiko's password=. Each login runs under its grant's policy and is
// recorded. A wrong token ends at once with sshpass's wrong-password
// status and one auth.failed per connection.
func TestSSHPasswordClients(t *testing.T) {
	sshpass := testenv.RequireBinary(t, "sshpass", "sshpass")
	testenv.RequireBinary(t, "scp", "openssh-client")
	testenv.RequireBinary(t, "sftp", "openssh-client")
	py := testenv.RequirePythonModule(t, "paramiko", "python3-paramiko")
	g := startGateway(t, gatewayOptions{SSH: true})
	remote := t.TempDir()
	if err := os.WriteFile(filepath.Join(remote, "hosts.txt"), []byte("box file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	local := t.TempDir()
	if err := os.WriteFile(filepath.Join(local, "up.txt"), []byte("uploaded by scp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	iss := g.sshGrant("box", "INC-16: password clients", "--command", "echo *", "--files", "read-write")
	user := "agent-1+box@" + g.ssh.host
	// A key the gateway does not know, offered first as a default client
	// would offer ~/.ssh/id_ed25519, before it asks for a password.
	strayKey := filepath.Join(t.TempDir(), "id_ed25519")
	testenv.NewSSHKey(t, strayKey)

	// ssh checks the allowed command ran, and that it was recorded under
	// the grant.
	sshOK := func(t *testing.T, name string, extra ...string) {
		t.Helper()
		marker := "ok-" + strings.ReplaceAll(name, " ", "-")
		args := append(append(extra, "-p", g.ssh.port, user), "echo", marker)
		r := runBounded(t, "", sshpass, g.sshpassArgs(iss.Token, "ssh", args...)...)
		if r.code != 0 || r.stdout != marker+"\n" {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
		}
		d := g.lastSession("box")
		st, res := findStatement(t, d.Events, "EXEC", "echo "+marker)
		if st.Decision != "allow" || res == nil || res.ExitStatus == nil || *res.ExitStatus != 0 || d.Summary.Grant != iss.Grant.ID {
			t.Errorf("%s recorded as %+v, result %+v, grant %s", name, st, res, d.Summary.Grant)
		}
	}
	t.Run("sshpass ssh", func(t *testing.T) {
		sshOK(t, "default methods", "-o", "PubkeyAuthentication=no")
	})
	t.Run("sshpass ssh after an unknown key", func(t *testing.T) {
		sshOK(t, "unknown key", "-i", strayKey, "-o", "IdentitiesOnly=yes")
	})
	t.Run("sshpass ssh keyboard-interactive", func(t *testing.T) {
		sshOK(t, "keyboard-interactive", "-o", "PreferredAuthentications=keyboard-interactive")
	})
	t.Run("sshpass ssh password", func(t *testing.T) {
		sshOK(t, "password", "-o", "PreferredAuthentications=password")
	})
	t.Run("sshpass ssh refused command", func(t *testing.T) {
		args := []string{"-o", "PubkeyAuthentication=no", "-p", g.ssh.port, user, "rm", "-rf", remote}
		r := runBounded(t, "", sshpass, g.sshpassArgs(iss.Token, "ssh", args...)...)
		if r.code != 126 || !strings.Contains(r.stderr, "matches no --command rule") {
			t.Fatalf("refused command: exit %d, stderr %q", r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(remote, "hosts.txt")); err != nil {
			t.Fatalf("the refused command ran: %v", err)
		}
		d := g.lastSession("box")
		if st, _ := findStatement(t, d.Events, "EXEC", "rm -rf"); st.Decision != "deny" {
			t.Errorf("refused command recorded as %+v", st)
		}
	})
	t.Run("sshpass scp upload and download", func(t *testing.T) {
		args := []string{"-o", "PubkeyAuthentication=no", "-P", g.ssh.port, filepath.Join(local, "up.txt"), user + ":" + remote + "/up.txt"}
		if r := runBounded(t, "", sshpass, g.sshpassArgs(iss.Token, "scp", args...)...); r.code != 0 {
			t.Fatalf("scp upload: exit %d, stderr %q", r.code, r.stderr)
		}
		if b, err := os.ReadFile(filepath.Join(remote, "up.txt")); err != nil || string(b) != "uploaded by scp\n" {
			t.Fatalf("scp upload landed as %q, %v", b, err)
		}
		d := g.lastSession("box")
		if st, _ := findStatement(t, d.Events, "SFTP OPEN", "up.txt"); st.Decision != "allow" {
			t.Errorf("scp upload recorded as %+v", st)
		}
		args = []string{"-o", "PubkeyAuthentication=no", "-P", g.ssh.port, user + ":" + remote + "/hosts.txt", filepath.Join(local, "down.txt")}
		if r := runBounded(t, "", sshpass, g.sshpassArgs(iss.Token, "scp", args...)...); r.code != 0 {
			t.Fatalf("scp download: exit %d, stderr %q", r.code, r.stderr)
		}
		if b, err := os.ReadFile(filepath.Join(local, "down.txt")); err != nil || string(b) != "box file\n" {
			t.Fatalf("scp download got %q, %v", b, err)
		}
	})
	t.Run("sshpass sftp batch", func(t *testing.T) {
		batch := filepath.Join(local, "batch")
		cmds := "get " + remote + "/hosts.txt " + filepath.Join(local, "sftp-down.txt") + "\nput " + filepath.Join(local, "up.txt") + " " + remote + "/sftp-up.txt\nls " + remote + "\n"
		if err := os.WriteFile(batch, []byte(cmds), 0o644); err != nil {
			t.Fatal(err)
		}
		// sftp -b sets BatchMode, which stops any client from asking
		// for a password, from any server; an option given before -b
		// comes first and wins.
		args := []string{"-o", "PubkeyAuthentication=no", "-o", "BatchMode=no", "-b", batch, "-P", g.ssh.port, user}
		r := runBounded(t, "", sshpass, g.sshpassArgs(iss.Token, "sftp", args...)...)
		if r.code != 0 || !strings.Contains(r.stdout, "sftp-up.txt") {
			t.Fatalf("sftp -b: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if b, err := os.ReadFile(filepath.Join(local, "sftp-down.txt")); err != nil || string(b) != "box file\n" {
			t.Errorf("sftp get: %q, %v", b, err)
		}
		if b, err := os.ReadFile(filepath.Join(remote, "sftp-up.txt")); err != nil || string(b) != "uploaded by scp\n" {
			t.Errorf("sftp put: %q, %v", b, err)
		}
		d := g.lastSession("box")
		if st, _ := findStatement(t, d.Events, "SFTP OPEN", "sftp-up.txt"); st.Decision != "allow" {
			t.Errorf("sftp put recorded as %+v", st)
		}
		// Without BatchMode=no no password is asked for, as with any
		// server; the client gives up at once.
		args = []string{"-o", "PubkeyAuthentication=no", "-b", batch, "-P", g.ssh.port, user}
		if r := runBounded(t, "", sshpass, g.sshpassArgs(iss.Token, "sftp", args...)...); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("sftp -b in batch mode: exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("paramiko password", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), clientLimit)
		defer cancel()
		out, err := exec.CommandContext(ctx, py, "-c", paramikoPassword, g.ssh.host, g.ssh.port, g.ssh.knownHosts, iss.Token, remote).CombinedOutput()
		if ctx.Err() != nil || err != nil {
			t.Fatalf("paramiko: %v (%v)\n%s", err, ctx.Err(), out)
		}
		for _, want := range []string{"allowed: paramiko-pw-ok 0", "refused: 126", "matches no --command rule"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("paramiko printed no %q:\n%s", want, out)
			}
		}
		d := g.lastSession("box")
		if st, _ := findStatement(t, d.Events, "EXEC", "echo paramiko-pw-ok"); st.Decision != "allow" {
			t.Errorf("paramiko exec recorded as %+v", st)
		}
		if st, _ := findStatement(t, d.Events, "EXEC", "rm -rf"); st.Decision != "deny" {
			t.Errorf("paramiko refused exec recorded as %+v", st)
		}
	})

	// A wrong token: the client is told why, asks again, and sshpass
	// stops at the second prompt with its wrong-password status. Each
	// connection is one auth.failed.
	t.Run("wrong token", func(t *testing.T) {
		before := len(g.authFailures(t))
		for _, method := range []string{"keyboard-interactive,password", "password", "keyboard-interactive"} {
			args := []string{"-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=" + method, "-p", g.ssh.port, user, "echo", "in"}
			r := runBounded(t, "", sshpass, g.sshpassArgs("alk_notthetoken", "ssh", args...)...)
			if r.code != sshpassWrongPassword || strings.Contains(r.stdout, "in") || !strings.Contains(r.stderr, "not the token of any of your grants") {
				t.Errorf("wrong token by %s: exit %d, stdout %q, stderr %q", method, r.code, r.stdout, r.stderr)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), clientLimit)
		defer cancel()
		out, err := exec.CommandContext(ctx, py, "-c", paramikoPassword, g.ssh.host, g.ssh.port, g.ssh.knownHosts, "alk_notthetoken", remote).CombinedOutput()
		if ctx.Err() != nil || err == nil || !strings.Contains(string(out), "AuthenticationException") {
			t.Errorf("paramiko with a wrong token: %v (%v)\n%s", err, ctx.Err(), out)
		}
		var fails []recorder.Summary
		waitFor(10*time.Second, func() bool {
			fails = g.authFailures(t)
			return len(fails)-before >= 4
		})
		if len(fails)-before != 4 {
			t.Fatalf("%d auth.failed sessions recorded for 4 connections with a wrong token", len(fails)-before)
		}
		for _, s := range fails[:4] {
			var d control.SessionDetail
			g.CLIJSON(&d, "rita", "sessions", "show", s.Session)
			if len(d.Events) != 1 || d.Events[0].Auth == nil || !strings.HasPrefix(d.Events[0].Auth.Reason, "bad-token:") {
				t.Errorf("wrong-token session %s recorded as %+v", s.Session, d.Events)
			}
		}
	})

	// The right token for a session that cannot start (the target shows
	// another host key): no password could help now, so the client is
	// told why and disconnected, not asked again (which sshpass would
	// report as a wrong password).
	t.Run("session refused at start", func(t *testing.T) {
		bad := g.sshGrant("box-badkey", "INC-16: a box with a changed key", "--command", "echo *")
		args := []string{"-o", "PubkeyAuthentication=no", "-p", g.ssh.port, "agent-1+box-badkey@" + g.ssh.host, "echo", "in"}
		r := runBounded(t, "", sshpass, g.sshpassArgs(bad.Token, "ssh", args...)...)
		if r.code != 255 || strings.Contains(r.stdout, "in") || !strings.Contains(r.stderr, "host key mismatch for box-badkey") || strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("login to a box with the wrong host key: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		d := g.lastSession("box-badkey")
		if st, _ := findStatement(t, d.Events, "UPSTREAM", "connect "); st.Decision != "deny" || st.Rule != "upstream-host-key" {
			t.Errorf("mismatch recorded as %+v", st)
		}
	})

	// A user name that names no ssh resource: no password can help
	// either, so the client is told why and disconnected before any
	// prompt.
	t.Run("user name without a resource", func(t *testing.T) {
		for _, u := range []string{"agent-1", "agent-1+demo-pg"} {
			args := []string{"-o", "PubkeyAuthentication=no", "-p", g.ssh.port, u + "@" + g.ssh.host, "echo", "in"}
			r := runBounded(t, "", sshpass, g.sshpassArgs(iss.Token, "ssh", args...)...)
			if r.code != 255 || !strings.Contains(r.stderr, "authentication failed: ") || strings.Contains(r.stderr, "Permission denied") {
				t.Errorf("user %s: exit %d, stdout %q, stderr %q", u, r.code, r.stdout, r.stderr)
			}
		}
	})
}

const paramikoPassword = `
import sys, paramiko
host, port, known, token, remote = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
c = paramiko.SSHClient()
c.load_host_keys(known)
c.set_missing_host_key_policy(paramiko.RejectPolicy())
c.connect(host, port=port, username="agent-1+box", password=token, allow_agent=False, look_for_keys=False, timeout=10, auth_timeout=20, banner_timeout=20)
_, out, err = c.exec_command("echo paramiko-pw-ok")
print("allowed:", out.read().decode().strip(), out.channel.recv_exit_status())
_, out, err = c.exec_command("rm -rf " + remote)
print("refused:", out.channel.recv_exit_status(), err.read().decode().strip())
c.close()
`
