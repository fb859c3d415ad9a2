package control

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control/notify"
	"github.com/airlockhq/airlock/recorder"
)

// SessionReader reads recorded sessions; recorder.Reader is one.
type SessionReader interface {
	Events(ctx context.Context, session string) ([]recorder.Event, error)
	// Stored is the session as stored: event bodies and the chunks of
	// values kept outside them, what an export carries.
	Stored(ctx context.Context, session string) (*recorder.Stored, error)
	// Follow delivers a session's events as they are stored, until ctx
	// ends or fn returns false (the console's live replay).
	Follow(ctx context.Context, session string, fn func(ev *recorder.Event) bool) error
}

// SessionIndex answers filtered, paged session lists; recorder.Index is
// one.
type SessionIndex interface {
	// List waits a moment for the index to be current, then answers q.
	List(ctx context.Context, q recorder.Query) (recorder.Page, error)
	Get(id string) (recorder.Summary, bool)
}

// NextCursorHeader carries the cursor of the next page of GET
// /v1/sessions; absent on the last page.
const NextCursorHeader = "Airlock-Next-Cursor"

// SessionDetail is one session: its summary and every event.
type SessionDetail struct {
	Summary recorder.Summary `json:"summary"`
	Events  []recorder.Event `json:"events"`
}

// API serves the HTTP API under /v1.
type API struct {
	Service  *Service
	Sessions SessionReader
	// Index answers GET /v1/sessions.
	Index SessionIndex
	// Keys are the public keys events are signed with, published on
	// GET /v1/keys and put in export files.
	Keys []recorder.PublicKey
	// Stream is the recorder's stream, named in export files.
	Stream string
	// Notify reports notification delivery on GET /v1/notify; nil: no
	// targets configured.
	Notify NotifyStatus
	Log    *slog.Logger
	// Console makes the one-time sign-in links of POST /v1/console/links;
	// nil: the route answers 404.
	Console ConsoleLinks

	waitOnce sync.Once
	wait     *waiters
}

// ConsoleLinks makes one-time sign-in links to the web console
// (control/console implements it).
type ConsoleLinks interface {
	// NewLink returns a link under base that signs who in once, and when
	// it stops working.
	NewLink(ctx context.Context, who *config.Identity, base string) (link string, expires time.Time, err error)
}

// NotifyStatus reports each notify target's deliveries; notify.Notifier
// is one.
type NotifyStatus interface {
	Status(ctx context.Context) ([]notify.TargetStatus, error)
}

// NotifyReport is the answer of GET /v1/notify.
type NotifyReport struct {
	Targets []notify.TargetStatus `json:"targets"`
}

func (a *API) logger() *slog.Logger {
	if a.Log == nil {
		return slog.Default()
	}
	return a.Log
}

// Handler returns the API's routes.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.Handle("GET /v1/whoami", a.auth(nil, a.whoami))
	mux.Handle("GET /v1/resources", a.auth(nil, a.resources))
	mux.Handle("POST /v1/requests", a.auth(roles(config.RoleAgent), a.request))
	mux.Handle("POST /v1/grants", a.auth(roles(config.RoleApprover, config.RoleAdmin), a.createGrant))
	mux.Handle("GET /v1/grants", a.auth(nil, a.listGrants))
	mux.Handle("GET /v1/grants/{id}", a.auth(nil, a.getGrant))
	mux.Handle("POST /v1/grants/{id}/{action}", a.auth(roles(config.RoleApprover, config.RoleAdmin), a.decide))
	// An agent reads its own sessions only (SessionVisible).
	mux.Handle("GET /v1/sessions", a.auth(roles(config.RoleReviewer, config.RoleAdmin, config.RoleAgent), a.listSessions))
	mux.Handle("GET /v1/sessions/{id}", a.auth(roles(config.RoleReviewer, config.RoleAdmin, config.RoleAgent), a.getSession))
	mux.Handle("GET /v1/sessions/{id}/export", a.auth(roles(config.RoleReviewer, config.RoleAdmin, config.RoleAgent), a.exportSession))
	mux.Handle("GET /v1/holds", a.auth(roles(config.RoleApprover, config.RoleAdmin), a.listHolds))
	mux.Handle("GET /v1/holds/{id}", a.auth(roles(config.RoleApprover, config.RoleAdmin), a.getHold))
	mux.Handle("POST /v1/holds/{id}/{action}", a.auth(roles(config.RoleApprover, config.RoleAdmin), a.decideHold))
	mux.Handle("GET /v1/notify", a.auth(roles(config.RoleApprover, config.RoleAdmin), a.notifyStatus))
	mux.Handle("POST /v1/console/links", a.auth(nil, a.consoleLink))
	// The signing key is public: anyone holding a record may check it.
	mux.HandleFunc("GET /v1/keys", a.keys)
	return mux
}

type handler func(w http.ResponseWriter, r *http.Request, who *config.Identity)

func roles(rs ...config.Role) []config.Role { return rs }

