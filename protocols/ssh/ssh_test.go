package ssh

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/credential"
	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// fakeGrants is the control plane as the proxy sees it.
type fakeGrants struct {
	mu       sync.Mutex
	grants   []*authz.Grant
	onChange func(*authz.Grant)
}

func (f *fakeGrants) ForAgent(agent string) ([]*authz.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*authz.Grant
	for _, g := range f.grants {
		if g.Agent == agent {
			cp := *g
			out = append(out, &cp)
		}
	}
	return out, nil
}

func (f *fakeGrants) Ready() error { return nil }

func (f *fakeGrants) OnChange(cb func(*authz.Grant)) {
	f.mu.Lock()
	f.onChange = cb
	f.mu.Unlock()
}

// add makes an active grant with policy p and returns its token.
func (f *fakeGrants) add(id string, p authz.SSHPolicy) string {
	tok := credential.NewToken()
	now := time.Now()
	g := &authz.Grant{ID: id, Agent: "agent-1", Resource: "box", Task: "unit: " + id, State: authz.StateActive,
		DecidedBy: "alice", DecidedAt: now, ExpiresAt: now.Add(time.Hour), SSH: p, Verifier: credential.NewVerifier("agent-1", tok)}
	f.mu.Lock()
	f.grants = append(f.grants, g)
	f.mu.Unlock()
	return tok
}

func (f *fakeGrants) revoke(id string) {
	f.mu.Lock()
	var changed *authz.Grant
	for _, g := range f.grants {
		if g.ID == id {
			g.State, g.RevokedBy, g.RevokedAt = authz.StateRevoked, "alice", time.Now()
			cp := *g
			changed = &cp
		}
	}
	cb := f.onChange
	f.mu.Unlock()
	if cb != nil && changed != nil {
		cb(changed)
	}
}

// rig is an in-process gateway with only the SSH listener, in front of a
// real sshd, recording to a real NATS server.
type rig struct {
	t      *testing.T
	addr   string
	grants *fakeGrants
	nats   *testenv.NATS
	reader *recorder.Reader
	host   ssh.PublicKey
}

