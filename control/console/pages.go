package console

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/internal/plural"
	"github.com/airlockhq/airlock/recorder"
)

func (c *Console) pageRoutes() {
	c.handle("GET /ui/requests", requesters, c.requestsPage)
	c.handle("GET /ui/requests/{id}", requesters, c.requestPage)
	c.handle("POST /ui/requests/{id}/approve", approvers, c.approve)
	c.handle("POST /ui/requests/{id}/deny", approvers, c.deny)
	c.handle("GET /ui/grants", approvers, c.grantsPage)
	c.handle("GET /ui/grants/{id}", approvers, c.grantPage)
	c.handle("POST /ui/grants/{id}/revoke", approvers, c.revoke)
}

// requesters may open the requests pages: approvers act on them, an
// agent reads its own. A reviewer reads sessions, not requests.
var requesters = roles(config.RoleAgent, config.RoleApprover, config.RoleAdmin)

func isApprover(who *config.Identity) bool { return slices.Contains(approvers, who.Role) }

// grantView is a grant as the pages show it.
type grantView struct {
	*authz.Grant
	State      authz.State
	Kind       string // database or ssh
	Tables     []string
	Guardrails []string
	Left       string // time until expiry, for an active grant
	Sessions   []recorder.Summary
}

func (c *Console) view(g *authz.Grant) grantView {
	now := c.now()
	v := grantView{Grant: g, State: g.EffectiveState(now), Kind: "database", Tables: g.Scope.Tables, Guardrails: guardrails(g)}
	if r := c.cfg.Resource(g.Resource); r != nil && r.Protocol == "ssh" {
		v.Kind = "ssh"
	}
	if v.State == authz.StateActive {
		v.Left = shortDuration(g.ExpiresAt.Sub(now))
	}
	return v
}

// guardrails lists in words what limits a grant beyond its access level.
func guardrails(g *authz.Grant) []string {
	var out []string
	s := g.Scope
	if ssh := g.SSH.Allows(); len(ssh) > 0 {
		return ssh
	}
	if len(s.Functions) > 0 {
		out = append(out, "extra functions: "+strings.Join(s.Functions, ", "))
	}
	if s.MaxTables > 0 {
		out = append(out, "at most "+plural.N(s.MaxTables, "table")+" per statement")
	}
	if g.Access >= authz.AccessWrite {
		if s.AllowUnfiltered {
			out = append(out, "UPDATE/DELETE without WHERE allowed")
		} else {
			out = append(out, "UPDATE/DELETE without WHERE refused")
		}
	}
	if g.Access >= authz.AccessDDL {
		if s.AllowDrop {
			out = append(out, "DROP/TRUNCATE allowed")
		} else {
			out = append(out, "DROP/TRUNCATE refused")
		}
	}
	if s.AllowFileLoad {
		out = append(out, "LOAD DATA LOCAL INFILE allowed")
	}
	if s.AllowServerFiles {
		out = append(out, "server-side files and programs allowed")
	}
	return out
}

// requestsData is the data of templates/requests.html.
type requestsData struct {
	Approver bool
	Pending  []grantView
	Recent   []grantView
	Notice   string
}

// recentShown is how many decided requests the queue page lists below
// the pending ones.
const recentShown = 10

// requestsPage is the pending queue (an agent's own requests, for an
// agent). ?part=queue renders the list alone, for the live refresh.
func (c *Console) requestsPage(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	gs := c.svc.Store.List(func(g *authz.Grant) bool {
		return who.Role != config.RoleAgent || g.Agent == who.Name
	})
	d := requestsData{Approver: isApprover(who), Notice: notice(r)}
	now := c.now()
	for _, g := range gs {
		// A request past its deadline reads as expired and leaves the
		// queue; the hub's timer refreshes open pages at that moment.
		if g.EffectiveState(now) == authz.StatePending {
			d.Pending = append(d.Pending, c.view(g))
		} else if len(d.Recent) < recentShown && !g.DecidedAt.IsZero() {
			d.Recent = append(d.Recent, c.view(g))
		}
	}
	slices.SortStableFunc(d.Pending, func(a, b grantView) int { return a.RequestedAt.Compare(b.RequestedAt) })
	slices.SortStableFunc(d.Recent, func(a, b grantView) int { return b.DecidedAt.Compare(a.DecidedAt) })
	if r.URL.Query().Get("part") == "queue" {
		c.renderPart(w, r, "requests", "queue", d)
		return
	}
	c.render(w, r, "requests", d)
}