// auth finds the caller by API token and checks the route's roles (nil:
// any identity). Every identity's hash is compared, in constant time, so
// timing says nothing about which one matched.
func (a *API) auth(allowed []config.Role, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			writeError(w, http.StatusUnauthorized, "missing API token: set AIRLOCK_TOKEN")
			return
		}
		who := Identify(a.Service.Config, tok)
		if who == nil {
			writeError(w, http.StatusUnauthorized, "unknown API token")
			return
		}
		if allowed != nil && !slices.Contains(allowed, who.Role) {
			writeError(w, http.StatusForbidden, who.Name+" has role "+string(who.Role)+"; this needs "+RoleList(allowed))
			return
		}
		h(w, r, who)
	})
}

// Identify returns the identity whose API token is tok, or nil. Every
// identity's hash is compared, in constant time, so timing says nothing
// about which one matched.
func Identify(cfg *config.Config, tok string) *config.Identity {
	sum := sha256.Sum256([]byte(tok))
	var who *config.Identity
	ids := cfg.Identities
	for i := range ids {
		want, _ := hex.DecodeString(ids[i].TokenSHA256)
		if subtle.ConstantTimeCompare(sum[:], want) == 1 {
			who = &ids[i]
		}
	}
	return who
}

// RoleList names roles for a refusal: "reviewer or admin".
func RoleList(rs []config.Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, " or ")
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	if err := a.Service.Store.Ready(); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	writeJSON(w, http.StatusOK, map[string]string{"name": who.Name, "role": string(who.Role)})
}

func (a *API) request(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	var spec GrantSpec
	if !readJSON(w, r, &spec) {
		return
	}
	if spec.Agent != "" && spec.Agent != who.Name {
		writeError(w, http.StatusForbidden, "an agent requests access for itself only")
		return
	}
	iss, err := a.Service.Request(r.Context(), who.Name, spec)
	a.reply(w, http.StatusCreated, publicIssued(iss), err)
}

func (a *API) createGrant(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	var spec GrantSpec
	if !readJSON(w, r, &spec) {
		return
	}
	iss, err := a.Service.CreateActive(r.Context(), who.Name, spec)
	a.reply(w, http.StatusCreated, publicIssued(iss), err)
}

func (a *API) listGrants(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	q := r.URL.Query()
	now := a.Service.now()
	gs := a.Service.Store.List(func(g *authz.Grant) bool {
		if who.Role == config.RoleAgent && g.Agent != who.Name {
			return false
		}
		if v := q.Get("agent"); v != "" && g.Agent != v {
			return false
		}
		if v := q.Get("state"); v != "" && string(g.EffectiveState(now)) != v {
			return false
		}
		return true
	})
	out := make([]*authz.Grant, len(gs))
	for i, g := range gs {
		out[i] = public(g, now)
	}
	writeJSON(w, http.StatusOK, out)
}

