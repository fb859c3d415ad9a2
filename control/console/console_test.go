package console

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/recorder"
)

func tokenHash(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

func testConfig(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(`
listen: { postgres: 127.0.0.1:1, http: 127.0.0.1:2 }
grants: { max_ttl: 8h }
identities:
  - { name: agent-1, role: agent, token_sha256: "` + tokenHash("agent-tok") + `" }
  - { name: agent-2, role: agent, token_sha256: "` + tokenHash("agent2-tok") + `" }
  - { name: alice, role: approver, token_sha256: "` + tokenHash("alice-tok") + `" }
  - { name: rita, role: reviewer, token_sha256: "` + tokenHash("rita-tok") + `" }
  - { name: ops, role: admin, token_sha256: "` + tokenHash("ops-tok") + `" }
resources:
  - { name: demo-pg, protocol: postgres, address: "127.0.0.1:5432", database: app, user: postgres, auth: { type: password, password_env: X } }
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// env is a console on a real embedded JetStream, served by httptest with
// the API beside it: the grant store, a recorder, its reader and session
// index, and the console's own store.
type env struct {
	t     testing.TB
	cfg   *config.Config
	svc   *control.Service
	c     *Console
	rec   *recorder.Recorder
	rd    *recorder.Reader
	index *recorder.Index
	srv   *httptest.Server
	mu    sync.Mutex
	now   time.Time // the console store's clock; zero: real time
	logs  strings.Builder
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	store, err := control.OpenStore(ctx, nc.NC, nc.JS, control.StoreOptions{Bucket: "grants", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	cfg := testConfig(t)
	cs, err := OpenStore(ctx, nc.JS, cfg.Console.Bucket, 1, cfg.Console.SessionLifetime)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := recorder.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := recorder.New(ctx, nc.JS, recorder.Options{Stream: "AIRLOCK_EVENTS", Gateway: "gw-test", Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.Close)
	index := recorder.NewIndex(nc.JS, recorder.IndexOptions{Stream: "AIRLOCK_EVENTS"})
	ictx, icancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = index.Run(ictx) }()
	t.Cleanup(func() { icancel(); <-done })
	holds, err := control.OpenHoldStore(ctx, nc.JS, control.HoldStoreOptions{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cfg: cfg, svc: &control.Service{Store: store, Config: cfg, Holds: holds}, rec: rec, index: index,
		rd: recorder.NewReader(nc.JS, "AIRLOCK_EVENTS", "")}
	cs.now = func() time.Time {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.now.IsZero() {
			return time.Now().UTC()
		}
		return e.now
	}
	c, err := New(Options{Config: cfg, Service: e.svc, Sessions: e.rd, Store: cs, Index: index,
		Keys: []recorder.PublicKey{signer.Public()}, Stream: "AIRLOCK_EVENTS", Log: testLogger(&e.logs, &e.mu)})
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	api := &control.API{Service: e.svc, Console: c, Sessions: e.rd, Index: index}
	mux := http.NewServeMux()
	mux.Handle("/", api.Handler())
	mux.Handle("/ui/", c.Handler())
	mux.Handle("GET /{$}", c.Handler())
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	t.Cleanup(c.Close)
	return e
}

func (e *env) setNow(t time.Time) {
	e.mu.Lock()
	e.now = t
	e.mu.Unlock()
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see each answer.
func (e *env) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// signIn signs a new browser in with a pasted token.
func (e *env) signIn(tok string) *http.Client {
	e.t.Helper()
	b := e.browser()
	resp := e.post(b, "/ui/signin", url.Values{"token": {tok}})
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("sign-in with token: %s", resp.Status)
	}
	return b
}

func (e *env) get(b *http.Client, path string) (*http.Response, string) {
	e.t.Helper()
	resp, err := b.Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// post sends a form as a same-origin browser would.
func (e *env) post(b *http.Client, path string, form url.Values) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Origin", e.srv.URL)
	resp, err := b.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (e *env) request(agent, task string, spec control.GrantSpec) *authz.Grant {
	e.t.Helper()
	spec.Resource, spec.Task = "demo-pg", task
	iss, err := e.svc.Request(context.Background(), agent, spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return iss.Grant
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	e := newEnv(t)
	b := e.signIn("alice-tok")
	for _, path := range []string{"/", "/ui/signin", "/ui/requests", "/ui/nope", "/ui/assets/vendor/htmx.min.js", "/ui/signin/junk", "/ui/grants"} {
		resp, _ := e.get(b, path)
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self';", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'", "object-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "'unsafe-eval'") {
			t.Errorf("%s: CSP allows inline or eval: %q", path, csp)
		}
		for k, v := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", path, k, h.Get(k), v)
			}
		}
		if !strings.HasPrefix(path, "/ui/assets/") && h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q, want no-store", path, h.Get("Cache-Control"))
		}
	}
	if resp, _ := e.get(e.browser(), "/"); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("/ answered %s to %q, want 302 to /ui/", resp.Status, resp.Header.Get("Location"))
	}
}

func TestTemplatesHaveNoInlineScriptOrStyle(t *testing.T) {
	names := []string{"layout.html", "partials.html"}
	for n := range (&Console{pages: nil}).requiredSet() {
		names = append(names, n+".html")
	}
	for _, n := range names {
		b, err := templateFS.ReadFile("templates/" + n)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ToLower(string(b))
		for _, bad := range []string{"<script>", "<style", " style=", " onclick=", " onerror=", " onload=", " onsubmit=", "javascript:"} {
			if strings.Contains(s, bad) {
				t.Errorf("templates/%s contains %q: CSP forbids inline script and style", n, bad)
			}
		}
	}
}

func TestSignInWithToken(t *testing.T) {
	e := newEnv(t)
	// Not signed in: pages send to the sign-in page, actions are refused.
	resp, _ := e.get(e.browser(), "/ui/requests")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/signin?next=") {
		t.Fatalf("anonymous /ui/requests: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if resp := e.post(e.browser(), "/ui/requests/gr_x/approve", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous approve: %s, want 401", resp.Status)
	}
	// A wrong token.
	if resp := e.post(e.browser(), "/ui/signin", url.Values{"token": {"nope"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong token: %s, want 401", resp.Status)
	}
	b := e.browser()
	resp = e.post(b, "/ui/signin", url.Values{"token": {"alice-tok"}, "next": {"//evil.example/x"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("sign-in: %s to %q (an off-site next must be ignored)", resp.Status, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == CookieName {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.Secure {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Lax, Path=/, not Secure over plain HTTP", ck)
	}
	if raw, _ := b64len(ck.Value); raw < 16 {
		t.Errorf("session id has %d bytes, want at least 16", raw)
	}
	resp, body := e.get(b, "/ui/requests")
	if resp.StatusCode != 200 || !strings.Contains(body, "alice") {
		t.Fatalf("signed in /ui/requests: %s", resp.Status)
	}
	if strings.Contains(body, "alice-tok") || strings.Contains(body, ck.Value) {
		t.Error("the page shows the token or the session id")
	}
	// Sign out ends the session for good, also for a copy of the cookie.
	stolen := e.browser()
	u, _ := url.Parse(e.srv.URL)
	stolen.Jar.SetCookies(u, []*http.Cookie{{Name: CookieName, Value: ck.Value}})
	if resp := e.post(b, "/ui/signout", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %s", resp.Status)
	}
	if resp, _ := e.get(stolen, "/ui/requests"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after sign-out the old cookie still works: %s", resp.Status)
	}
	e.mu.Lock()
	logs := e.logs.String()
	e.mu.Unlock()
	for _, secret := range []string{"alice-tok", ck.Value} {
		if strings.Contains(logs, secret) {
			t.Errorf("a log line holds a secret %q", secret)
		}
	}
}

func b64len(s string) (int, error) {
	return len(s) * 6 / 8, nil
}

func TestSignInLinkSingleUseAndExpiry(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice := e.cfg.Identity("alice")
	link, exp, err := e.c.NewLink(ctx, alice, e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d < 50*time.Second || d > 61*time.Second {
		t.Errorf("link valid for %s, want 60s", d)
	}
	path := strings.TrimPrefix(link, e.srv.URL)
	secret := strings.TrimPrefix(path, "/ui/signin/")
	if n, _ := b64len(secret); n < 16 {
		t.Fatalf("link secret has %d bytes", n)
	}
	// GET (a link scanner, or the person) does not spend it.
	b := e.browser()
	for range 2 {
		resp, body := e.get(b, path)
		if resp.StatusCode != 200 || !strings.Contains(body, "Continue as alice") {
			t.Fatalf("GET link: %s", resp.Status)
		}
	}
	resp := e.post(b, path, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("POST link: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if resp, _ := e.get(b, "/ui/requests"); resp.StatusCode != 200 {
		t.Fatalf("signed in by link: %s", resp.Status)
	}
	// Used: refused, on GET and POST.
	if resp := e.post(e.browser(), path, nil); resp.StatusCode != http.StatusGone {
		t.Errorf("reused link: %s, want 410", resp.Status)
	}
	if resp, _ := e.get(e.browser(), path); resp.StatusCode != http.StatusGone {
		t.Errorf("GET of a used link: %s, want 410", resp.Status)
	}
	// Expired.
	link2, _, _ := e.c.NewLink(ctx, alice, e.srv.URL)
	e.setNow(time.Now().Add(61 * time.Second))
	if resp := e.post(e.browser(), strings.TrimPrefix(link2, e.srv.URL), nil); resp.StatusCode != http.StatusGone {
		t.Errorf("expired link: %s, want 410", resp.Status)
	}
	e.setNow(time.Time{})
	// Racing: of many tries of one link, exactly one signs in.
	link3, _, _ := e.c.NewLink(ctx, alice, e.srv.URL)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.c.store.UseLink(ctx, strings.TrimPrefix(link3, e.srv.URL+"/ui/signin/")); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d of 8 concurrent uses of one link succeeded, want 1", wins)
	}
	// Junk never reaches the bucket and is refused.
	if resp := e.post(e.browser(), "/ui/signin/"+strings.Repeat("A", 43), nil); resp.StatusCode != http.StatusGone {
		t.Errorf("forged link: %s, want 410", resp.Status)
	}
}

func TestLinksEndpoint(t *testing.T) {
	e := newEnv(t)
	c := &control.Client{Server: e.srv.URL, Token: "rita-tok"}
	l, err := c.ConsoleLink(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.URL, e.srv.URL+"/ui/signin/") {
		t.Fatalf("link %q: want it under %s", l.URL, e.srv.URL)
	}
	e.cfg.Console.PublicURL = "https://airlock.example.com/"
	l, err = c.ConsoleLink(context.Background())
	if err != nil || !strings.HasPrefix(l.URL, "https://airlock.example.com/ui/signin/") {
		t.Fatalf("with public_url: %q, %v", l.URL, err)
	}
	if _, err := (&control.Client{Server: e.srv.URL, Token: "bad"}).ConsoleLink(context.Background()); err == nil {
		t.Error("a link was made for an unknown token")
	}
}

func TestSessionIdleAndAbsoluteExpiry(t *testing.T) {
	e := newEnv(t)
	t0 := time.Now().UTC()
	e.setNow(t0)
	b := e.signIn("alice-tok")
	// Used every 20 minutes, the session lives past the idle timeout...
	for i := 1; i <= 3; i++ {
		e.setNow(t0.Add(time.Duration(i) * 20 * time.Minute))
		if resp, _ := e.get(b, "/ui/requests"); resp.StatusCode != 200 {
			t.Fatalf("after %d minutes of use: %s", i*20, resp.Status)
		}
	}
	// ...but not 31 minutes idle.
	e.setNow(t0.Add(60*time.Minute + 31*time.Minute))
	if resp, _ := e.get(b, "/ui/requests"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("31 minutes idle: %s, want a redirect to sign in", resp.Status)
	}
	// Absolute: 12h, however busy.
	e.setNow(t0)
	b = e.signIn("alice-tok")
	for d := 25 * time.Minute; d < 12*time.Hour; d += 25 * time.Minute {
		e.setNow(t0.Add(d))
		if resp, _ := e.get(b, "/ui/requests"); resp.StatusCode != 200 {
			t.Fatalf("busy session ended after %s: %s", d, resp.Status)
		}
	}
	e.setNow(t0.Add(12*time.Hour + time.Minute))
	if resp, _ := e.get(b, "/ui/requests"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("past session_lifetime: %s, want a redirect to sign in", resp.Status)
	}
}

func TestCrossOriginPostRefused(t *testing.T) {
	e := newEnv(t)
	b := e.signIn("alice-tok")
	g := e.request("agent-1", "INC-1", control.GrantSpec{})
	for _, h := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Origin": "https://evil.example"},
	} {
		req, _ := http.NewRequest("POST", e.srv.URL+"/ui/requests/"+g.ID+"/approve", strings.NewReader(""))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := b.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("approve with %v: %s, want 403", h, resp.Status)
		}
	}
	if got, _ := e.svc.Store.Get(g.ID); got.State != authz.StatePending {
		t.Errorf("after cross-origin posts the request is %s", got.State)
	}
	// Sign-out cannot be forced either.
	req, _ := http.NewRequest("POST", e.srv.URL+"/ui/signout", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, _ := b.Do(req)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site sign-out: %s", resp.Status)
	}
}

func TestRoles(t *testing.T) {
	e := newEnv(t)
	mine := e.request("agent-1", "mine", control.GrantSpec{})
	theirs := e.request("agent-2", "theirs", control.GrantSpec{})
	rita, agent := e.signIn("rita-tok"), e.signIn("agent-tok")
	for _, p := range []string{"/ui/requests", "/ui/requests/" + mine.ID, "/ui/grants", "/ui/grants/" + mine.ID} {
		if resp, _ := e.get(rita, p); resp.StatusCode != http.StatusForbidden {
			t.Errorf("reviewer GET %s: %s, want 403", p, resp.Status)
		}
	}
	for _, a := range []string{"approve", "deny"} {
		if resp := e.post(rita, "/ui/requests/"+mine.ID+"/"+a, url.Values{"reason": {"x"}}); resp.StatusCode != http.StatusForbidden {
			t.Errorf("reviewer %s: %s, want 403", a, resp.Status)
		}
		if resp := e.post(agent, "/ui/requests/"+mine.ID+"/"+a, url.Values{"reason": {"x"}}); resp.StatusCode != http.StatusForbidden {
			t.Errorf("agent %s: %s, want 403", a, resp.Status)
		}
	}
	if got, _ := e.svc.Store.Get(mine.ID); got.State != authz.StatePending {
		t.Fatalf("request is %s after refused decisions", got.State)
	}
	// The agent sees its own request, read-only, and not another's.
	resp, body := e.get(agent, "/ui/requests")
	if resp.StatusCode != 200 || !strings.Contains(body, mine.ID) || strings.Contains(body, theirs.ID) {
		t.Errorf("agent's list: %s; has own %v, has other's %v", resp.Status, strings.Contains(body, mine.ID), strings.Contains(body, theirs.ID))
	}
	if resp, body := e.get(agent, "/ui/requests/"+mine.ID); resp.StatusCode != 200 || strings.Contains(body, "approve-form") {
		t.Errorf("agent's own request: %s, approve form shown: %v", resp.Status, strings.Contains(body, "approve-form"))
	}
	if resp, _ := e.get(agent, "/ui/requests/"+theirs.ID); resp.StatusCode != http.StatusNotFound {
		t.Errorf("agent opening another agent's request: %s, want 404", resp.Status)
	}
	if resp, _ := e.get(agent, "/ui/grants"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("agent /ui/grants: %s, want 403", resp.Status)
	}
	// Admin and approver see both, with the forms.
	for _, tok := range []string{"alice-tok", "ops-tok"} {
		_, body := e.get(e.signIn(tok), "/ui/requests/"+theirs.ID)
		if !strings.Contains(body, "approve-form") || !strings.Contains(body, "deny-form") {
			t.Errorf("%s sees no approve/deny forms", tok)
		}
	}
	// A role changed in the config ends the sessions it opened.
	e.cfg.Identities[3].Role = config.RoleApprover // rita
	if resp, _ := e.get(rita, "/ui/requests"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after a role change the old session still works: %s", resp.Status)
	}
}

func TestApproveNarrowerAndDeny(t *testing.T) {
	e := newEnv(t)
	b := e.signIn("alice-tok")
	g := e.request("agent-1", "INC-7", control.GrantSpec{TTL: "2h", Access: "write", Scope: authz.Scope{Tables: []string{"public.orders", "public.customers"}}})
	// Wider than asked: refused, nothing changes.
	for _, f := range []url.Values{
		{"ttl": {"4h"}, "tables_shown": {"1"}, "table": {"public.orders"}},
		{"ttl": {"1h"}, "tables_shown": {"1"}, "table": {"public.orders", "public.secrets"}},
		{"ttl": {"1h"}, "tables_shown": {"1"}},
	} {
		if resp := e.post(b, "/ui/requests/"+g.ID+"/approve", f); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("approve %v: %s, want 400", f, resp.Status)
		}
	}
	if got, _ := e.svc.Store.Get(g.ID); got.State != authz.StatePending {
		t.Fatalf("request %s after refused approvals", got.State)
	}
	resp := e.post(b, "/ui/requests/"+g.ID+"/approve", url.Values{"ttl": {"30m"}, "tables_shown": {"1"}, "table": {"public.orders"}, "comment": {"only orders, INC-7"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/grants/"+g.ID) {
		t.Fatalf("approve: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	got, _ := e.svc.Store.Get(g.ID)
	if got.State != authz.StateActive || got.DecidedBy != "alice" || got.Comment != "only orders, INC-7" ||
		time.Duration(got.TTL) != 30*time.Minute || len(got.Scope.Tables) != 1 || got.Scope.Tables[0] != "public.orders" {
		t.Fatalf("approved grant: %+v", got)
	}
	if got.Asked == nil || time.Duration(got.Asked.TTL) != 2*time.Hour || len(got.Asked.Tables) != 2 {
		t.Errorf("what was asked is not kept: %+v", got.Asked)
	}
	if d := time.Until(got.ExpiresAt); d > 31*time.Minute || d < 29*time.Minute {
		t.Errorf("expires in %s, want 30m", d)
	}
	// Deny needs a reason.
	g2 := e.request("agent-1", "INC-8", control.GrantSpec{})
	if resp := e.post(b, "/ui/requests/"+g2.ID+"/deny", url.Values{"reason": {"  "}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("deny without reason: %s, want 400", resp.Status)
	}
	if resp := e.post(b, "/ui/requests/"+g2.ID+"/deny", url.Values{"reason": {"not during the freeze"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("deny: %s", resp.Status)
	}
	if got, _ := e.svc.Store.Get(g2.ID); got.State != authz.StateDenied || got.Comment != "not during the freeze" {
		t.Errorf("denied: %+v", got)
	}
	// Revoke from the grants page.
	if resp, body := e.get(b, "/ui/grants"); resp.StatusCode != 200 || !strings.Contains(body, g.ID) {
		t.Fatalf("grants page: %s, lists %s: %v", resp.Status, g.ID, strings.Contains(body, g.ID))
	}
	if resp := e.post(b, "/ui/grants/"+g.ID+"/revoke", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: %s", resp.Status)
	}
	if got, _ := e.svc.Store.Get(g.ID); got.State != authz.StateRevoked || got.RevokedBy != "alice" {
		t.Errorf("revoked: %+v", got)
	}
}

func TestTaskTextIsEscaped(t *testing.T) {
	e := newEnv(t)
	task := `<script>alert(1)</script> "><img src=x onerror=alert(2)>`
	g := e.request("agent-1", task, control.GrantSpec{})
	b := e.signIn("alice-tok")
	for _, p := range []string{"/ui/requests", "/ui/requests/" + g.ID, "/ui/requests?part=queue"} {
		_, body := e.get(b, p)
		if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
			t.Errorf("%s: task text rendered as markup", p)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s: escaped task text missing", p)
		}
	}
}

func TestEventsStream(t *testing.T) {
	e := newEnv(t)
	b := e.signIn("alice-tok")
	req, _ := http.NewRequest("GET", e.srv.URL+"/ui/events", nil)
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	g := e.request("agent-1", "live", control.GrantSpec{})
	waitLine(t, lines, "event: grants")
	// An expiry is no change in the bucket; the timer announces it.
	if _, err := e.svc.DecideWith(context.Background(), g.ID, "approve", "alice", control.DecideOptions{TTL: "2s"}); err != nil {
		t.Fatal(err)
	}
	waitLine(t, lines, "event: grants")
	start := time.Now()
	waitLine(t, lines, "event: grants")
	if d := time.Since(start); d < time.Second {
		t.Errorf("expiry event after %s, want about 2s after approval", d)
	}
	// Anonymous: no stream.
	if resp, _ := e.get(e.browser(), "/ui/events"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("anonymous /ui/events: %s", resp.Status)
	}
}

func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended before %q", want)
			}
			if l == want {
				return
			}
		case <-timeout:
			t.Fatalf("no %q within 10s", want)
		}
	}
}