// notice is the result of the action that redirected here.
func notice(r *http.Request) string {
	switch r.URL.Query().Get("done") {
	case "approved":
		return "Approved."
	case "denied":
		return "Denied."
	case "revoked":
		return "Revoked: its sessions are ending on every gateway."
	}
	return ""
}

// requestData is the data of templates/request.html.
type requestData struct {
	Approver bool
	G        grantView
	Error    string
	// TTLs are the approval durations offered: what was asked and
	// shorter ones.
	TTLs []string
	// Form holds what the approver entered, shown again after an error.
	Form decision
}

type decision struct {
	TTL     string
	Tables  []string
	Comment string
	Reason  string
}

// lookup returns the grant id of the path if who may see it; an agent
// sees only its own, and another's reads as missing.
func (c *Console) lookup(w http.ResponseWriter, r *http.Request, who *config.Identity) *authz.Grant {
	g, err := c.svc.Store.Get(r.PathValue("id"))
	if err != nil || (who.Role == config.RoleAgent && g.Agent != who.Name) {
		c.fail(w, r, http.StatusNotFound, "No request or grant "+r.PathValue("id")+".")
		return nil
	}
	return g
}

func (c *Console) requestPage(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	g := c.lookup(w, r, who)
	if g == nil {
		return
	}
	c.showRequest(w, r, who, g, http.StatusOK, "", decision{TTL: time.Duration(g.TTL).String(), Tables: g.Scope.Tables})
}

// showRequest renders a request's page; ?part=status only the line that
// says it was decided, which the page refreshes live (the forms stay as
// the approver filled them).
func (c *Console) showRequest(w http.ResponseWriter, r *http.Request, who *config.Identity, g *authz.Grant, status int, msg string, form decision) {
	d := requestData{Approver: isApprover(who), G: c.view(g), Error: msg, TTLs: shorterTTLs(time.Duration(g.TTL)), Form: form}
	if r.Method == http.MethodGet && r.URL.Query().Get("part") == "status" {
		c.renderPart(w, r, "request", "status", d)
		return
	}
	c.renderStatus(w, r, status, "request", d)
}

// shorterTTLs offers the asked duration and common shorter ones.
func shorterTTLs(asked time.Duration) []string {
	out := []string{shortDuration(asked)}
	for _, d := range []time.Duration{8 * time.Hour, 4 * time.Hour, 2 * time.Hour, time.Hour, 30 * time.Minute, 15 * time.Minute, 5 * time.Minute} {
		if d < asked {
			out = append(out, shortDuration(d))
		}
	}
	return out
}

func (c *Console) approve(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	c.decide(w, r, who, "approve")
}

func (c *Console) deny(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	c.decide(w, r, who, "deny")
}

