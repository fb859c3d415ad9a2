// Package console is airlock's web console, served by the gateway on its
// HTTP listener under /ui/ (docs/console.md).
//
// Pages are rendered on the server with html/template and work without
// JavaScript; htmx (vendored under assets/vendor/) only enhances them, and
// Server-Sent Events on /ui/events tell open pages to refresh a part.
//
// # Adding a page
//
// Register the route in routes (console.go) with handle, which checks the
// signed-in identity's role on every request before the handler runs:
//
//	c.handle("GET /ui/sessions/{id}", roles(config.RoleReviewer, config.RoleAdmin), c.sessionPage)
//
//	func (c *Console) sessionPage(w http.ResponseWriter, r *http.Request, who *config.Identity) {
//		...
//		c.render(w, r, "session", data)
//	}
//
// and add templates/session.html, which defines "title" and "content" (it
// is parsed together with templates/layout.html; render wraps it in the
// layout with the role's navigation). A template named in render but not
// among templates/*.html fails New, not the first request. renderPart
// renders one named template of a page without the layout, for htmx
// swaps. Static files go under assets/ and are served at /ui/assets/.
//
// # Security
//
// Every response carries the headers of securityHeaders (a strict CSP:
// no inline script or style, so pass values to scripts in data-*
// attributes). Every state-changing request passes
// http.CrossOriginProtection; nothing changes state on GET. Sessions are
// random 256-bit cookie values; the bucket keeps only their SHA-256. A
// handler must still check what the identity may see of a resource (an
// agent sees only its own requests).
package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// CookieName is the console session cookie.
const CookieName = "airlock_session"

// Options configures New.
type Options struct {
	Config   *config.Config
	Service  *control.Service
	Sessions control.SessionReader
	Store    *Store
	Log      *slog.Logger
	// Index answers the session list (sessions.go); Keys and Stream are
	// what the API's export carries, for the verify badge and downloads.
	Index  control.SessionIndex
	Keys   []recorder.PublicKey
	Stream string
}

// Console serves the web console.
type Console struct {
	cfg      *config.Config
	svc      *control.Service
	sessions control.SessionReader
	store    *Store
	log      *slog.Logger
	pages    map[string]*template.Template
	mux      *http.ServeMux
	handler  http.Handler
	events   *hub
	index    control.SessionIndex
	keys     []recorder.PublicKey
	stream   string
}

// New parses the templates and sets up the routes; it fails if a template
// is broken or missing.
func New(o Options) (*Console, error) {
	if o.Sessions == nil || o.Index == nil {
		return nil, errors.New("console: a session reader and a session index are required")
	}
	c := &Console{cfg: o.Config, svc: o.Service, sessions: o.Sessions, store: o.Store, log: o.Log, mux: http.NewServeMux(),
		index: o.Index, keys: o.Keys, stream: o.Stream}
	if c.log == nil {
		c.log = slog.Default()
	}
	if err := c.parse(); err != nil {
		return nil, err
	}
	c.events = newHub(c.svc.Store, c.svc.Holds, c.now)
	c.routes()
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusForbidden, "Refused: this request came from another site.")
	}))
	c.handler = securityHeaders(cop.Handler(c.mux))
	return c, nil
}

// Handler serves /ui/ and the redirect of /.
func (c *Console) Handler() http.Handler { return c.handler }

// Close ends the event streams, so an HTTP server shutdown does not wait
// for them.
func (c *Console) Close() { c.events.close() }

// NewLink makes a one-time sign-in link under base (control.ConsoleLinks).
func (c *Console) NewLink(ctx context.Context, who *config.Identity, base string) (string, time.Time, error) {
	secret, exp, err := c.store.NewLink(ctx, who)
	if err != nil {
		return "", time.Time{}, err
	}
	return strings.TrimRight(base, "/") + "/ui/signin/" + secret, exp, nil
}

func (c *Console) now() time.Time {
	if c.svc.Now != nil {
		return c.svc.Now()
	}
	return time.Now().UTC()
}

func roles(rs ...config.Role) []config.Role { return rs }

var (
	approvers = roles(config.RoleApprover, config.RoleAdmin)
	anyone    []config.Role // nil: any signed-in identity
)

