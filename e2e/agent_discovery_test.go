package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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

// TestResources: an agent lists the resources it may request, with the
// access each offers and how to connect (airlock resources, its --json,
// GET /v1/resources), and a request naming a resource that is not one is
// told the closest name and where the names are listed.
func TestResources(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})

	text := g.MustCLI("agent-1", "resources")
	for _, want := range []string{
		"NAME", "demo-pg", "postgres", "read, write, ddl, admin", "shop-mysql", "mysql",
		`psql "host=127.0.0.1 port=` + strings.Split(g.PostgresAddr, ":")[1] + ` user=agent-1 dbname=demo-pg sslmode=require"`,
		"mysql -h 127.0.0.1 -P " + strings.Split(g.MySQLAddr, ":")[1] + " -u agent-1 -p shop-mysql",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("airlock resources lacks %q:\n%s", want, text)
		}
	}
	var rs []control.Resource
	g.CLIJSON(&rs, "agent-1", "resources")
	if len(rs) != 2 || rs[0].Name != "demo-pg" || rs[1].Name != "shop-mysql" || rs[1].Protocol != "mysql" ||
		strings.Join(rs[0].Access, ",") != "read,write,ddl,admin" {
		t.Errorf("resources --json: %+v", rs)
	}
	// Every identity may list them; nobody without a token.
	g.CLIJSON(&rs, "rita", "resources")
	if len(rs) != 2 {
		t.Errorf("reviewer's resources: %+v", rs)
	}
	resp, err := http.Get(g.URL + "/v1/resources")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/resources without a token: %s", resp.Status)
	}

	_, err = g.CLI("agent-1", "request", "--resource", "shop-mysq", "--task", "INC-9 orders")
	if err == nil || !strings.Contains(err.Error(), `unknown resource "shop-mysq": did you mean shop-mysql?`) ||
		!strings.Contains(err.Error(), "airlock resources lists") || strings.Contains(err.Error(), "gateway config") {
		t.Errorf("request for a misspelt resource: %v", err)
	}
	// The CLI puts its prefix once.
	if err != nil && strings.Contains(err.Error(), "airlock: airlock") {
		t.Errorf("doubled prefix: %v", err)
	}
	_, err = g.CLI("agent-1", "request", "--resource", "billing", "--task", "INC-9 orders")
	if err == nil || strings.Contains(err.Error(), "did you mean") || !strings.Contains(err.Error(), "airlock resources lists") {
		t.Errorf("request for an unknown resource with no close name: %v", err)
	}
}

// waitRun is an `airlock request --wait` running in the background.
type waitRun struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	mu     sync.Mutex
	stderr strings.Builder
	id     chan string
	done   chan struct{}
	code   int
	ended  time.Time
}

// startWait runs airlock request --wait as agent-1 and returns once the
// request is filed (its id read from stderr).
func (g *gateway) startWait(t *testing.T, args ...string) (*waitRun, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	w := &waitRun{id: make(chan string, 1), done: make(chan struct{})}
	w.cmd = g.Command(ctx, "agent-1", append([]string{"request", "--wait"}, args...)...)
	w.cmd.Stdout = &w.stdout
	pr, err := w.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	idRe := regexp.MustCompile(`request (gr_[a-z2-7]+) filed`)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			w.mu.Lock()
			w.stderr.WriteString(sc.Text() + "\n")
			w.mu.Unlock()
			if m := idRe.FindStringSubmatch(sc.Text()); m != nil {
				w.id <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, pr)
		err := w.cmd.Wait()
		w.ended = time.Now()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			w.code = ee.ExitCode()
		} else if err != nil {
			w.code = -1
		}
		close(w.done)
	}()
	select {
	case id := <-w.id:
		return w, id
	case <-w.done:
		t.Fatalf("airlock request --wait ended before filing: exit %d\n%s", w.code, w.errText())
	case <-time.After(20 * time.Second):
		t.Fatalf("airlock request --wait filed nothing in 20s:\n%s", w.errText())
	}
	return nil, ""
}