func startRig(t *testing.T) *rig {
	t.Helper()
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{})
	n := testenv.StartNATS(t, testenv.NATSOptions{})
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Options{URL: n.URL, Name: "ssh unit test", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	signer, err := recorder.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := recorder.New(ctx, nc.JS, recorder.Options{Stream: "AIRLOCK_EVENTS", PublishTimeout: 500 * time.Millisecond, Gateway: "unit", Signer: signer, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		DataDir:    t.TempDir(),
		Recorder:   config.Recorder{PublishTimeout: 500 * time.Millisecond, MaxOutputBytes: 1 << 10},
		Identities: []config.Identity{{Name: "agent-1", Role: "agent"}},
		Resources: []config.Resource{{Name: "box", Protocol: "ssh", Address: sshd.Addr(), User: sshd.User,
			Auth: config.Auth{Type: "private_key", KeyFile: sshd.ClientKeyFile}, HostKey: sshd.HostKey}},
	}
	p, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, HostKeyFile+".pub")); err != nil {
		t.Errorf("no host key in data_dir: %v", err)
	}
	r := &rig{t: t, grants: &fakeGrants{}, nats: n, host: p.HostKey(), reader: recorder.NewReader(nc.JS, rec.Stream(), rec.SubjectPrefix())}
	srv := &proxy.Server{Config: cfg, Grants: r.grants, Recorder: rec, Log: log, Gateway: "unit"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = l.Addr().String()
	go func() { _ = srv.Serve(l, p) }()
	t.Cleanup(func() {
		l.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return r
}

func (r *rig) dial(token string) *ssh.Client {
	r.t.Helper()
	c, err := ssh.Dial("tcp", r.addr, &ssh.ClientConfig{User: "agent-1+box", Auth: []ssh.AuthMethod{ssh.Password(token)},
		HostKeyCallback: ssh.FixedHostKey(r.host), Timeout: 10 * time.Second})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// events returns the recorded events of the only session of grant id
// that has ended, waiting for its end.
func (r *rig) events(grant string) []recorder.Event {
	r.t.Helper()
	ctx := context.Background()
	var found []recorder.Event
	ok := waitUntil(10*time.Second, func() bool {
		list, err := r.reader.Sessions(ctx, recorder.ListOptions{Agent: "agent-1"})
		if err != nil {
			return false
		}
		for _, s := range list {
			if s.Grant == grant && s.Status == recorder.StatusEnded {
				found, err = r.reader.Events(ctx, s.Session)
				return err == nil
			}
		}
		return false
	})
	if !ok {
		r.t.Fatalf("no ended session of grant %s", grant)
	}
	return found
}

func waitUntil(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if f() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f()
}

func TestSSHProxyExecAndSFTP(t *testing.T) {
	r := startRig(t)
	tok := r.grants.add("gr_exec", authz.SSHPolicy{Commands: []string{"echo *", "head -c * /dev/zero"}, Files: "read"})
	c := r.dial(tok)

	s, _ := c.NewSession()
	if out, err := s.Output("echo unit-ok"); err != nil || string(out) != "unit-ok\n" {
		t.Fatalf("exec: %q %v", out, err)
	}
	// Output past max_output_bytes is relayed, counted, not recorded.
	s, _ = c.NewSession()
	if out, err := s.Output("head -c 100000 /dev/zero"); err != nil || len(out) != 100000 {
		t.Fatalf("big exec: %d bytes, %v", len(out), err)
	}
	s, _ = c.NewSession()
	var stderr strings.Builder
	s.Stderr = &stderr
	if err := s.Run("echo a; echo b"); err == nil || !strings.Contains(stderr.String(), "uses shell syntax") {
		t.Errorf("refused exec: %v %q", err, stderr.String())
	}

	// SFTP by hand: a read-only grant answers a write open with
	// SSH_FX_PERMISSION_DENIED, and the file is not created.
	dir := t.TempDir()
	s, _ = c.NewSession()
	in, _ := s.StdinPipe()
	outp, _ := s.StdoutPipe()
	if err := s.RequestSubsystem("sftp"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(outp)
	send := func(f []byte) sftpResponse {
		t.Helper()
		if _, err := in.Write(f); err != nil {
			t.Fatal(err)
		}
		frame, err := readSFTPPacket(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		p, err := parseSFTPResponse(frame)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := send(sftpFrame(fxpInit, 3)); p.Type != fxpVersion {
		t.Fatalf("init answered %+v", p)
	}
	if p := send(sftpFrame(fxpOpen, 1, filepath.Join(dir, "x"), fxfWrite|fxfCreat, 0)); p.Type != fxpStatus || p.Code != fxPermissionDenied || !strings.Contains(p.Msg, "--files read-write") {
		t.Errorf("write open under read answered %+v", p)
	}
	if p := send(sftpFrame(fxpExtended, 2, "evil@example.com", "/")); p.Code != fxOpUnsupported {
		t.Errorf("unknown extension answered %+v", p)
	}
	if p := send(sftpFrame(fxpStat, 3, dir)); p.Type != fxpAttrs {
		t.Errorf("stat answered %+v", p)
	}
	in.Close()
	_ = s.Wait()
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Errorf("a refused sftp open created the file")
	}
	c.Close()

	evs := r.events("gr_exec")
	var kinds []string
	for _, e := range evs {
		if e.Statement != nil {
			kinds = append(kinds, e.Statement.Class.Kind+":"+e.Statement.Decision)
		}
	}
	want := "EXEC:allow EXEC:allow EXEC:deny SUBSYSTEM:allow SFTP OPEN:deny SFTP:deny SFTP STAT:allow"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("recorded %s\nwant     %s", got, want)
	}
	var big *recorder.Result
	recorded := 0
	for _, e := range evs {
		for _, r := range e.Outcomes() {
			if r.BytesOut == 100000 {
				big = r
			}
		}
		if e.Data != nil && e.Data.ID == 2 {
			recorded += len(e.Data.Bytes())
		}
	}
	if big == nil || !big.OutputCapped || recorded != 1<<10 {
		t.Errorf("capped exec: result %+v, %d bytes recorded", big, recorded)
	}
}

// TestSSHProxyRecorderLostMidShell: once the recorder cannot acknowledge,
// what the agent types is not forwarded and the session ends; nothing
// typed after that reaches the target.
func TestSSHProxyRecorderLostMidShell(t *testing.T) {
	r := startRig(t)
	tok := r.grants.add("gr_shell", authz.SSHPolicy{Shell: true})
	c := r.dial(tok)
	s, _ := c.NewSession()
	in, _ := s.StdinPipe()
	out, _ := s.StdoutPipe()
	var stderr lockedBuf
	s.Stderr = &stderr
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
		t.Fatal(err)
	}
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	var got lockedBuf
	go func() { _, _ = io.Copy(&got, out) }()
	marker := filepath.Join(t.TempDir(), "ran")
	if _, err := io.WriteString(in, "echo before-$((1+1))\n"); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(10*time.Second, func() bool { return strings.Contains(got.String(), "before-2") }) {
		t.Fatalf("shell output: %q", got.String())
	}

	r.nats.Stop(t)
	_, _ = io.WriteString(in, "touch "+marker+"\n")
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the session went on without its recorder")
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a command typed after the recorder was lost ran on the target")
	}
	if !strings.Contains(stderr.String(), "recording unavailable") {
		t.Errorf("the agent was not told why: %q", stderr.String())
	}
}

// TestSSHProxyRevoked: a revocation ends the connection and says why.
func TestSSHProxyRevoked(t *testing.T) {
	r := startRig(t)
	tok := r.grants.add("gr_rev", authz.SSHPolicy{Commands: []string{"sleep *"}})
	c := r.dial(tok)
	s, _ := c.NewSession()
	var stderr lockedBuf
	s.Stderr = &stderr
	if err := s.Start("sleep 30"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	r.grants.revoke("gr_rev")
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the session outlived its revocation")
	}
	if !strings.Contains(stderr.String(), "revoked by alice") {
		t.Errorf("stderr after revocation: %q", stderr.String())
	}
	evs := r.events("gr_rev")
	if end := evs[len(evs)-1]; end.End == nil || !strings.Contains(end.End.Reason, "revoked") {
		t.Errorf("last event %+v", end)
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