// decide applies an approval or denial from the request page's forms.
func (c *Console) decide(w http.ResponseWriter, r *http.Request, who *config.Identity, action string) {
	g := c.lookup(w, r, who)
	if g == nil {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, http.StatusBadRequest, "Unreadable form.")
		return
	}
	f := decision{TTL: r.PostFormValue("ttl"), Tables: r.PostForm["table"], Comment: r.PostFormValue("comment"), Reason: r.PostFormValue("reason")}
	var o control.DecideOptions
	switch action {
	case "approve":
		o.Comment = f.Comment
		if f.TTL != "" && f.TTL != shortDuration(time.Duration(g.TTL)) {
			o.TTL = f.TTL
		}
		if extra := strings.TrimSpace(r.PostFormValue("tables")); extra != "" {
			// A request for any table may be limited to some, named here.
			for _, t := range strings.FieldsFunc(extra, func(c rune) bool { return c == ',' || c == ' ' || c == '\n' }) {
				f.Tables = append(f.Tables, t)
			}
		}
		if r.PostFormValue("tables_shown") == "1" && len(g.Scope.Tables) > 0 && len(f.Tables) == 0 {
			c.showRequest(w, r, who, g, http.StatusBadRequest, "Choose at least one table, or deny the request.", f)
			return
		}
		if !slices.Equal(f.Tables, g.Scope.Tables) {
			o.Tables = f.Tables
		}
	case "deny":
		o.Comment = f.Reason
	}
	ng, err := c.svc.DecideWith(r.Context(), g.ID, action, who.Name, o)
	var ue *control.UserError
	switch {
	case errors.As(err, &ue):
		cur, gerr := c.svc.Store.Get(g.ID)
		if gerr != nil {
			cur = g
		}
		c.showRequest(w, r, who, cur, ue.Status, ue.Msg, f)
		return
	case err != nil:
		c.log.Error("console decision failed", "grant", g.ID, "action", action, "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, "The decision could not be stored; nothing changed. Try again in a moment.")
		return
	}
	c.log.Info("grant decided", "grant", ng.ID, "action", action, "by", who.Name, "agent", ng.Agent, "resource", ng.Resource, "via", "console")
	if action == "approve" {
		http.Redirect(w, r, "/ui/grants/"+ng.ID+"?done=approved", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/ui/requests?done=denied", http.StatusSeeOther)
}

// grantsData is the data of templates/grants.html.
type grantsData struct {
	Active []grantView
	Notice string
	// SessionsError says the live sessions could not be read; the grants
	// are shown anyway.
	SessionsError string
}

func (c *Console) grantsPage(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	now := c.now()
	gs := c.svc.Store.List(func(g *authz.Grant) bool { return g.EffectiveState(now) == authz.StateActive })
	d := grantsData{Notice: notice(r)}
	for _, g := range gs {
		d.Active = append(d.Active, c.view(g))
	}
	if len(gs) > 0 {
		open, err := c.openSessions(r, "")
		if err != nil {
			d.SessionsError = "Live sessions cannot be read right now."
		}
		for i := range d.Active {
			d.Active[i].Sessions = open[d.Active[i].ID]
		}
	}
	if r.URL.Query().Get("part") == "list" {
		c.renderPart(w, r, "grants", "list", d)
		return
	}
	c.render(w, r, "grants", d)
}

// openSessions returns the open sessions, of one grant or of all, by
// grant, from the session index.
func (c *Console) openSessions(r *http.Request, grant string) (map[string][]recorder.Summary, error) {
	p, err := c.index.List(r.Context(), recorder.Query{State: recorder.StatusOpen, Grant: grant})
	if err != nil {
		c.log.Error("console: reading live sessions", "err", err)
		return nil, err
	}
	out := map[string][]recorder.Summary{}
	for _, s := range p.Sessions {
		if s.Grant != "" {
			out[s.Grant] = append(out[s.Grant], s)
		}
	}
	return out, nil
}

// grantData is the data of templates/grant.html.
type grantData struct {
	G             grantView
	Notice        string
	Error         string
	SessionsError string
}

func (c *Console) grantPage(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	g := c.lookup(w, r, who)
	if g == nil {
		return
	}
	c.showGrant(w, r, g, http.StatusOK, "")
}

func (c *Console) showGrant(w http.ResponseWriter, r *http.Request, g *authz.Grant, status int, msg string) {
	d := grantData{G: c.view(g), Notice: notice(r), Error: msg}
	if d.G.State == authz.StateActive {
		open, err := c.openSessions(r, g.ID)
		if err != nil {
			d.SessionsError = "Live sessions cannot be read right now."
		}
		d.G.Sessions = open[g.ID]
	}
	if r.URL.Query().Get("part") == "grant" {
		c.renderPart(w, r, "grant", "detail", d)
		return
	}
	c.renderStatus(w, r, status, "grant", d)
}

// revoke ends an active grant; every replica ends its sessions within a
// second (the same call as airlock grants revoke).
func (c *Console) revoke(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	g := c.lookup(w, r, who)
	if g == nil {
		return
	}
	ng, err := c.svc.Decide(r.Context(), g.ID, "revoke", who.Name)
	var ue *control.UserError
	switch {
	case errors.As(err, &ue):
		cur, gerr := c.svc.Store.Get(g.ID)
		if gerr != nil {
			cur = g
		}
		c.showGrant(w, r, cur, ue.Status, ue.Msg)
		return
	case err != nil:
		c.log.Error("console revocation failed", "grant", g.ID, "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, "The revocation could not be stored; the grant is still active. Try again in a moment.")
		return
	}
	c.log.Info("grant decided", "grant", ng.ID, "action", "revoke", "by", who.Name, "agent", ng.Agent, "resource", ng.Resource, "via", "console")
	http.Redirect(w, r, "/ui/grants?done=revoked", http.StatusSeeOther)
}