func (w *waitRun) errText() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stderr.String()
}

func (w *waitRun) wait(t *testing.T) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(40 * time.Second):
		t.Fatalf("airlock request --wait still running after 40s:\n%s", w.errText())
	}
}

// TestRequestWait: airlock request --wait blocks until an approver
// decides. Approved, it exits 0 with the token (which then works) on
// stdout, within a moment of the approval: the API's long poll answers
// at once, no polling on a timer. Denied, it exits 3 with the reason;
// with --timeout and no decision, it exits 4, the token still printed.
func TestRequestWait(t *testing.T) {
	g := startGateway(t, gatewayOptions{})

	// Approved.
	w, id := g.startWait(t, "--resource", "demo-pg", "--task", "INC-31 count orders")
	time.Sleep(1500 * time.Millisecond) // it waits, undecided
	select {
	case <-w.done:
		t.Fatalf("--wait returned before any decision: exit %d\n%s", w.code, w.errText())
	default:
	}
	approved := time.Now()
	g.MustCLI("alice", "grants", "approve", id, "--comment", "go ahead")
	w.wait(t)
	if w.code != 0 {
		t.Fatalf("approved: exit %d\n%s", w.code, w.errText())
	}
	if lag := w.ended.Sub(approved); lag > 3*time.Second {
		t.Errorf("--wait returned %s after the approval; the long poll should answer at once", lag)
	}
	token := strings.TrimSpace(w.stdout.String())
	if strings.ContainsAny(token, " \n") || len(token) < 20 {
		t.Fatalf("stdout is not just the token: %q", w.stdout.String())
	}
	if s := w.errText(); !strings.Contains(s, "approved by alice") || !strings.Contains(s, "go ahead") {
		t.Errorf("progress on stderr:\n%s", s)
	}
	if out, err := g.psql("agent-1", token, "demo-pg", "select 1;", "-At"); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("psql with the token --wait printed: %v\n%s", err, out)
	}

	// Denied: exit 3 and the reason.
	w, id = g.startWait(t, "--resource", "demo-pg", "--task", "INC-32 drop orders", "--access", "ddl")
	g.MustCLI("alice", "grants", "deny", id, "--reason", "no DDL on Fridays")
	w.wait(t)
	if w.code != 3 || !strings.Contains(w.errText(), "request "+id+" denied by alice: no DDL on Fridays") || w.stdout.Len() != 0 {
		t.Errorf("denied: exit %d, stdout %q, stderr:\n%s", w.code, w.stdout.String(), w.errText())
	}
	if strings.Contains(w.errText(), "airlock: airlock") || strings.Contains(w.errText(), "exit status") {
		t.Errorf("denial message:\n%s", w.errText())
	}

	// Nobody decides within --timeout: exit 4, still pending, token kept.
	w, id = g.startWait(t, "--resource", "demo-pg", "--task", "INC-33 slow approver", "--timeout", "2s", "--json")
	w.wait(t)
	var iss control.Issued
	if w.code != 4 || !strings.Contains(w.errText(), "still pending after 2s") || json.Unmarshal(w.stdout.Bytes(), &iss) != nil || iss.Token == "" || iss.Grant.ID != id {
		t.Errorf("timeout: exit %d, stdout %q, stderr:\n%s", w.code, w.stdout.String(), w.errText())
	}
	// The request is still pending; approved later, its token works.
	g.MustCLI("alice", "grants", "approve", id)
	if out, err := g.psql("agent-1", iss.Token, "demo-pg", "select 2;", "-At"); err != nil || strings.TrimSpace(out) != "2" {
		t.Errorf("psql with the token of the request approved after --timeout: %v\n%s", err, out)
	}

	// The long poll itself: a decided grant answers at once; a bad wait
	// is refused.
	req, _ := http.NewRequest("GET", g.URL+"/v1/grants/"+id+"?wait=forever", nil)
	req.Header.Set("Authorization", "Bearer "+g.Tokens["agent-1"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("wait=forever: %s", resp.Status)
	}
}