func (c *Console) routes() {
	c.mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	sub, _ := fs.Sub(assetFS, "assets")
	c.mux.Handle("GET /ui/assets/", http.StripPrefix("/ui/assets/", assetCache(http.FileServerFS(sub))))
	c.mux.HandleFunc("GET /ui/signin", c.signinPage)
	c.mux.HandleFunc("POST /ui/signin", c.signinToken)
	c.mux.HandleFunc("GET /ui/signin/{secret}", c.linkPage)
	c.mux.HandleFunc("POST /ui/signin/{secret}", c.linkUse)
	c.mux.HandleFunc("POST /ui/signout", c.signout)
	c.handle("GET /ui/{$}", anyone, c.home)
	c.handle("GET /ui/events", anyone, c.serveEvents)
	c.pageRoutes()
	c.holdRoutes()
	c.sessionRoutes()
	c.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "No such page.")
	})
}

// handler is a console page or action for a signed-in identity.
type handler func(w http.ResponseWriter, r *http.Request, who *config.Identity)

// handle registers h for pattern, reachable only by a signed-in identity
// with one of allowed (nil: any role).
func (c *Console) handle(pattern string, allowed []config.Role, h handler) {
	c.mux.Handle(pattern, c.requireRole(allowed, h))
}

type ctxKey struct{}

// requireRole resolves the session cookie to an identity as configured
// now (an identity removed, given another role or a new token since
// sign-in has no session any more) and checks its role.
func (c *Console) requireRole(allowed []config.Role, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := c.identify(r)
		if err != nil {
			c.log.Error("console session lookup failed", "err", err)
			c.fail(w, r, http.StatusServiceUnavailable, "Sessions cannot be read right now; try again in a moment.")
			return
		}
		if who == nil {
			if r.Header.Get("HX-Request") == "true" {
				// A live part refreshing itself: send the whole page to
				// sign in, rather than swap the sign-in form into a list.
				w.Header().Set("HX-Redirect", "/ui/signin")
				c.fail(w, r, http.StatusUnauthorized, "Your console session has ended; sign in again.")
				return
			}
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				clearCookie(w, r, c.cfg)
				http.Redirect(w, r, "/ui/signin?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, http.StatusUnauthorized, "Your console session has ended; sign in again.")
			return
		}
		if allowed != nil && !slices.Contains(allowed, who.Role) {
			c.fail(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, who)), http.StatusForbidden,
				fmt.Sprintf("%s has role %s; this page needs %s.", who.Name, who.Role, control.RoleList(allowed)))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, who)), who)
	})
}

// identify returns the signed-in identity, nil when there is none.
func (c *Console) identify(r *http.Request) (*config.Identity, error) {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return nil, nil
	}
	ss, err := c.store.Session(r.Context(), ck.Value, c.cfg.Console.IdleTimeout, c.cfg.Console.SessionLifetime)
	if errors.Is(err, ErrNoSession) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	who := c.cfg.Identity(ss.Name)
	if who == nil || who.Role != ss.Role || tokenFP(who) != ss.TokenFP {
		return nil, nil
	}
	return who, nil
}

func identityFrom(r *http.Request) *config.Identity {
	who, _ := r.Context().Value(ctxKey{}).(*config.Identity)
	return who
}

