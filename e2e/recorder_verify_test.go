package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
)

// publishedKeys reads GET /v1/keys without a token: the key is public.
func (g *gateway) publishedKeys(t *testing.T) []recorder.PublicKey {
	t.Helper()
	resp, err := http.Get(g.URL + "/v1/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var k control.Keys
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil || resp.StatusCode != 200 || len(k.Keys) != 1 {
		t.Fatalf("GET /v1/keys: %d %+v %v", resp.StatusCode, k, err)
	}
	return k.Keys
}

// TestRecorderVerifyAndExport runs a psql session through the gateway,
// then verifies it through the API and offline from an export file, with
// the published key pinned, and checks that an altered copy of the file
// fails with the seq of the change.
func TestRecorderVerifyAndExport(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-9: check the chain", "--access", "read")
	out, err := g.psql("agent-1", iss.Token, "demo-pg", "select count(*) from orders;\ndelete from orders;\nselect 1; select 2;\n")
	if err != nil && !strings.Contains(out, "airlock") {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
	if len(list) != 1 || list[0].Status != recorder.StatusEnded {
		t.Fatalf("sessions: %+v", list)
	}
	id := list[0].Session

	// The key is published, and is the one the gateway logged at start.
	keys := g.publishedKeys(t)
	fp := keys[0].Fingerprint
	if !strings.Contains(g.Log(), fp) {
		t.Fatalf("the gateway's log does not name its key %s", fp)
	}

	stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", id)
	if code != 0 || !strings.Contains(stdout, id+": ok: ") || !strings.Contains(stdout, fp) {
		t.Fatalf("verify %s: exit %d\n%s%s", id, code, stdout, stderr)
	}
	var rep recorder.Report
	g.CLIJSON(&rep, "rita", "sessions", "verify", id)
	// start, four statements (the outcomes ride on the next event), end.
	if !rep.OK() || rep.Key != fp || rep.Events < 6 {
		t.Fatalf("verify --json: %+v", rep)
	}
	if stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", "--all", "--since", "1h"); code != 0 || !strings.Contains(stdout, "1 session: 1 verified") {
		t.Fatalf("verify --all: exit %d\n%s%s", code, stdout, stderr)
	}
	// An agent reads its own sessions only (issue 17): another agent's
	// is not found.
	if _, _, code := g.CLIRun("agent-2", "sessions", "verify", id); code != 1 {
		t.Fatalf("agent-2 verified agent-1's session: exit %d", code)
	}

	file := filepath.Join(t.TempDir(), id+".json")
	if _, stderr, code := g.CLIRun("rita", "sessions", "export", id, "-o", file); code != 0 {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var x recorder.Export
	if err := json.Unmarshal(b, &x); err != nil || x.Session != id || len(x.Keys) != 1 || x.Keys[0].Fingerprint != fp || len(x.Events) != rep.Events {
		t.Fatalf("export file: %v\n%s", err, b)
	}
	// Offline: no server, no token.
	offline := func(args ...string) (string, string, int) {
		cmd := exec.Command(g.Bin, append([]string{"sessions", "verify", "--file", file}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}
	if stdout, stderr, code := offline(); code != 0 || !strings.Contains(stdout, id+": ok") || !strings.Contains(stderr, fp) {
		t.Fatalf("verify --file: exit %d\n%s%s", code, stdout, stderr)
	}
	if stdout, stderr, code := offline("--key", fp); code != 0 {
		t.Fatalf("verify --file --key %s: exit %d\n%s%s", fp, code, stdout, stderr)
	}
	pub := filepath.Join(t.TempDir(), "gw.pub")
	if err := os.WriteFile(pub, []byte(keys[0].SSH+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if stdout, stderr, code := offline("--key", pub); code != 0 {
		t.Fatalf("verify --file --key %s: exit %d\n%s%s", pub, code, stdout, stderr)
	}
	if _, stderr, code := offline("--key", "SHA256:somebodyelse"); code != 1 || !strings.Contains(stderr, "no such key") {
		t.Fatalf("verify --file with another pinned key: exit %d\n%s", code, stderr)
	}

	// Alter the denied DELETE into a SELECT in the file: caught at its seq.
	var seq uint64
	for _, raw := range x.Events {
		var ev recorder.Event
		_ = json.Unmarshal(raw, &ev)
		if ev.Statement != nil && strings.HasPrefix(ev.Statement.Text, "delete") {
			seq = ev.Seq
		}
	}
	altered := bytes.Replace(b, []byte(`"text":"delete from orders"`), []byte(`"text":"select from orders"`), 1)
	if seq == 0 || bytes.Equal(altered, b) {
		t.Fatalf("no delete statement in the export:\n%s", b)
	}
	if err := os.WriteFile(file, altered, 0o644); err != nil {
		t.Fatal(err)
	}
	wantLine := id + ": FAILED at seq " + strconv.FormatUint(seq, 10) + ": hash does not match"
	if stdout, stderr, code := offline(); code != 1 || !strings.Contains(stdout, wantLine) || !strings.Contains(stderr, "failed verification") {
		t.Fatalf("verify of an altered file: exit %d, want 1 and %q\n%s%s", code, wantLine, stdout, stderr)
	}
}

// TestRecorderGatewayKilled kills the gateway with SIGKILL in the middle of
// a session. The restarted gateway knows its previous process stopped (its
// data directory says so) and marks the session interrupted at once, with
// a signed note saying who noticed and when: the list shows it
// interrupted, not open forever, and verify reports it intact but
// interrupted (exit 3), not tampered.
func TestRecorderGatewayKilled(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-11: crash", "--access", "write")
	conn := connectPgx(t, g, "agent-1", iss.Token)
	ctx := context.Background()
	for _, q := range []string{"select 1", "insert into customers(name, email) values ('Kim', 'kim@example.com')"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	g.Kill()
	if _, err := conn.Exec(ctx, "select 2"); err == nil {
		t.Fatal("the session outlived the gateway")
	}
	g.Restart()

	s := waitInterrupted(t, g, "rita", 15*time.Second)
	id := s.Session
	if s.End == nil || s.InterruptedBy == "" || s.Interrupted == nil || !strings.Contains(s.Interrupted.Reason, "successor on the same data directory") {
		t.Fatalf("interrupted session: %+v %+v", s, s.Interrupted)
	}
	stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", id)
	if code != 3 || !strings.Contains(stdout, id+": INTERRUPTED (intact)") || strings.Contains(stdout, "FAILED") {
		t.Fatalf("verify of the cut session: exit %d, want 3\n%s%s", code, stdout, stderr)
	}
	var rep recorder.Report
	_ = json.Unmarshal([]byte(mustCLIJSONRaw(t, g, "sessions", "verify", id)), &rep)
	// start, select 1, the insert (carrying select 1's outcome): each
	// statement is stored before it runs; the insert's outcome may have
	// gone out on a checkpoint before the kill. Then the note.
	if rep.Status != recorder.VerifyInterrupted || rep.FirstBad != 0 || rep.LastSeq < 3 || rep.Interrupted == nil || rep.Interrupted.LastSeq != rep.LastSeq {
		t.Fatalf("verify --json: %+v", rep)
	}
	if _, _, code := g.CLIRun("rita", "sessions", "verify", "--all"); code != 3 {
		t.Fatalf("verify --all with only an interrupted session: exit %d, want 3", code)
	}
	show := g.MustCLI("rita", "sessions", "show", id)
	if !strings.Contains(show, "("+recorder.StatusInterrupted+")") || !strings.Contains(show, "session interrupted after seq") {
		t.Fatalf("sessions show:\n%s", show)
	}
	t.Logf("sessions list:\n%s\nsessions show:\n%s\nsessions verify:\n%s", g.MustCLI("rita", "sessions", "list"), show, stdout)

	// New sessions on the restarted gateway verify.
	conn2 := connectPgx(t, g, "agent-1", iss.Token)
	if _, err := conn2.Exec(ctx, "select 3"); err != nil {
		t.Fatal(err)
	}
	conn2.Close(ctx)
	var list []recorder.Summary
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
		if len(list) == 2 && list[0].Status == recorder.StatusEnded || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", list[0].Session); code != 0 {
		t.Fatalf("verify of a session after the restart: exit %d\n%s%s", code, stdout, stderr)
	}
}

// waitInterrupted waits until agent-1's only session is listed as
// interrupted (asking as identity on g) and returns it.
func waitInterrupted(t *testing.T, g *gateway, identity string, within time.Duration) recorder.Summary {
	t.Helper()
	deadline := time.Now().Add(within)
	var list []recorder.Summary
	for time.Now().Before(deadline) {
		g.CLIJSON(&list, identity, "sessions", "list", "--agent", "agent-1")
		if len(list) == 1 && list[0].Status == recorder.StatusInterrupted {
			return list[0]
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no interrupted session within %s: %+v\n%s", within, list, g.Log())
	return recorder.Summary{}
}

// mustCLIJSONRaw runs a CLI command with --json whose exit status may be
// non-zero and returns its stdout.
func mustCLIJSONRaw(t *testing.T, g *gateway, args ...string) string {
	t.Helper()
	stdout, _, _ := g.CLIRun("rita", append(args, "--json")...)
	return stdout
}