// TestReplayDatabase: airlock sessions replay of a Postgres session (the
// real psql) and of a MySQL one (the real mysql client) prints the
// transcript: statements in time order with their outcome, rows and
// duration, denials marked with rule and reason; export --format
// asciicast writes the same as an asciicast. Before, both said the
// session "has no terminal to replay".
func TestReplayDatabase(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})

	var pg control.Issued
	g.CLIJSON(&pg, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-40 replay me", "--access", "read")
	script := "select count(*) from orders;\ndelete from orders;\nselect * from no_such_table;\nselect 1 as one;\n"
	if out, _ := g.psql("agent-1", pg.Token, "demo-pg", script); !strings.Contains(out, "42501") {
		t.Fatalf("psql:\n%s", out)
	}
	my := g.grantMySQL("agent-1", "INC-41 replay me too", "read")
	if out, err := g.mysqlCLI("agent-1", my.Token, "shop-mysql", "select count(*) from orders;\ndelete from orders;\n"); err == nil || !strings.Contains(out, "airlock") {
		t.Fatalf("mysql: %v\n%s", err, out)
	}

	for _, c := range []struct {
		resource string
		want     []string // in this order
	}{
		{"demo-pg", []string{
			"session start: agent-1 on demo-pg (postgres)",
			"SELECT read: select count(*) from orders", "-> SELECT 1, 1 row, ",
			"DENIED (rule access-level): delete from orders", "why: ",
			"select * from no_such_table", "error: ", "(42P01)",
			"select 1 as one", "-> SELECT 1, 1 row, ",
			"session end: ",
		}},
		{"shop-mysql", []string{
			"session start: agent-1 on shop-mysql (mysql)",
			"select count(*) from orders", "1 row, ",
			"DENIED (rule access-level): delete from orders", "why: ",
			"session end: ",
		}},
	} {
		sid := g.lastSessionID(c.resource)
		out, err := g.CLI("rita", "sessions", "replay", sid)
		if err != nil {
			t.Fatalf("replay of the %s session: %v", c.resource, err)
		}
		t.Logf("airlock sessions replay (%s):\n%s", c.resource, out)
		rest := out
		for _, w := range c.want {
			i := strings.Index(rest, w)
			if i < 0 {
				t.Errorf("replay of the %s session lacks %q (in order) in:\n%s", c.resource, w, out)
				break
			}
			rest = rest[i+len(w):]
		}
		// Every line but continuations starts with its time.
		timeRe := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3}  `)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !timeRe.MatchString(l) && !strings.HasPrefix(l, "              ") {
				t.Errorf("transcript line without a time: %q", l)
			}
		}

		// The asciicast is the transcript, for the console's player.
		file := t.TempDir() + "/s.cast"
		g.MustCLI("rita", "sessions", "export", sid, "--format", "asciicast", "-o", file)
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		var hdr recorder.CastHeader
		if err := json.Unmarshal([]byte(lines[0]), &hdr); err != nil || hdr.Version != 2 || hdr.Width == 0 {
			t.Errorf("cast header of the %s session: %q %v", c.resource, lines[0], err)
		}
		var all strings.Builder
		last := -1.0
		for _, l := range lines[1:] {
			var ev []any
			if err := json.Unmarshal([]byte(l), &ev); err != nil || len(ev) != 3 || ev[1] != "o" {
				t.Fatalf("cast event %q: %v", l, err)
			}
			if at := ev[0].(float64); at < last {
				t.Errorf("cast times go back: %v after %v", at, last)
			} else {
				last = at
			}
			all.WriteString(ev[2].(string))
		}
		if !strings.Contains(all.String(), "DENIED (rule access-level): delete from orders\r\n") {
			t.Errorf("the %s session's cast lacks the denial:\n%s", c.resource, all.String())
		}
	}
}
