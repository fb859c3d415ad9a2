package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/internal/plural"
	"github.com/airlockhq/airlock/recorder"
)

// Who reads sessions: a reviewer and an admin every session, an agent its
// own (control.SessionVisible; another agent's session is a 404, as if it
// did not exist). An approver none, as in the API: approvers see grants
// and their live sessions on the grants pages.
var sessionReaders = roles(config.RoleReviewer, config.RoleAdmin, config.RoleAgent)

func (c *Console) sessionRoutes() {
	c.handle("GET /ui/sessions", sessionReaders, c.sessionsPage)
	c.handle("GET /ui/sessions/{id}", sessionReaders, c.sessionPage)
	c.handle("GET /ui/sessions/{id}/export", sessionReaders, c.sessionExport)
	c.handle("GET /ui/sessions/{id}/cast", sessionReaders, c.sessionCast)
	c.handle("GET /ui/sessions/{id}/live", sessionReaders, c.sessionLive)
}

// pageSize is how many sessions a list page shows.
const pageSize = 50

// sessionsData is the data of templates/sessions.html.
type sessionsData struct {
	// Form is the filter as given, to fill the form again.
	Form     url.Values
	Agent    bool // the viewer is an agent: no agent filter
	Sessions []recorder.Summary
	// Next is the URL of the next page; empty on the last.
	Next  string
	Error string
}

func (c *Console) sessionsPage(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	form := r.URL.Query()
	d := sessionsData{Form: form, Agent: who.Role == config.RoleAgent}
	q, err := control.ParseSessionQuery(form, c.now())
	if err != nil {
		d.Error = err.Error()
		c.renderStatus(w, r, http.StatusBadRequest, "sessions", d)
		return
	}
	if d.Agent {
		q.Agent = who.Name
	}
	q.Limit = pageSize
	p, err := c.index.List(r.Context(), q)
	if errors.Is(err, recorder.ErrIndexLoading) {
		c.fail(w, r, http.StatusServiceUnavailable, "The session list is still being read from the event stream; reload in a moment.")
		return
	}
	if err != nil {
		d.Error = err.Error()
		if errors.Is(err, recorder.ErrBadCursor) {
			d.Error = "This page link is not valid any more; start from the first page."
		}
		c.renderStatus(w, r, http.StatusBadRequest, "sessions", d)
		return
	}
	d.Sessions = p.Sessions
	if p.Next != "" {
		next := url.Values{}
		for k, v := range form {
			if k != "cursor" && len(v) > 0 && v[0] != "" {
				next.Set(k, v[0])
			}
		}
		next.Set("cursor", p.Next)
		d.Next = "/ui/sessions?" + next.Encode()
	}
	c.render(w, r, "sessions", d)
}

// stmtRow is one line of a session's timeline.
type stmtRow struct {
	Seq   uint64
	Time  time.Time
	Clock string // the time of day, to the millisecond (UTC)
	// Stmt: a statement's row; RowClass its CSS classes.
	Stmt     bool
	RowClass string
	// Kind is "statement", or the event's type for the others.
	Kind string
	// Statement lines.
	ID       uint64
	Text     string
	TextNote string
	Decision string
	Denied   bool
	Rule     string
	Reason   string
	Class    string
	Params   []recorder.Param
	// Outcome, for an allowed statement whose result is recorded.
	Result   *recorder.Result
	Duration string
	Outcome  string
	// Note is what an event other than a statement says.
	Note string
}

// sessionData is the data of templates/session.html.
type sessionData struct {
	S       recorder.Summary
	Comment string // the approver's comment on the grant, if any
	Rows    []stmtRow
	// Timeline is Rows rendered by the template "rows".
	Timeline template.HTML
	Denied   int
	Verify   verifyBadge
	// Replay: the session has a terminal to play (SSH shell or pty).
	Replay   bool
	Cols     int
	Rows2    int
	Live     bool
	CastURL  string
	LiveURL  string
	NoReplay string
}

// verifyBadge is the outcome of verification as the page shows it.
type verifyBadge struct {
	Class  string // intact, interrupted, open, broken
	Label  string
	Detail string
	Report recorder.Report
}