// home sends each role to its main page.
func (c *Console) home(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	to := "/ui/requests"
	if who.Role == config.RoleReviewer {
		to = "/ui/sessions"
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// navItem is one link of the layout's navigation.
type navItem struct {
	Href, Label string
	Current     bool
	// Count is shown beside the label when set (pending holds).
	Count int
	// CountID is the count's element id, which the holds page's live
	// refresh replaces.
	CountID string
}

// nav is the navigation a role sees: only what it may open. holds is the
// number of pending holds, which only approvers and admins see.
func nav(who *config.Identity, current string, holds int) []navItem {
	if who == nil {
		return nil
	}
	var items []navItem
	holdsItem := navItem{Href: "/ui/holds", Label: "Holds", Count: holds, CountID: "holds-count"}
	switch who.Role {
	case config.RoleApprover:
		items = []navItem{{Href: "/ui/requests", Label: "Requests"}, {Href: "/ui/grants", Label: "Grants"}, holdsItem}
	case config.RoleReviewer:
		items = []navItem{{Href: "/ui/sessions", Label: "Sessions"}}
	case config.RoleAdmin:
		items = []navItem{{Href: "/ui/requests", Label: "Requests"}, {Href: "/ui/grants", Label: "Grants"}, holdsItem, {Href: "/ui/sessions", Label: "Sessions"}}
	case config.RoleAgent:
		items = []navItem{{Href: "/ui/requests", Label: "My requests"}, {Href: "/ui/sessions", Label: "My sessions"}}
	}
	for i := range items {
		items[i].Current = current == items[i].Href || strings.HasPrefix(current, items[i].Href+"/")
	}
	return items
}

// page is what the layout is given: the page's own data in Data.
type page struct {
	Who  *config.Identity
	Nav  []navItem
	Path string
	Data any
}

func (c *Console) parse() error {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return fmt.Errorf("console: templates/layout.html, partials.html: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	c.pages = map[string]*template.Template{}
	for _, n := range names {
		if b := path.Base(n); b == "layout.html" || b == "partials.html" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return fmt.Errorf("console: %s: %w", n, err)
		}
		name := strings.TrimSuffix(path.Base(n), ".html")
		for _, need := range []string{"title", "content"} {
			if t.Lookup(need) == nil {
				return fmt.Errorf("console: %s defines no %q", n, need)
			}
		}
		c.pages[name] = t
	}
	for _, need := range requiredPages {
		if c.pages[need] == nil {
			return fmt.Errorf("console: templates/%s.html is missing", need)
		}
	}
	return nil
}

// requiredPages are the templates the handlers render; a missing one
// fails New.
var requiredPages = []string{"signin", "signin_link", "error", "requests", "request", "grants", "grant", "holds", "sessions", "session"}

// requiredSet is every page template in templates/, for tests.
func (c *Console) requiredSet() map[string]bool {
	names, _ := fs.Glob(templateFS, "templates/*.html")
	out := map[string]bool{}
	for _, n := range names {
		if b := path.Base(n); b != "layout.html" && b != "partials.html" {
			out[strings.TrimSuffix(b, ".html")] = true
		}
	}
	return out
}

// render writes page name in the layout. It renders into a buffer first,
// so a template error is a clean 500, not half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, name string, data any) {
	c.renderStatus(w, r, http.StatusOK, name, data)
}

func (c *Console) renderStatus(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	who := identityFrom(r)
	c.execute(w, status, name, "layout.html", page{Who: who, Nav: nav(who, r.URL.Path, c.holdCount(who)), Path: r.URL.Path, Data: data})
}

// holdCount is the number of pending holds for the navigation of who: 0
// for a role that may not see holds.
func (c *Console) holdCount(who *config.Identity) int {
	if who == nil || !isApprover(who) {
		return 0
	}
	return c.events.pendingHolds()
}

// renderPart writes the template part of page name alone (for htmx). Its
// Nav is the full navigation, for a part that updates the layout's counts
// out of band.
func (c *Console) renderPart(w http.ResponseWriter, r *http.Request, name, part string, data any) {
	who := identityFrom(r)
	c.execute(w, http.StatusOK, name, part, page{Who: who, Nav: nav(who, r.URL.Path, c.holdCount(who)), Path: r.URL.Path, Data: data})
}

func (c *Console) execute(w http.ResponseWriter, status int, name, tmpl string, p page) {
	t := c.pages[name]
	if t == nil {
		c.log.Error("console template missing", "template", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, tmpl, p); err != nil {
		c.log.Error("console template failed", "template", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorPage is the data of templates/error.html.
type errorPage struct {
	Status  int
	Message string
}

// fail answers with the error page (or its text to htmx).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.renderStatus(w, r, status, "error", errorPage{Status: status, Message: msg})
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"dur": func(d any) string {
		switch d := d.(type) {
		case time.Duration:
			return shortDuration(d)
		case authz.Duration:
			return shortDuration(time.Duration(d))
		}
		return fmt.Sprint(d)
	},
	"join": strings.Join,
	// list and clock are for the session pages (sessions.go).
	"list":  func(s ...string) []string { return s },
	"clock": func(t time.Time) string { return t.UTC().Format("15:04:05.000") },
}

// shortDuration writes 1h30m rather than 1h30m0s.
func shortDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
