package console

import (
	"bufio"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/control"
)

// TestRequestExpiresFromQueue: a request past grants.request_ttl leaves
// the queue at its deadline, announced on the event stream by the hub's
// timer (no change in the bucket), and its page says it expired, without
// the forms; a form sent anyway is refused.
func TestRequestExpiresFromQueue(t *testing.T) {
	e := newEnv(t)
	e.cfg.Grants.RequestTTL = 2 * time.Second
	b := e.signIn("alice-tok")
	req, _ := http.NewRequest("GET", e.srv.URL+"/ui/events", nil)
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine(t, lines, ": connected")
	g := e.request("agent-1", "INC-9 stale", control.GrantSpec{})
	waitLine(t, lines, "event: grants")
	if _, body := e.get(b, "/ui/requests?part=queue"); !strings.Contains(body, g.ID) {
		t.Fatalf("the queue lacks the new request %s: %q", g.ID, body)
	}
	if _, body := e.get(b, "/ui/requests/"+g.ID); !strings.Contains(body, `id="approve-form"`) {
		t.Fatalf("a pending request's page has no approval form")
	}
	waitLine(t, lines, "event: grants")
	if left := time.Until(g.RequestExpiresAt); left > 100*time.Millisecond {
		t.Errorf("event %s before the request's deadline", left)
	}
	if _, body := e.get(b, "/ui/requests?part=queue"); strings.Contains(body, g.ID) {
		t.Errorf("the queue still shows %s after its deadline: %q", g.ID, body)
	}
	_, body := e.get(b, "/ui/requests/"+g.ID)
	if !strings.Contains(body, "Expired at") || !strings.Contains(body, "the agent must request again") ||
		strings.Contains(body, `id="approve-form"`) || strings.Contains(body, `id="deny-form"`) {
		t.Errorf("the expired request's page: %q", body)
	}
	if _, body := e.get(b, "/ui/requests/"+g.ID+"?part=status"); !strings.Contains(body, "Expired at") {
		t.Errorf("the live status line of an expired request: %q", body)
	}
	if resp := e.post(b, "/ui/requests/"+g.ID+"/approve", url.Values{"ttl": {"1h"}}); resp.StatusCode != http.StatusConflict {
		t.Errorf("approving an expired request from the console: %s, want 409", resp.Status)
	}
}