// loadSession reads one session the viewer may see, as stored. A session
// that does not exist, or that the viewer may not read, is the same 404.
func (c *Console) loadSession(w http.ResponseWriter, r *http.Request, who *config.Identity) (string, *recorder.Stored, bool) {
	id := r.PathValue("id")
	notFound := func() (string, *recorder.Stored, bool) {
		c.fail(w, r, http.StatusNotFound, "No such session.")
		return "", nil, false
	}
	if !recorder.ValidSessionID(id) {
		return notFound()
	}
	// An agent asking for another agent's session is answered from the
	// index when it can, without reading the session at all.
	if who.Role == config.RoleAgent {
		if s, ok := c.index.Get(id); ok && !control.SessionVisible(who, s.Agent) {
			return notFound()
		}
	}
	st, err := c.sessions.Stored(r.Context(), id)
	if errors.Is(err, recorder.ErrNotFound) {
		return notFound()
	}
	if err != nil {
		c.log.Error("console: reading a session failed", "session", id, "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, "The session cannot be read right now; try again in a moment.")
		return "", nil, false
	}
	if !control.SessionVisible(who, st.Agent()) {
		return notFound()
	}
	return id, st, true
}

func (c *Console) sessionPage(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	id, st, ok := c.loadSession(w, r, who)
	if !ok {
		return
	}
	badge, evs := c.verify(id, st)
	d := sessionData{S: recorder.Summarize(evs), Verify: badge}
	d.Comment = d.S.ApprovalComment
	if d.Comment == "" && d.S.Grant != "" {
		if g, err := c.svc.Store.Get(d.S.Grant); err == nil && g != nil {
			d.Comment = g.ApprovalComment()
		}
	}
	d.Rows, d.Denied = timeline(evs)
	if cols, rows, err := recorder.TerminalSize(evs); err == nil {
		d.Replay, d.Cols, d.Rows2 = true, cols, rows
		d.CastURL = "/ui/sessions/" + id + "/cast"
		if d.S.Status == recorder.StatusOpen {
			d.Live, d.LiveURL = true, "/ui/sessions/"+id+"/live"
		}
		usePlayerCSP(w)
	} else if d.S.Protocol == "ssh" {
		d.NoReplay = "This session opened no shell or terminal, so there is nothing to replay; its commands and their exit statuses are below."
	}
	d.Timeline = renderRows(d.Rows)
	c.render(w, r, "session", d)
}

// verify checks the session as airlock sessions verify does, with the
// same function (VerifyStored, through VerifyStoredEvents, which also
// hands back the decoded events) against the gateway's keys.
func (c *Console) verify(id string, st *recorder.Stored) (verifyBadge, []recorder.Event) {
	kr, err := recorder.NewKeyring(c.keys...)
	if err != nil {
		return verifyBadge{Class: "broken", Label: "cannot verify", Detail: err.Error()}, st.Decoded()
	}
	rep, evs := recorder.VerifyStoredEvents(id, st.Events, st.Chunks, kr)
	b := verifyBadge{Report: rep, Detail: rep.Line()}
	switch rep.Status {
	case recorder.VerifyOK:
		b.Class, b.Label = "intact", "intact"
	case recorder.VerifyInterrupted:
		b.Class, b.Label = "interrupted", "interrupted (intact)"
	case recorder.VerifyUnterminated:
		b.Class, b.Label = "open", "no end yet"
		if rep.Unauthenticated > 0 {
			b.Label = fmt.Sprintf("no end yet; unsigned tail of %d", rep.Unauthenticated)
		}
	default:
		b.Class = "broken"
		if rep.FirstBad > 0 {
			b.Label = fmt.Sprintf("broken at seq %d", rep.FirstBad)
		} else {
			b.Label = "broken"
		}
	}
	return b, evs
}

// timeline is one row per statement or command, and per start, end,
// refused login and interruption, with each statement's outcome.
func timeline(evs []recorder.Event) ([]stmtRow, int) {
	results := make(map[uint64]*recorder.Result, len(evs))
	for i := range evs {
		for _, res := range evs[i].Outcomes() {
			results[res.ID] = res
		}
	}
	rows := make([]stmtRow, 0, len(evs))
	denied := 0
	for i := range evs {
		e := &evs[i]
		row := stmtRow{Seq: e.Seq, Time: e.Time, Kind: e.Type}
		switch e.Type {
		case recorder.TypeStatement:
			st := e.Statement
			if st == nil {
				continue
			}
			row.Kind = "statement"
			row.ID, row.Text, row.Decision, row.Rule, row.Reason = st.ID, st.Text, st.Decision, st.Rule, st.Reason
			row.Class = st.Class.Kind
			if st.Class.Required != 0 {
				row.Class += " · needs " + st.Class.Required.String()
			}
			row.Params = st.Params
			row.Denied = st.Decision == "deny"
			if st.Decision == "hold" {
				// Recorded before it waited; the next event of the same
				// text says how the approver decided.
				row.Outcome = "held for an approver (" + st.Rule + "): " + st.Reason
			}
			if ref := st.TextRef; ref != nil {
				row.TextNote = fmt.Sprintf("text of %d bytes, sha256 %s", ref.Size, ref.SHA256)
				if ref.Omitted {
					row.TextNote += "; only its first bytes are recorded (over recorder.max_statement_bytes)"
				}
			}
			if row.Denied {
				denied++
			} else if res := results[st.ID]; res != nil {
				row.Result = res
				row.Outcome = res.Words()
				if res.Executed {
					row.Duration = (time.Duration(res.DurationUS) * time.Microsecond).String()
				}
			}
		case recorder.TypeSessionStart:
			row.Note = "session start"
		case recorder.TypeAuthFailed:
			if e.Auth != nil {
				row.Note = "login refused for " + e.Auth.User + ": " + e.Auth.Reason
				row.Denied = true
			}
		case recorder.TypeSessionEnd:
			if x := e.End; x != nil {
				row.Note = fmt.Sprintf("session end: %s (%s, %d denied)", x.Reason, plural.N(x.Statements, "statement"), x.Denied)
				if x.ExitStatus != nil {
					row.Note += fmt.Sprintf("; last command exit %d", *x.ExitStatus)
				}
				row.Note += x.Stop.Words()
			}
		case recorder.TypeSessionInterrupted:
			if n := e.Interrupted; n != nil {
				row.Note = fmt.Sprintf("session interrupted after seq %d, noted by %s: %s", n.LastSeq, e.Gateway, n.Reason)
			}
		default:
			continue
		}
		row.Clock = row.Time.UTC().Format("15:04:05.000")
		switch {
		case row.Kind == "statement" && row.Denied:
			row.Stmt, row.RowClass = true, "stmt denied"
		case row.Kind == "statement":
			row.Stmt, row.RowClass = true, "stmt"
		case row.Denied:
			row.RowClass = "event denied"
		default:
			row.RowClass = "event"
		}
		rows = append(rows, row)
	}
	return rows, denied
}

// sessionExport is the evidence bundle: what airlock sessions export
// writes (GET /v1/sessions/{id}/export).
func (c *Console) sessionExport(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	id, st, ok := c.loadSession(w, r, who)
	if !ok {
		return
	}
	x := recorder.NewExport(id, c.stream, st.Events, c.keys, c.now())
	x.Chunks = st.Chunks
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.json"`)
	_ = x.Write(w)
}

// sessionCast is the terminal as asciicast v2: what airlock sessions
// export --format asciicast writes and replay plays.
func (c *Console) sessionCast(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	id, st, ok := c.loadSession(w, r, who)
	if !ok {
		return
	}
	evs := st.Decoded()
	if _, err := recorder.Terminal(evs); err != nil {
		c.fail(w, r, http.StatusNotFound, "This session has no terminal to replay.")
		return
	}
	w.Header().Set("Content-Type", "application/x-asciicast")
	if r.URL.Query().Get("download") != "" {
		w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.cast"`)
	}
	_ = recorder.WriteAsciicast(w, evs)
}

// sessionLive follows an open session's terminal for asciinema-player's
// eventsource driver: Server-Sent Events whose data is first a header
// {cols, rows, time, init} (the terminal so far, and how far into the
// session it is), then [time, "o"|"r", data] entries as the gateway
// records them, and {"state": "offline"} when the session ends.
func (c *Console) sessionLive(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	id, st, ok := c.loadSession(w, r, who)
	if !ok {
		return
	}
	evs := st.Decoded()
	s := recorder.Summarize(evs)
	start, cols, rows := s.Start, 80, 24
	var init strings.Builder
	if cast, err := recorder.Terminal(evs); err == nil {
		cols, rows = cast.Header.Width, cast.Header.Height
		if cast.Header.Timestamp > 0 {
			start = time.Unix(cast.Header.Timestamp, 0)
		}
		for _, e := range cast.Events {
			if e.Code == "o" {
				init.WriteString(e.Data)
			}
		}
	}
	var lastSeq uint64
	for i := range evs {
		lastSeq = max(lastSeq, evs[i].Seq)
	}
	live := recorder.NewLiveCast(start)
	live.Seed(evs)

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(map[string]any{"cols": cols, "rows": rows, "time": max(c.now().Sub(start).Seconds(), 0), "init": init.String()}) {
		return
	}
	if s.Status != recorder.StatusOpen {
		send(map[string]string{"state": "offline", "message": "the session has ended"})
		return
	}
	ctx := r.Context()
	err := c.sessions.Follow(ctx, id, func(ev *recorder.Event) bool {
		if ev.Seq <= lastSeq && ev.Type != recorder.TypeSessionInterrupted {
			return true
		}
		for _, ce := range live.Add(ev) {
			if !send([]any{ce.Time, ce.Code, ce.Data}) {
				return false
			}
		}
		if ev.Type == recorder.TypeSessionEnd || ev.Type == recorder.TypeSessionInterrupted {
			send(map[string]string{"state": "offline", "message": "the session has ended"})
			return false
		}
		return true
	})
	if err != nil {
		c.log.Warn("console: following a session failed", "session", id, "err", err)
	}
}