func testLogger(w *strings.Builder, mu *sync.Mutex) *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{w, mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	w  *strings.Builder
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestLivePartAfterSignOutRedirects(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest("GET", e.srv.URL+"/ui/requests?part=queue", nil)
	req.Header.Set("HX-Request", "true")
	resp, err := e.browser().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("HX-Redirect") != "/ui/signin" {
		t.Errorf("htmx refresh without a session: %s, HX-Redirect %q", resp.Status, resp.Header.Get("HX-Redirect"))
	}
}

func TestLinkNextAndPlayerCSP(t *testing.T) {
	e := newEnv(t)
	g := e.request("agent-1", "INC-5", control.GrantSpec{})
	link, _, err := e.c.NewLink(context.Background(), e.cfg.Identity("alice"), e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	path := strings.TrimPrefix(link, e.srv.URL)
	b := e.browser()
	for _, next := range []string{"https://evil.example/", "/ui/requests/" + g.ID} {
		_, body := e.get(b, path+"?next="+url.QueryEscape(next))
		if strings.Contains(body, "evil.example") {
			t.Errorf("the link page carries an off-site next %q", next)
		}
	}
	resp := e.post(b, path+"?next="+url.QueryEscape("/ui/requests/"+g.ID), url.Values{"next": {"/ui/requests/" + g.ID}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/requests/"+g.ID {
		t.Errorf("link with next: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if strings.Contains(CSP, "wasm") || !strings.Contains(PlayerCSP, "'wasm-unsafe-eval'") || strings.Contains(PlayerCSP, "'unsafe-eval'") {
		t.Errorf("CSP %q / PlayerCSP %q", CSP, PlayerCSP)
	}
	rec := httptest.NewRecorder()
	usePlayerCSP(rec)
	if rec.Header().Get("Content-Security-Policy") != PlayerCSP {
		t.Error("usePlayerCSP did not set the header")
	}
	if resp, _ := e.get(b, "/ui/assets/vendor/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("asset directory listing: %s", resp.Status)
	}
}

func TestRequestStatusPart(t *testing.T) {
	e := newEnv(t)
	g := e.request("agent-1", "INC-6", control.GrantSpec{})
	b := e.signIn("alice-tok")
	if _, body := e.get(b, "/ui/requests/"+g.ID+"?part=status"); strings.Contains(body, "decided") {
		t.Errorf("a pending request's status part says decided: %q", body)
	}
	if _, err := e.svc.DecideWith(context.Background(), g.ID, "deny", "bob", control.DecideOptions{Comment: "<b>no</b>"}); err != nil {
		t.Fatal(err)
	}
	_, body := e.get(b, "/ui/requests/"+g.ID+"?part=status")
	if !strings.Contains(body, `id="decided"`) || !strings.Contains(body, "Denied by bob") || !strings.Contains(body, "&lt;b&gt;no&lt;/b&gt;") || strings.Contains(body, "<html") {
		t.Errorf("status part after a denial elsewhere: %q", body)
	}
}
