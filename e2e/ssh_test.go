package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// sshSide is the SSH half of a gateway started with gatewayOptions.SSH: a
// real OpenSSH sshd as the resource box, the SSH listener, and agent-1's
// registered key.
type sshSide struct {
	sshd *testenv.SSHD
	// addr is the gateway's SSH listener, host and port.
	addr, host, port string
	// agentKey is agent-1's private key file (registered in the config).
	agentKey string
	// knownHosts pins the gateway's host key for OpenSSH clients; written
	// once the gateway is ready (testenv.Gateway.KnownHosts).
	knownHosts string
	// askpass prints $AIRLOCK_TEST_TOKEN, so OpenSSH can log in with a
	// token as its password.
	askpass string
}

// newSSHSide starts the sshd and makes agent-1's key (returned as its
// authorized_keys line); it adds the ssh resources to res: box (the sshd,
// its host key pinned) and box-badkey (the same sshd with another host
// key pinned).
func newSSHSide(t testing.TB, res []testenv.GatewayResource) (*sshSide, string, []testenv.GatewayResource) {
	t.Helper()
	testenv.RequireBinary(t, "ssh", "openssh-client")
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{})
	dir := t.TempDir()
	s := &sshSide{sshd: sshd}
	s.agentKey = filepath.Join(dir, "agent-1_ed25519")
	pub := strings.TrimSpace(testenv.NewSSHKey(t, s.agentKey))
	wrong := strings.TrimSpace(testenv.NewSSHKey(t, filepath.Join(dir, "not_the_host_key")))
	s.askpass = filepath.Join(dir, "askpass.sh")
	if err := os.WriteFile(s.askpass, []byte("#!/bin/sh\nprintf '%s\\n' \"$AIRLOCK_TEST_TOKEN\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ name, hostKey string }{{"box", sshd.HostKey}, {"box-badkey", wrong}} {
		res = append(res, testenv.GatewayResource{Name: r.name, Protocol: "ssh", Address: sshd.Addr(), User: sshd.User,
			KeyFile: sshd.ClientKeyFile, HostKey: r.hostKey})
	}
	return s, pub, res
}

// listening takes the SSH listener's address and the known_hosts file
// pinning its host key from the started gateway.
func (s *sshSide) listening(g *testenv.Gateway) {
	s.addr, s.knownHosts = g.SSHAddr, g.KnownHosts
	s.host, s.port, _ = net.SplitHostPort(g.SSHAddr)
}

// sshRun is one run of an OpenSSH client program.
type sshRun struct {
	stdout, stderr string
	code           int
}

// sshOpts are the options every OpenSSH client run here shares: no user
// config, the gateway's host key pinned.
func (g *gateway) sshOpts() []string {
	return []string{"-F", "/dev/null", "-o", "UserKnownHostsFile=" + g.ssh.knownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "ConnectTimeout=10", "-o", "GlobalKnownHostsFile=/dev/null"}
}

// keyAuth logs in with agent-1's registered key.
func (g *gateway) keyAuth() []string {
	return []string{"-i", g.ssh.agentKey, "-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=publickey", "-o", "BatchMode=yes"}
}

// tokenAuth logs in with a grant token as the password (through askpass).
func tokenAuth(method string) []string {
	return []string{"-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=" + method, "-o", "NumberOfPasswordPrompts=1"}
}

// runClient runs an OpenSSH client program (ssh, scp, sftp) with token
// (for askpass; "" for none) and stdin.
func (g *gateway) runClient(prog, token, stdin string, args ...string) sshRun {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(os.Environ(), "SSH_ASKPASS="+g.ssh.askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0", "AIRLOCK_TEST_TOKEN="+token, "LANG=C.UTF-8")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := sshRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		g.t.Fatalf("%s %v: %v", prog, args, err)
	}
	return r
}

// ssh runs OpenSSH ssh as agent-1+resource with auth, then args.
func (g *gateway) sshAs(resource string, auth []string, token string, args ...string) sshRun {
	g.t.Helper()
	a := append(g.sshOpts(), auth...)
	a = append(a, "-p", g.ssh.port, "agent-1+"+resource+"@"+g.ssh.host)
	return g.runClient("ssh", token, "", append(a, args...)...)
}

// sshGrant makes an active grant for agent-1 on resource with flags.
func (g *gateway) sshGrant(resource, task string, flags ...string) control.Issued {
	g.t.Helper()
	var iss control.Issued
	g.CLIJSON(&iss, "alice", append([]string{"grants", "create", "--agent", "agent-1", "--resource", resource, "--task", task}, flags...)...)
	return iss
}

// sessionsOf returns the sessions of agent-1 on resource, newest first.
func (g *gateway) sessionsOf(resource string) []recorder.Summary {
	g.t.Helper()
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1", "--resource", resource)
	return list
}