// getGrant answers one grant; with ?wait=D (at most MaxWait) a pending
// request is answered only once it is decided or expires, or D has
// passed: a long poll, so a waiting agent (airlock request --wait) hears
// of the decision at once without asking over and over.
func (a *API) getGrant(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	visible := func(g *authz.Grant) bool { return who.Role != config.RoleAgent || g.Agent == who.Name }
	d, err := parseWait(r.URL.Query().Get("wait"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if d > 0 {
		a.getGrantWait(w, r, d, visible)
		return
	}
	g, err := a.Service.Store.Get(r.PathValue("id"))
	if err != nil || !visible(g) {
		writeError(w, http.StatusNotFound, "no grant "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, public(g, a.Service.now()))
}

func (a *API) decide(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	// The body is optional: {"comment", "ttl", "tables"}.
	var o DecideOptions
	if r.ContentLength != 0 {
		if !readJSON(w, r, &o) {
			return
		}
	}
	g, err := a.Service.DecideWith(r.Context(), r.PathValue("id"), r.PathValue("action"), who.Name, o)
	if err == nil {
		a.logger().Info("grant decided", "grant", g.ID, "action", r.PathValue("action"), "by", who.Name, "agent", g.Agent, "resource", g.Resource)
	}
	a.reply(w, http.StatusOK, public(g, a.Service.now()), err)
}

// ConsoleLink is the answer of POST /v1/console/links.
type ConsoleLink struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

func (a *API) consoleLink(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	if a.Console == nil {
		writeError(w, http.StatusNotFound, "this gateway serves no web console")
		return
	}
	base := a.Service.Config.Console.PublicURL
	if base == "" {
		// The address the CLI reached, as it wrote it.
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	link, exp, err := a.Console.NewLink(r.Context(), who, base)
	if err == nil {
		a.logger().Info("console sign-in link issued", "identity", who.Name)
	}
	a.reply(w, http.StatusCreated, ConsoleLink{URL: link, Expires: exp}, err)
}

func (a *API) listSessions(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	q, err := ParseSessionQuery(r.URL.Query(), a.Service.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if who.Role == config.RoleAgent {
		if q.Agent != "" && q.Agent != who.Name {
			// Another agent's sessions: none the caller may see.
			writeJSON(w, http.StatusOK, []recorder.Summary{})
			return
		}
		q.Agent = who.Name
	}
	page, err := a.Index.List(r.Context(), q)
	switch {
	case errors.Is(err, recorder.ErrIndexLoading):
		writeError(w, http.StatusServiceUnavailable, err.Error()+"; try again shortly")
		return
	case errors.Is(err, recorder.ErrBadCursor):
		writeError(w, http.StatusBadRequest, "cursor: not one this server handed out (take it from the "+NextCursorHeader+" header)")
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if page.Next != "" {
		w.Header().Set(NextCursorHeader, page.Next)
	}
	if page.Sessions == nil {
		page.Sessions = []recorder.Summary{}
	}
	writeJSON(w, http.StatusOK, page.Sessions)
}

// ParseSessionQuery reads a session list's parameters, shared by GET
// /v1/sessions and the console's list: agent, resource, grant, task
// (substring of the task text), state (open, ended, interrupted,
// auth_failed), since and until (RFC 3339 or a duration back from now),
// denied (true: only sessions with denials), cursor, limit.
func ParseSessionQuery(v url.Values, now time.Time) (recorder.Query, error) {
	q := recorder.Query{
		Agent: v.Get("agent"), Resource: v.Get("resource"), Grant: v.Get("grant"),
		Task: v.Get("task"), State: v.Get("state"), Cursor: v.Get("cursor"),
	}
	if !recorder.ValidState(q.State) {
		return q, fmt.Errorf("state %q: want open, ended, interrupted or auth_failed", q.State)
	}
	for _, t := range []struct {
		name string
		to   *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if s := v.Get(t.name); s != "" {
			tm, err := parseSince(s, now)
			if err != nil {
				return q, fmt.Errorf("%s: %w", t.name, err)
			}
			*t.to = tm
		}
	}
	switch d := v.Get("denied"); d {
	case "", "false", "0":
	case "true", "1", "on":
		q.Denied = true
	default:
		return q, fmt.Errorf("denied %q: want true or false", d)
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, errors.New("limit must be a non-negative number")
		}
		q.Limit = n
	}
	return q, nil
}

// SessionVisible reports whether who may read a session of agent: a
// reviewer or admin any, an agent its own, an approver none (the API
// gives approvers grants, not sessions).
func SessionVisible(who *config.Identity, agent string) bool {
	switch who.Role {
	case config.RoleReviewer, config.RoleAdmin:
		return true
	case config.RoleAgent:
		return agent == who.Name
	}
	return false
}

func (a *API) getSession(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	id := r.PathValue("id")
	evs, err := a.Sessions.Events(r.Context(), id)
	if errors.Is(err, recorder.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no session "+id)
		return
	}
	if err != nil {
		a.reply(w, 0, nil, err)
		return
	}
	sum := recorder.Summarize(evs)
	if !SessionVisible(who, sum.Agent) {
		writeError(w, http.StatusNotFound, "no session "+id)
		return
	}
	writeJSON(w, http.StatusOK, SessionDetail{Summary: sum, Events: evs})
}

func (a *API) exportSession(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	id := r.PathValue("id")
	st, err := a.Sessions.Stored(r.Context(), id)
	if errors.Is(err, recorder.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no session "+id)
		return
	}
	if err != nil {
		a.reply(w, 0, nil, err)
		return
	}
	if !SessionVisible(who, st.Agent()) {
		writeError(w, http.StatusNotFound, "no session "+id)
		return
	}
	x := recorder.NewExport(id, a.Stream, st.Events, a.Keys, a.Service.now())
	x.Chunks = st.Chunks
	w.Header().Set("Content-Type", "application/json")
	_ = x.Write(w)
}

func (a *API) notifyStatus(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	rep := NotifyReport{Targets: []notify.TargetStatus{}}
	if a.Notify == nil {
		writeJSON(w, http.StatusOK, rep)
		return
	}
	ts, err := a.Notify.Status(r.Context())
	rep.Targets = ts
	a.reply(w, http.StatusOK, rep, err)
}

// Keys is the answer of GET /v1/keys.
type Keys struct {
	Keys []recorder.PublicKey `json:"keys"`
}

func (a *API) keys(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Keys{Keys: a.Keys})
}

// parseSince reads an RFC 3339 time or a duration back from now ("2h").
func parseSince(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, errors.New("since must be a duration (2h) or an RFC 3339 time")
	}
	return t, nil
}

// public is the grant as callers see it: the stored state made effective,
// and without the token verifier.
func public(g *authz.Grant, now time.Time) *authz.Grant {
	if g == nil {
		return nil
	}
	c := *g
	c.Verifier = nil
	c.State = g.EffectiveState(now)
	return &c
}

func publicIssued(iss *Issued) *Issued {
	if iss == nil {
		return nil
	}
	return &Issued{Grant: public(iss.Grant, iss.Grant.RequestedAt), Token: iss.Token}
}

func (a *API) reply(w http.ResponseWriter, status int, v any, err error) {
	var ue *UserError
	switch {
	case err == nil:
		writeJSON(w, status, v)
	case errors.As(err, &ue):
		writeError(w, ue.Status, ue.Msg)
	case errors.Is(err, ErrNotSynced):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		a.logger().Error("api request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: "+err.Error())
	}
}

// apiError is the body of every error response.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	return true
}