// lastSession returns the events of the newest ended session of agent-1
// on box, waiting a little for its end event.
func (g *gateway) lastSession(resource string) control.SessionDetail {
	g.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list := g.sessionsOf(resource)
		if len(list) > 0 && list[0].Status != recorder.StatusOpen {
			var d control.SessionDetail
			g.CLIJSON(&d, "rita", "sessions", "show", list[0].Session)
			return d
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("no ended session of agent-1 on %s: %+v", resource, list)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// statements returns the statement events of a session with their
// results (nil when none).
func statements(evs []recorder.Event) ([]*recorder.Statement, map[uint64]*recorder.Result) {
	var st []*recorder.Statement
	res := map[uint64]*recorder.Result{}
	for _, e := range evs {
		if e.Statement != nil {
			st = append(st, e.Statement)
		}
		for _, r := range e.Outcomes() {
			res[r.ID] = r
		}
	}
	return st, res
}

// findStatement returns the first statement whose kind and text contain
// kind and text.
func findStatement(t testing.TB, evs []recorder.Event, kind, text string) (*recorder.Statement, *recorder.Result) {
	t.Helper()
	st, res := statements(evs)
	for _, s := range st {
		if s.Class.Kind == kind && strings.Contains(s.Text, text) {
			return s, res[s.ID]
		}
	}
	var have []string
	for _, s := range st {
		have = append(have, s.Class.Kind+" "+s.Decision+" "+s.Text)
	}
	t.Fatalf("no %s statement with %q; the session has:\n%s", kind, text, strings.Join(have, "\n"))
	return nil, nil
}

// dataOf concatenates a statement's data events of one stream.
func dataOf(evs []recorder.Event, id uint64, stream string) string {
	var b strings.Builder
	for _, e := range evs {
		if e.Data != nil && e.Data.ID == id && e.Data.Stream == stream {
			b.Write(e.Data.Bytes())
		}
	}
	return b.String()
}

// TestSSHExec: allowed commands run with their output and exit status
// relayed; refused ones (no rule, shell syntax) never reach the target and
// say why; each is recorded with its decision, and the allowed ones with
// exit status, byte counts and output.
func TestSSHExec(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})
	if log := g.Log(); !strings.Contains(log, "SSH host key") || !strings.Contains(log, "fingerprint=SHA256:") {
		t.Errorf("the gateway did not log its SSH host key fingerprint:\n%s", log)
	}
	marker := filepath.Join(t.TempDir(), "marker")
	iss := g.sshGrant("box", "INC-11: check the box", "--command", "echo *", "--command", "ls *", "--command", "raw:echo a | tr a b", "--command", "uname -s")

	// An allowed command, by the registered key.
	r := g.sshAs("box", g.keyAuth(), "", "echo", "hello-from-box")
	if r.code != 0 || r.stdout != "hello-from-box\n" {
		t.Fatalf("allowed exec: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	d := g.lastSession("box")
	st, res := findStatement(t, d.Events, "EXEC", "echo hello-from-box")
	if st.Decision != "allow" || st.Rule != "command" || !strings.Contains(st.Class.Why, `"echo *"`) {
		t.Errorf("allowed exec recorded as %+v", st)
	}
	if res == nil || !res.Executed || res.ExitStatus == nil || *res.ExitStatus != 0 || res.BytesOut != 15 || res.Tag != "exit 0" {
		t.Errorf("allowed exec result %+v", res)
	}
	if got := dataOf(d.Events, st.ID, "stdout"); got != "hello-from-box\n" {
		t.Errorf("recorded stdout %q", got)
	}
	if d.Summary.Grant != iss.Grant.ID || d.Summary.Protocol != "ssh" || d.Summary.Approver != "alice" {
		t.Errorf("session summary %+v", d.Summary)
	}

	// The exit status comes back.
	r = g.sshAs("box", g.keyAuth(), "", "ls", "/nonexistent-airlock")
	if r.code != 2 || !strings.Contains(r.stderr, "No such file") {
		t.Errorf("ls of a missing file: exit %d, stderr %q", r.code, r.stderr)
	}

	// Refused: no rule. The agent reads why; the target never sees it.
	r = g.sshAs("box", g.keyAuth(), "", "touch", marker)
	if r.code != 126 || !strings.Contains(r.stderr, "matches no --command rule") || !strings.Contains(r.stderr, iss.Grant.ID) || !strings.Contains(r.stderr, "--command") {
		t.Errorf("refused exec: exit %d, stderr %q", r.code, r.stderr)
	}
	d = g.lastSession("box")
	st, res = findStatement(t, d.Events, "EXEC", "touch")
	if st.Decision != "deny" || st.Rule != "command" || !strings.Contains(st.Reason, "matches no --command rule") || res != nil {
		t.Errorf("refused exec recorded as %+v, result %+v", st, res)
	}

	// Refused: shell syntax hides a second command.
	r = g.sshAs("box", g.keyAuth(), "", "echo hi; touch "+marker)
	if r.code != 126 || !strings.Contains(r.stderr, "uses shell syntax") || !strings.Contains(r.stderr, "`;`") || strings.Contains(r.stdout, "hi") {
		t.Errorf("command with ;: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, cmd := range []string{"echo $(touch " + marker + ")", "echo `touch " + marker + "`", "echo x > " + marker} {
		if r := g.sshAs("box", g.keyAuth(), "", cmd); r.code != 126 || !strings.Contains(r.stderr, "shell syntax") {
			t.Errorf("%s: exit %d, stderr %q", cmd, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("a refused command ran on the target: %s exists", marker)
	}
	d = g.lastSession("box")
	st, _ = findStatement(t, d.Events, "EXEC", "echo x >")
	if st.Decision != "deny" || st.Rule != "shell-syntax" {
		t.Errorf("refused redirection recorded as %+v", st)
	}

	// A raw: rule allows exactly its pipeline.
	if r := g.sshAs("box", g.keyAuth(), "", "echo a | tr a b"); r.code != 0 || r.stdout != "b\n" {
		t.Errorf("raw pipeline: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// The grant token as the password (keyboard-interactive and
	// password), with the locale passed on and other variables refused.
	for _, method := range []string{"keyboard-interactive", "password"} {
		a := append(tokenAuth(method), "-o", "SendEnv=LANG", "-o", "SetEnv=EVIL=1")
		r = g.sshAs("box", a, iss.Token, "uname", "-s")
		if r.code != 0 || r.stdout != "Linux\n" {
			t.Fatalf("token login by %s: exit %d, stdout %q, stderr %q", method, r.code, r.stdout, r.stderr)
		}
	}
	d = g.lastSession("box")
	if st, _ := findStatement(t, d.Events, "ENV", "LANG="); st.Decision != "allow" {
		t.Errorf("LANG recorded as %+v", st)
	}
	if st, _ := findStatement(t, d.Events, "ENV", "EVIL="); st.Decision != "deny" || !strings.Contains(st.Reason, "only LANG, LC_* and TERM") {
		t.Errorf("EVIL recorded as %+v", st)
	}

	// X11 is refused, and the command still runs. (Agent forwarding is
	// refused the same way; the x/crypto client test asks for it.)
	r = g.sshAs("box", append(g.keyAuth(), "-o", "ForwardX11=yes", "-o", "ForwardX11Trusted=yes"), "", "echo", "fwd")
	if r.code != 0 || r.stdout != "fwd\n" {
		t.Errorf("exec with X11 forwarding: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	d = g.lastSession("box")
	if st, _ := findStatement(t, d.Events, "X11", "x11-req"); st.Decision != "deny" {
		t.Errorf("X11 forwarding recorded as %+v", st)
	}
}

// startClient starts an OpenSSH client program in the background; its
// stderr is collected in the returned buffer. t.Cleanup kills it.
func (g *gateway) startClient(prog, token string, args ...string) (*exec.Cmd, *lockedBuffer) {
	g.t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = append(os.Environ(), "SSH_ASKPASS="+g.ssh.askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0", "AIRLOCK_TEST_TOKEN="+token)
	errb := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = errb, errb
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	g.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	errb.done = done
	return cmd, errb
}

// lockedBuffer collects a background program's output.
type lockedBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	done chan struct{}
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond()
}

// TestSSHShellReplay: an interactive shell through a real terminal (tmux
// running ssh -tt), then its replay from the record, with its timing, and
// its asciicast export. A grant without --shell refuses the terminal and
// the shell, and says why.
func TestSSHShellReplay(t *testing.T) {
	testenv.RequireBinary(t, "tmux", "tmux")
	g := startGateway(t, gatewayOptions{SSH: true})
	g.sshGrant("box", "INC-12: look around", "--shell")

	sock := filepath.Join(t.TempDir(), "tmux.sock")
	tmux := func(args ...string) (string, error) {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { _, _ = tmux("kill-server") })
	line := []string{"exec", "ssh"}
	for _, a := range append(append(g.sshOpts(), g.keyAuth()...), "-tt", "-p", g.ssh.port, "agent-1+box@"+g.ssh.host) {
		line = append(line, "'"+a+"'")
	}
	// A local shell runs ssh, so the pane stays (dead) with ssh's last
	// words if it fails.
	if out, err := tmux("new-session", "-d", "-s", "agent", "-x", "100", "-y", "30", "sh"); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	if out, err := tmux("set-option", "-t", "agent", "remain-on-exit", "on"); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	pane := func() string { out, _ := tmux("capture-pane", "-p", "-t", "agent"); return out }
	dead := func() bool {
		out, err := tmux("display-message", "-p", "-t", "agent", "#{pane_dead}")
		return err != nil || strings.TrimSpace(out) == "1"
	}
	if out, err := tmux("send-keys", "-t", "agent", "PS1='local> '; clear; "+strings.Join(line, " "), "Enter"); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	if !waitFor(15*time.Second, func() bool { p := pane(); return strings.Contains(p, "#") || strings.Contains(p, "$") || dead() }) || dead() {
		t.Fatalf("no shell prompt through airlock:\n%s\n%s", pane(), g.Log())
	}
	time.Sleep(300 * time.Millisecond)
	if out, err := tmux("send-keys", "-t", "agent", "echo airlock-$((6*7)) && tput cols", "Enter"); err != nil {
		t.Fatal(out)
	}
	if !waitFor(10*time.Second, func() bool { return strings.Contains(pane(), "airlock-42") }) {
		t.Fatalf("the command's output never showed:\n%s", pane())
	}
	time.Sleep(500 * time.Millisecond)
	if out, err := tmux("send-keys", "-t", "agent", "exit", "Enter"); err != nil {
		t.Fatal(out)
	}
	if !waitFor(10*time.Second, dead) {
		t.Fatalf("ssh did not end after exit:\n%s", pane())
	}

	d := g.lastSession("box")
	st, res := findStatement(t, d.Events, "SHELL", "shell")
	if st.Decision != "allow" || res == nil || res.ExitStatus == nil || *res.ExitStatus != 0 {
		t.Fatalf("shell recorded as %+v, result %+v", st, res)
	}
	if in := dataOf(d.Events, st.ID, "stdin"); !strings.Contains(in, "echo airlock-$((6*7))") {
		t.Errorf("recorded input lacks the command: %q", in)
	}
	if out := dataOf(d.Events, st.ID, "stdout"); !strings.Contains(out, "airlock-42") || !strings.Contains(out, "100") {
		t.Errorf("recorded output lacks the command's output: %q", out)
	}

	// The asciicast: a v2 header with the terminal's size, then events.
	var cast bytes.Buffer
	if err := recorder.WriteAsciicast(&cast, d.Events); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(cast.String()), "\n")
	var hdr recorder.CastHeader
	if err := json.Unmarshal([]byte(lines[0]), &hdr); err != nil || hdr.Version != 2 || hdr.Width != 100 || hdr.Height != 30 || hdr.Env["TERM"] == "" {
		t.Errorf("asciicast header %s: %v", lines[0], err)
	}
	var last float64
	for _, l := range lines[1:] {
		var ev []any
		if err := json.Unmarshal([]byte(l), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("asciicast event %s: %v", l, err)
		}
		if at := ev[0].(float64); at < last {
			t.Errorf("asciicast time goes back: %s", l)
		} else {
			last = at
		}
	}
	if !strings.Contains(cast.String(), "airlock-42") {
		t.Errorf("asciicast lacks the output")
	}
	// What the reviewer exports with the CLI plays in asciinema.
	castFile := filepath.Join(t.TempDir(), "session.cast")
	g.MustCLI("rita", "sessions", "export", d.Summary.Session, "--format", "asciicast", "-o", castFile)
	player := testenv.RequireBinary(t, "asciinema", "asciinema")
	script := testenv.RequireBinary(t, "script", "bsdutils")
	// asciinema wants a terminal; script(1) gives it one.
	if played, err := exec.Command(script, "-qec", player+" cat "+castFile, "/dev/null").CombinedOutput(); err != nil || !strings.Contains(string(played), "airlock-42") {
		t.Errorf("asciinema cat of the exported recording: %v\n%s", err, played)
	}

	// The replay plays the output with the original timing.
	start := time.Now()
	out := g.MustCLI("rita", "sessions", "replay", d.Summary.Session)
	took := time.Since(start)
	if !strings.Contains(out, "airlock-42") {
		t.Errorf("replay lacks the output:\n%q", out)
	}
	if took < time.Duration(last*0.8*float64(time.Second)) {
		t.Errorf("replay at speed 1 took %v for a %0.2fs recording", took, last)
	}
	start = time.Now()
	if out := g.MustCLI("rita", "sessions", "replay", d.Summary.Session, "--speed", "100"); !strings.Contains(out, "airlock-42") || time.Since(start) > took {
		t.Errorf("replay at speed 100 took %v (speed 1: %v)", time.Since(start), took)
	}

	// Without --shell: no terminal, no shell, and the agent reads why.
	iss := g.sshGrant("box", "INC-12: commands only", "--command", "uname")
	r := g.sshAs("box", append(tokenAuth("password"), "-tt"), iss.Token)
	// OpenSSH closes the channel when a pty it was told to get (-tt) is
	// refused; the reason, written to stderr first, may not be shown.
	if r.code != 255 || !strings.Contains(r.stderr, "PTY allocation request failed") {
		t.Errorf("ssh -tt without --shell: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = g.sshAs("box", tokenAuth("password"), iss.Token)
	if r.code != 126 || !strings.Contains(r.stderr, "allows no interactive shell") || !strings.Contains(r.stderr, "--shell") {
		t.Errorf("shell without --shell: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	d = g.lastSession("box")
	if st, _ := findStatement(t, d.Events, "SHELL", "shell"); st.Decision != "deny" || st.Rule != "shell" {
		t.Errorf("shell recorded as %+v", st)
	}
	all := g.sessionsOf("box")
	var pty control.SessionDetail
	g.CLIJSON(&pty, "rita", "sessions", "show", all[1].Session)
	if st, _ := findStatement(t, pty.Events, "PTY", "pty"); st.Decision != "deny" {
		t.Errorf("pty recorded as %+v", st)
	}
	if _, err := g.CLI("rita", "sessions", "replay", d.Summary.Session); err == nil || !strings.Contains(err.Error(), "no terminal") {
		t.Errorf("replaying a session without a terminal: %v", err)
	}
}

// echoServer listens on loopback and echoes what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return l.Addr().String()
}

// TestSSHForwarding: ssh -N -L to a destination the grant lists works;
// to any other it is refused with the reason in the client's message;
// -R is refused; each is recorded.
func TestSSHForwarding(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})
	echo := echoServer(t)
	iss := g.sshGrant("box", "INC-13: reach the echo service", "--forward", echo)
	args := func(extra ...string) []string {
		a := append(append(g.sshOpts(), tokenAuth("password")...), "-N", "-o", "ExitOnForwardFailure=yes", "-p", g.ssh.port)
		return append(append(a, extra...), "agent-1+box@"+g.ssh.host)
	}
	dialLocal := func(port int) net.Conn {
		var c net.Conn
		if !waitFor(10*time.Second, func() bool {
			var err error
			c, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			return err == nil
		}) {
			t.Fatalf("ssh -L never listened on %d", port)
		}
		return c
	}

	// Allowed.
	lp := testenv.FreePort(t)
	_, _ = g.startClient("ssh", iss.Token, args("-L", fmt.Sprintf("%d:%s", lp, echo))...)
	c := dialLocal(lp)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "ping\n" {
		t.Fatalf("through an allowed forward: %q %v", got, err)
	}
	c.Close()

	// Refused: the sshd's own port is not in the grant.
	lp2 := testenv.FreePort(t)
	_, out := g.startClient("ssh", iss.Token, args("-L", fmt.Sprintf("%d:%s", lp2, g.ssh.sshd.Addr()))...)
	c = dialLocal(lp2)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Errorf("a refused forward carried %d bytes", n)
	}
	c.Close()
	if !waitFor(5*time.Second, func() bool { return strings.Contains(out.String(), "administratively prohibited") }) ||
		!strings.Contains(out.String(), "airlock: port forwarding to "+g.ssh.sshd.Addr()+" is not allowed") {
		t.Errorf("ssh -L to a refused destination printed:\n%s", out.String())
	}

	// Refused: a remote forward.
	r := g.runClient("ssh", iss.Token, "", args("-R", "0:127.0.0.1:9")...)
	if r.code == 0 || !strings.Contains(r.stderr, "remote port forwarding failed") {
		t.Errorf("ssh -R: exit %d, stderr %q", r.code, r.stderr)
	}

	var all []recorder.Event
	for _, s := range g.sessionsOf("box") {
		var d control.SessionDetail
		g.CLIJSON(&d, "rita", "sessions", "show", s.Session)
		all = append(all, d.Events...)
	}
	if st, _ := findStatement(t, all, "DIRECT-TCPIP", "direct-tcpip "+echo); st.Decision != "allow" {
		t.Errorf("allowed forward recorded as %+v", st)
	}
	if st, _ := findStatement(t, all, "DIRECT-TCPIP", "direct-tcpip "+g.ssh.sshd.Addr()); st.Decision != "deny" || st.Rule != "forward" {
		t.Errorf("refused forward recorded as %+v", st)
	}
	if st, _ := findStatement(t, all, "TCPIP-FORWARD", "tcpip-forward"); st.Decision != "deny" {
		t.Errorf("remote forward recorded as %+v", st)
	}
}

// TestSSHFiles: scp both ways, in both of its protocols (SFTP, the
// default, and the legacy one with -O), under --files read-write; under
// --files read, downloads work and every write is refused; an sftp -b
// batch of reads and refused writes; all recorded with paths and sizes.
func TestSSHFiles(t *testing.T) {
	testenv.RequireBinary(t, "sftp", "openssh-client")
	g := startGateway(t, gatewayOptions{SSH: true})
	remote, local := t.TempDir(), t.TempDir()
	if err := os.Chmod(remote, 0o755); err != nil {
		t.Fatal(err)
	}
	content := "hello from the box\n"
	if err := os.WriteFile(filepath.Join(remote, "hosts.txt"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	upload := filepath.Join(local, "up.txt")
	if err := os.WriteFile(upload, []byte("uploaded by the agent\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rw := g.sshGrant("box", "INC-14: ship a file", "--files", "read-write")
	// Created last, so it is the grant agent-1's key logs in under.
	ro := g.sshGrant("box", "INC-15: read a file", "--files", "read")
	target := "agent-1+box@" + g.ssh.host + ":"
	scp := func(token string, extra ...string) sshRun {
		a := append(append(g.sshOpts(), tokenAuth("password")...), "-P", g.ssh.port)
		return g.runClient("scp", token, "", append(a, extra...)...)
	}
	for _, mode := range []string{"sftp", "legacy"} {
		var flag []string
		if mode == "legacy" {
			flag = []string{"-O"}
		}
		dst := filepath.Join(remote, "up-"+mode+".txt")
		if r := scp(rw.Token, append(flag, upload, target+dst)...); r.code != 0 {
			t.Fatalf("scp (%s) upload under read-write: exit %d: %s", mode, r.code, r.stderr)
		}
		if b, err := os.ReadFile(dst); err != nil || string(b) != "uploaded by the agent\n" {
			t.Errorf("scp (%s) upload: %q %v", mode, b, err)
		}
		down := filepath.Join(local, "down-"+mode+".txt")
		if r := scp(ro.Token, append(flag, target+filepath.Join(remote, "hosts.txt"), down)...); r.code != 0 {
			t.Fatalf("scp (%s) download under read: exit %d: %s", mode, r.code, r.stderr)
		}
		if b, err := os.ReadFile(down); err != nil || string(b) != content {
			t.Errorf("scp (%s) download: %q %v", mode, b, err)
		}
		refused := filepath.Join(remote, "refused-"+mode+".txt")
		r := scp(ro.Token, append(flag, upload, target+refused)...)
		if r.code == 0 {
			t.Errorf("scp (%s) upload under read succeeded", mode)
		}
		if _, err := os.Stat(refused); err == nil {
			t.Errorf("scp (%s) upload under read wrote %s", mode, refused)
		}
		// Either way the person at scp reads why, not only "Permission
		// denied" (in SFTP mode, from the channel's stderr).
		if !strings.Contains(r.stderr, "--files read-write") {
			t.Errorf("scp (%s) upload under read: stderr %q", mode, r.stderr)
		}
	}

	// sftp -b under read: reads work, each write is refused (the - prefix
	// lets the batch go on), the target is unchanged.
	got := filepath.Join(local, "got.txt")
	batch := fmt.Sprintf("get %s %s\nls -1 %s\n-put %s %s\n-mkdir %s\n-rm %s\n-rename %s %s\nchmod 600 %s\n",
		filepath.Join(remote, "hosts.txt"), got, remote, upload, filepath.Join(remote, "put.txt"),
		filepath.Join(remote, "newdir"), filepath.Join(remote, "hosts.txt"),
		filepath.Join(remote, "hosts.txt"), filepath.Join(remote, "moved.txt"), filepath.Join(remote, "hosts.txt"))
	batchFile := filepath.Join(local, "batch")
	if err := os.WriteFile(batchFile, []byte(batch), 0o600); err != nil {
		t.Fatal(err)
	}
	a := append(append(g.sshOpts(), g.keyAuth()...), "-b", batchFile, "-P", g.ssh.port, "agent-1+box@"+g.ssh.host)
	r := g.runClient("sftp", "", "", a...)
	if b, err := os.ReadFile(got); err != nil || string(b) != content {
		t.Errorf("sftp get under read: %q %v (stderr %s)", b, err, r.stderr)
	}
	if !strings.Contains(r.stdout, "hosts.txt") {
		t.Errorf("sftp ls under read:\n%s", r.stdout)
	}
	if n := strings.Count(r.stderr, "Permission denied"); n < 4 {
		t.Errorf("want 4 refused writes, stderr:\n%s", r.stderr)
	}
	// sftp prints only the status code's text; the reason the reviewer
	// reads reaches the person at sftp on stderr, once per refusal.
	if n := strings.Count(r.stderr, "--files read-write"); n < 5 {
		t.Errorf("want the reason of each of the 5 refused writes on sftp's stderr, got %d:\n%s", n, r.stderr)
	}
	t.Logf("sftp -b under --files read, stderr:\n%s", r.stderr)
	// The grant lists as what it allows, not as "read" access.
	for _, l := range strings.Split(g.MustCLI("alice", "grants", "list"), "\n") {
		if strings.HasPrefix(l, ro.Grant.ID) && !strings.Contains(l, "ssh: files: read") {
			t.Errorf("grants list row of an ssh grant: %q", l)
		}
	}
	if show := g.MustCLI("alice", "grants", "show", ro.Grant.ID); strings.Contains(show, "access:    read") || !strings.Contains(show, "files:") {
		t.Errorf("grants show of an ssh grant:\n%s", show)
	}
	if r.code == 0 {
		t.Errorf("the batch's last line (chmod) was refused, yet sftp exited 0")
	}
	for _, p := range []string{"put.txt", "newdir", "moved.txt"} {
		if _, err := os.Stat(filepath.Join(remote, p)); err == nil {
			t.Errorf("a refused sftp write made %s", p)
		}
	}
	if fi, err := os.Stat(filepath.Join(remote, "hosts.txt")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("hosts.txt after refused rm, rename and chmod: %v %v", fi, err)
	}
	d := g.lastSession("box")
	if st, res := findStatement(t, d.Events, "SFTP OPEN", "hosts.txt (read)"); st.Decision != "allow" || res == nil || res.BytesOut != int64(len(content)) {
		t.Errorf("sftp get recorded as %+v, result %+v", st, res)
	}
	for _, c := range []struct{ kind, text string }{
		{"SFTP OPEN", "put.txt (write,create,truncate)"}, {"SFTP MKDIR", "newdir"},
		{"SFTP REMOVE", "hosts.txt"}, {"SFTP RENAME", "moved.txt"}, {"SFTP SETSTAT", "hosts.txt"},
	} {
		st, res := findStatement(t, d.Events, c.kind, c.text)
		if st.Decision != "deny" || !strings.Contains(st.Reason, "--files read-write") || res != nil {
			t.Errorf("refused %s %s recorded as %+v", c.kind, c.text, st)
		}
	}
	if st, _ := findStatement(t, d.Events, "SFTP OPENDIR", remote); st.Decision != "allow" {
		t.Errorf("sftp ls recorded as %+v", st)
	}

	// No --files: no sftp at all, and the agent reads why.
	none := g.sshGrant("box", "INC-15: commands only", "--command", "uname")
	a = append(append(g.sshOpts(), tokenAuth("password")...), "-P", g.ssh.port, "agent-1+box@"+g.ssh.host)
	r = g.runClient("sftp", none.Token, "ls\n", a...)
	if r.code == 0 || !strings.Contains(r.stderr, "needs --files read") {
		t.Errorf("sftp without --files: exit %d, stderr %q", r.code, r.stderr)
	}
}

// dialSSH logs in to the gateway with the x/crypto client.
func (g *gateway) dialSSH(user string, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	return ssh.Dial("tcp", g.ssh.addr, &ssh.ClientConfig{
		User: user, Auth: auth, HostKeyCallback: ssh.FixedHostKey(g.HostKey), Timeout: 10 * time.Second,
	})
}

const paramikoScript = `
import sys, paramiko
host, port, known, token, remote = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
c = paramiko.SSHClient()
c.load_host_keys(known)
print("known:", list(c.get_host_keys().keys()), open(known).read(), file=sys.stderr)
c.set_missing_host_key_policy(paramiko.RejectPolicy())
c.connect(host, port=port, username="agent-1+box", password=token, allow_agent=False, look_for_keys=False, timeout=10)
_, out, err = c.exec_command("echo paramiko-ok")
print("allowed:", out.read().decode().strip(), out.channel.recv_exit_status())
_, out, err = c.exec_command("rm -rf " + remote)
print("refused:", out.channel.recv_exit_status(), err.read().decode().strip())
sftp = c.open_sftp()
print("listdir:", sorted(sftp.listdir(remote)))
with sftp.open(remote + "/hosts.txt") as f:
    print("read:", f.read().decode().strip())
try:
    sftp.open(remote + "/new.txt", "w")
    print("write: allowed")
except IOError as e:
    print("write:", e)
c.close()
`

// TestSSHClients: paramiko and the x/crypto/ssh client, with the token as
// the password (and keyboard-interactive), through allowed and refused
// requests.
func TestSSHClients(t *testing.T) {
	py := testenv.RequirePythonModule(t, "paramiko", "python3-paramiko")
	g := startGateway(t, gatewayOptions{SSH: true})
	remote := t.TempDir()
	if err := os.WriteFile(filepath.Join(remote, "hosts.txt"), []byte("box file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	iss := g.sshGrant("box", "INC-16: clients", "--command", "echo *", "--command", "sh -c *", "--files", "read")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", paramikoScript, g.ssh.host, g.ssh.port, g.ssh.knownHosts, iss.Token, remote).CombinedOutput()
	if err != nil {
		t.Fatalf("paramiko: %v\n%s", err, out)
	}
	for _, want := range []string{"allowed: paramiko-ok 0", "refused: 126 airlock: command", "matches no --command rule",
		"listdir: ['hosts.txt']", "read: box file", "write: [Errno 13]"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("paramiko printed no %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(remote, "new.txt")); err == nil {
		t.Errorf("paramiko wrote a file under --files read")
	}

	// x/crypto/ssh, password.
	c, err := g.dialSSH("agent-1+box", ssh.Password(iss.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, _ := c.NewSession()
	if b, err := sess.Output("echo xcrypto-ok"); err != nil || string(b) != "xcrypto-ok\n" {
		t.Errorf("x/crypto exec: %q %v", b, err)
	}
	sess, _ = c.NewSession()
	var ee *ssh.ExitError
	if err := sess.Run("sh -c 'exit 7'"); !errors.As(err, &ee) || ee.ExitStatus() != 7 {
		t.Errorf("x/crypto exit status: %v", err)
	}
	sess, _ = c.NewSession()
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	if err := sess.Run("reboot"); !errors.As(err, &ee) || ee.ExitStatus() != 126 || !strings.Contains(stderr.String(), "matches no --command rule") {
		t.Errorf("x/crypto refused exec: %v, stderr %q", err, stderr.String())
	}
	// An exit signal comes back. (A signal request is relayed and
	// recorded; OpenSSH's sshd refuses to signal a root session, so its
	// effect is not checked here.)
	sess, _ = c.NewSession()
	if err := sess.Run("sh -c 'kill -TERM $$'"); !errors.As(err, &ee) || ee.Signal() != "TERM" {
		t.Errorf("x/crypto exit signal: %v", err)
	}
	sess, _ = c.NewSession()
	stdout, _ := sess.StdoutPipe()
	if err := sess.Start("sh -c 'echo started; sleep 1'"); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "started\n" {
		t.Fatalf("before the signal: %q", line)
	}
	if err := sess.Signal(ssh.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	_ = sess.Wait()
	// Agent forwarding and a terminal are refused.
	sess, _ = c.NewSession()
	if ok, err := sess.SendRequest("auth-agent-req@openssh.com", true, nil); ok || err != nil {
		t.Errorf("agent forwarding request answered %v %v", ok, err)
	}
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
		t.Errorf("a pty without --shell was granted")
	}
	sess.Close()
	c.Close()
	d := g.lastSession("box")
	if st, _ := findStatement(t, d.Events, "AGENT-FORWARDING", "auth-agent-req"); st.Decision != "deny" {
		t.Errorf("agent forwarding recorded as %+v", st)
	}
	if st, res := findStatement(t, d.Events, "EXEC", "kill -TERM"); st.Decision != "allow" || res == nil || res.ExitSignal != "TERM" || res.Tag != "signal TERM" {
		t.Errorf("signalled exec recorded as %+v, result %+v", st, res)
	}
	if st, _ := findStatement(t, d.Events, "EXEC", "sleep 1"); dataOf(d.Events, st.ID, "signal") != "USR1" {
		t.Errorf("the relayed signal is not recorded")
	}

	// x/crypto/ssh, keyboard-interactive.
	c, err = g.dialSSH("agent-1+box", ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
		a := make([]string, len(qs))
		for i := range a {
			a[i] = iss.Token
		}
		return a, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	sess, _ = c.NewSession()
	if b, err := sess.Output("echo kbd-ok"); err != nil || string(b) != "kbd-ok\n" {
		t.Errorf("keyboard-interactive exec: %q %v", b, err)
	}
	c.Close()
}

// TestSSHUpstreamHostKeyMismatch: a target whose host key is not the
// pinned one is refused before the login completes; the agent reads why
// and the refusal is recorded.
func TestSSHUpstreamHostKeyMismatch(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})
	g.sshGrant("box-badkey", "INC-17: a box with a changed key", "--command", "echo *")
	r := g.sshAs("box-badkey", g.keyAuth(), "", "echo", "should-not-run")
	if r.code != 255 || strings.Contains(r.stdout, "should-not-run") || !strings.Contains(r.stderr, "host key mismatch for box-badkey") {
		t.Fatalf("login to a box with the wrong host key: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	d := g.lastSession("box-badkey")
	st, _ := findStatement(t, d.Events, "UPSTREAM", "connect ")
	if st.Decision != "deny" || st.Rule != "upstream-host-key" || !strings.Contains(st.Reason, "the gateway pins") {
		t.Errorf("mismatch recorded as %+v", st)
	}
	if !strings.Contains(d.Summary.EndReason, "upstream connection failed") {
		t.Errorf("session end reason %q", d.Summary.EndReason)
	}
}

// TestSSHRevokedMidSession: revoking the grant ends a running command's
// connection at once, telling the agent why, and stops the command; the
// token stops working.
func TestSSHRevokedMidSession(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})
	iss := g.sshGrant("box", "INC-18: wait a while", "--command", "sh -c *")
	a := append(append(g.sshOpts(), tokenAuth("password")...), "-p", g.ssh.port, "agent-1+box@"+g.ssh.host, "sh -c 'echo started; exec sleep 60'")
	cmd, out := g.startClient("ssh", iss.Token, a...)
	if !waitFor(15*time.Second, func() bool { return strings.Contains(out.String(), "started") }) {
		t.Fatalf("the sleep never started:\n%s", out.String())
	}
	g.MustCLI("alice", "grants", "revoke", iss.Grant.ID)
	revoked := time.Now()
	select {
	case <-out.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("ssh still running 5s after the revocation:\n%s", out.String())
	}
	if took := time.Since(revoked); took > 2*time.Second {
		t.Errorf("the connection ended %v after the revocation", took)
	}
	if !strings.Contains(out.String(), "revoked by alice") || cmd.ProcessState.ExitCode() == 0 {
		t.Errorf("ssh after revocation: exit %d, output %q", cmd.ProcessState.ExitCode(), out.String())
	}
	d := g.lastSession("box")
	if !strings.Contains(d.Summary.EndReason, "revoked") {
		t.Errorf("session end reason %q", d.Summary.EndReason)
	}
	// The revocation stopped the command itself (issue 22), and its
	// result says how (e2e/revoke_stop_test.go tests that in full).
	if _, res := findStatement(t, d.Events, "EXEC", "sleep 60"); res == nil || !res.Executed || res.ExitSignal == "" || len(res.Stopped) == 0 {
		t.Errorf("the interrupted command's result: %+v", res)
	}
	r := g.sshAs("box", tokenAuth("password"), iss.Token, "sh -c true")
	if r.code != 255 || !strings.Contains(r.stderr, "revoked by alice") {
		t.Errorf("revoked token: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestSSHLoginRefusals: each refused login says why and is recorded once.
func TestSSHLoginRefusals(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})
	iss := g.sshGrant("box", "INC-19: active", "--command", "echo *")
	var pending control.Issued
	g.CLIJSON(&pending, "agent-1", "request", "--resource", "box", "--task", "INC-19: not yet", "--command", "echo *")
	pw := tokenAuth("password")
	cases := []struct {
		name, user, token string
		auth              []string
		want              string
	}{
		{"bad token", "agent-1+box", "alk_notarealtoken", pw, "not the token of any of your grants"},
		{"pending grant", "agent-1+box", pending.Token, pw, "pending approval"},
		{"no resource in the user", "agent-1", iss.Token, pw, "log in as AGENT+RESOURCE"},
		{"unknown resource", "agent-1+nope", iss.Token, pw, `no resource "nope"`},
		{"not an ssh resource", "agent-1+demo-pg", iss.Token, pw, "is a postgres resource"},
		{"other agent's token", "agent-2+box", iss.Token, pw, "authentication failed for agent-2"},
		{"key of another agent", "agent-2+box", "", g.keyAuth(), "Permission denied"},
	}
	for _, c := range cases {
		a := append(append(g.sshOpts(), c.auth...), "-p", g.ssh.port, c.user+"@"+g.ssh.host, "echo", "in")
		r := g.runClient("ssh", c.token, "", a...)
		if r.code != 255 || strings.Contains(r.stdout, "in") || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q, want %q", c.name, r.code, r.stdout, r.stderr, c.want)
		}
	}
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list")
	var reasons []string
	for _, s := range list {
		if s.Protocol != "ssh" || s.Status != recorder.StatusAuthFailed {
			continue
		}
		var d control.SessionDetail
		g.CLIJSON(&d, "rita", "sessions", "show", s.Session)
		if len(d.Events) != 1 || d.Events[0].Auth == nil {
			t.Errorf("refused login %s has %d events, want one auth.failed", s.Session, len(d.Events))
			continue
		}
		reasons = append(reasons, d.Events[0].Auth.Reason)
	}
	if len(reasons) != len(cases) {
		t.Errorf("%d refused logins recorded, want %d:\n%s", len(reasons), len(cases), strings.Join(reasons, "\n"))
	}
	joined := strings.Join(reasons, "\n")
	for _, want := range []string{"bad-token:", "pending:", "protocol:", "no-resource:", "wrong-protocol:", "bad-key:"} {
		if !strings.Contains(joined, want) {
			t.Errorf("recorded refusals lack %q:\n%s", want, joined)
		}
	}
}

// TestSSHMalformedPackets: garbage and lies over a raw socket, and
// malformed requests from an authenticated client, are refused and
// recorded; the gateway keeps serving.
func TestSSHMalformedPackets(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})
	iss := g.sshGrant("box", "INC-20: fuzzing", "--command", "echo *", "--files", "read")
	raw := func(name string, send func(c net.Conn, r *bufio.Reader)) {
		c, err := net.Dial("tcp", g.ssh.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		if banner, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(banner, "SSH-2.0-airlock") {
			t.Fatalf("%s: banner %q %v", name, banner, err)
		}
		send(c, r)
		if _, err := io.Copy(io.Discard, r); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: the gateway did not close the connection: %v", name, err)
		}
	}
	raw("http", func(c net.Conn, _ *bufio.Reader) { _, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) })
	raw("huge packet", func(c net.Conn, r *bufio.Reader) {
		_, _ = c.Write([]byte("SSH-2.0-evil\r\n"))
		_, _ = c.Write([]byte{0x7f, 0xff, 0xff, 0xff, 4, 20, 0, 0, 0, 0})
	})
	raw("zeros", func(c net.Conn, r *bufio.Reader) {
		_, _ = c.Write([]byte("SSH-2.0-evil\r\n"))
		_, _ = c.Write(make([]byte, 64<<10))
	})

	cl, err := g.dialSSH("agent-1+box", ssh.Password(iss.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sess, _ := cl.NewSession()
	if ok, _ := sess.SendRequest("exec", true, []byte{0, 0, 0, 50, 'e'}); ok {
		t.Errorf("a truncated exec request was accepted")
	}
	if ok, _ := sess.SendRequest("pty-req", true, []byte{1, 2}); ok {
		t.Errorf("a truncated pty request was accepted")
	}
	if ok, _ := sess.SendRequest("env", true, []byte{0, 0, 0, 9}); ok {
		t.Errorf("a truncated env request was accepted")
	}
	sess.Close()
	if _, _, err := cl.OpenChannel("direct-tcpip", []byte{0, 0, 0, 200, 'x'}); err == nil {
		t.Errorf("a truncated direct-tcpip channel was opened")
	}
	if _, _, err := cl.OpenChannel("x-airlock-unknown", nil); err == nil {
		t.Errorf("an unknown channel type was opened")
	}
	// An sftp packet that claims 4 GiB ends the channel, allocating
	// nothing.
	sess, _ = cl.NewSession()
	in, _ := sess.StdinPipe()
	if err := sess.RequestSubsystem("sftp"); err != nil {
		t.Fatal(err)
	}
	_, _ = in.Write([]byte{0xff, 0xff, 0xff, 0xff, fxpOpenForTest})
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("the sftp channel stayed open after a 4 GiB packet")
	}
	// The same connection still works.
	sess, _ = cl.NewSession()
	if b, err := sess.Output("echo still-here"); err != nil || string(b) != "still-here\n" {
		t.Errorf("after malformed requests: %q %v", b, err)
	}
	cl.Close()

	d := g.lastSession("box")
	st, _ := statements(d.Events)
	var protocol []string
	for _, s := range st {
		if s.Class.Kind == "PROTOCOL" {
			protocol = append(protocol, s.Reason)
		}
	}
	joined := strings.Join(protocol, "\n")
	for _, want := range []string{"malformed exec request", "malformed pty-req request", "malformed env request", "malformed direct-tcpip channel", "packet claims length 4294967295"} {
		if !strings.Contains(joined, want) {
			t.Errorf("recorded protocol refusals lack %q:\n%s", want, joined)
		}
	}
	if st, _ := findStatement(t, d.Events, "REQUEST", "x-airlock-unknown"); st.Decision != "deny" {
		t.Errorf("unknown channel recorded as %+v", st)
	}
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list")
	handshake := 0
	for _, s := range list {
		if s.Status == recorder.StatusAuthFailed && s.Protocol == "ssh" {
			var d control.SessionDetail
			g.CLIJSON(&d, "rita", "sessions", "show", s.Session)
			if strings.Contains(d.Events[0].Auth.Reason, "ssh handshake failed") {
				handshake++
			}
		}
	}
	if handshake != 3 {
		t.Errorf("%d failed handshakes recorded, want 3", handshake)
	}
}

// fxpOpenForTest is SSH_FXP_OPEN, the type byte after the lying length.
const fxpOpenForTest = 3

// BenchmarkSSHThroughput pipes 1 GiB (AIRLOCK_BENCH_BYTES to change it)
// through `ssh HOST cat` straight to sshd and through airlock, in the same
// run, and reports both rates and their ratio. Run it with:
//
//	go test -run XXX -bench SSHThroughput -benchtime 1x ./e2e/
func BenchmarkSSHThroughput(b *testing.B) {
	size := int64(1 << 30)
	if v := os.Getenv("AIRLOCK_BENCH_BYTES"); v != "" {
		if _, err := fmt.Sscan(v, &size); err != nil {
			b.Fatalf("AIRLOCK_BENCH_BYTES: %v", err)
		}
	}
	g := startGateway(b, gatewayOptions{SSH: true})
	g.sshGrant("box", "bench: throughput", "--command", "cat")
	sshd := g.ssh.sshd
	direct := []string{"-F", "/dev/null", "-o", "UserKnownHostsFile=" + sshd.KnownHostsFile, "-o", "StrictHostKeyChecking=yes",
		"-i", sshd.ClientKeyFile, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-p", fmt.Sprint(sshd.Port), sshd.User + "@" + sshd.Host, "cat"}
	via := append(append(g.sshOpts(), g.keyAuth()...), "-p", g.ssh.port, "agent-1+box@"+g.ssh.host, "cat")
	run := func(args []string) time.Duration {
		cmd := exec.Command("ssh", args...)
		cmd.Stdin = io.LimitReader(zeros{}, size)
		var n countWriter
		cmd.Stdout = &n
		var errb bytes.Buffer
		cmd.Stderr = &errb
		start := time.Now()
		if err := cmd.Run(); err != nil || int64(n) != size {
			b.Fatalf("ssh %v: %v, %d of %d bytes back: %s", args, err, n, size, errb.String())
		}
		return time.Since(start)
	}
	var tDirect, tVia time.Duration
	b.ResetTimer()
	for range b.N {
		tDirect += run(direct)
		tVia += run(via)
	}
	b.StopTimer()
	mb := float64(size) * float64(b.N) / 1e6
	b.ReportMetric(mb/tDirect.Seconds(), "direct-MB/s")
	b.ReportMetric(mb/tVia.Seconds(), "airlock-MB/s")
	b.ReportMetric(tDirect.Seconds()/tVia.Seconds(), "ratio")
	b.Logf("%d MiB through ssh cat: direct %v, via airlock %v, airlock/direct throughput %.2f", size>>20, tDirect/time.Duration(b.N), tVia/time.Duration(b.N), tDirect.Seconds()/tVia.Seconds())
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

const paramikoEcho = `
import sys, paramiko
host, port, known, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = paramiko.SSHClient()
c.load_host_keys(known)
c.set_missing_host_key_policy(paramiko.RejectPolicy())
c.connect(host, port=port, username="agent-1+box", password=token, allow_agent=False, look_for_keys=False, timeout=10)
_, out, _ = c.exec_command("echo cipher-ok")
print(out.read().decode().strip())
c.close()
`

// TestSSHCiphers: listen.ssh_ciphers narrows what agents may use. With
// AES-GCM only, OpenSSH (which prefers chacha20-poly1305, then AES-CTR)
// uses AES-GCM, and a client that speaks only CTR (paramiko 2.x) is
// refused at key exchange with the ciphers named; by default OpenSSH gets
// AES-CTR.
func TestSSHCiphers(t *testing.T) {
	py := testenv.RequirePythonModule(t, "paramiko", "python3-paramiko")
	for _, tc := range []struct {
		listen, want string
		paramiko     bool
	}{
		{"", "aes128-ctr", true},
		{"  ssh_ciphers: [aes128-gcm@openssh.com, aes256-gcm@openssh.com]\n", "aes128-gcm@openssh.com", false},
	} {
		g := startGateway(t, gatewayOptions{SSH: true, Listen: tc.listen})
		iss := g.sshGrant("box", "INC-70: ciphers", "--command", "echo *")
		r := g.sshAs("box", tokenAuth("password"), iss.Token, "-v", "echo", "cipher-ok")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "cipher-ok" {
			t.Fatalf("ssh with %q: exit %d\n%s%s", tc.listen, r.code, r.stdout, r.stderr)
		}
		if want := "kex: server->client cipher: " + tc.want; !strings.Contains(r.stderr, want) {
			t.Errorf("ssh with %q: no %q in\n%s", tc.listen, want, r.stderr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := exec.CommandContext(ctx, py, "-c", paramikoEcho, g.ssh.host, g.ssh.port, g.ssh.knownHosts, iss.Token).CombinedOutput()
		cancel()
		switch {
		case tc.paramiko && (err != nil || !strings.Contains(string(out), "cipher-ok")):
			t.Fatalf("paramiko with the default ciphers: %v\n%s", err, out)
		case !tc.paramiko && (err == nil || !strings.Contains(string(out), "ncompatible ssh")):
			t.Fatalf("paramiko (CTR only) against AES-GCM only: %v\n%s", err, out)
		}
	}
}
