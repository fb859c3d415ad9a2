package console

import (
	"errors"
	"net/http"
	"slices"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
)

// Held statements (docs/authorization.md, "Holds"): a statement of a live
// session waits in its session for a person, who approves or denies it
// here. Approvers and admins only, as /v1/holds.
func (c *Console) holdRoutes() {
	c.handle("GET /ui/holds", approvers, c.holdsPage)
	// The statement.held notification links here: the hold's card on
	// the page (pending or recently decided).
	c.handle("GET /ui/holds/{id}", approvers, func(w http.ResponseWriter, r *http.Request, _ *config.Identity) {
		id := r.PathValue("id")
		if !control.ValidHoldID(id) {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, "/ui/holds#hold-"+id, http.StatusSeeOther)
	})
	c.handle("POST /ui/holds/{id}/approve", approvers, c.approveHold)
	c.handle("POST /ui/holds/{id}/deny", approvers, c.denyHold)
}

// holdView is a hold as the page shows it.
type holdView struct {
	*authz.Hold
	Left string // until a pending hold expires
	// Sessions: the viewer may open the session's page (an admin; an
	// approver reads grants, not sessions, and finds the live session on
	// the grant's page).
	Sessions bool
}

// holdsData is the data of templates/holds.html.
type holdsData struct {
	Pending []holdView
	Recent  []holdView
	Notice  string
	// Error is why the last decision was not taken, on hold ErrorHold.
	Error, ErrorHold string
	// Off says why holds cannot be shown at all.
	Off string
}

// holdsPage lists the pending holds, newest first, and the ones decided
// lately. ?part=list renders the lists alone, for the live refresh.
func (c *Console) holdsPage(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	c.showHolds(w, r, who, http.StatusOK, holdsData{Notice: holdNotice(r)})
}

func (c *Console) showHolds(w http.ResponseWriter, r *http.Request, who *config.Identity, status int, d holdsData) {
	if c.svc.Holds == nil {
		d.Off = "Held statements are off on this gateway: it could not open the holds bucket (see its log)."
	} else if hs, err := c.svc.Holds.List(r.Context(), ""); err != nil {
		c.log.Error("console: listing holds", "err", err)
		d.Off = "Held statements cannot be read right now; this page tries again by itself."
		status = max(status, http.StatusServiceUnavailable)
	} else {
		now := c.now()
		sessions := slices.Contains(sessionReaders, who.Role)
		// List gives them newest first; a pending hold past its deadline
		// already reads expired.
		for _, h := range hs {
			v := holdView{Hold: h, Sessions: sessions}
			switch {
			case h.State == authz.HoldPending:
				v.Left = shortDuration(h.ExpiresAt.Sub(now))
				d.Pending = append(d.Pending, v)
			case len(d.Recent) < recentShown:
				d.Recent = append(d.Recent, v)
			}
		}
		slices.SortStableFunc(d.Recent, func(a, b holdView) int { return b.DecidedAt.Compare(a.DecidedAt) })
	}
	if r.Method == http.MethodGet && r.URL.Query().Get("part") == "list" {
		c.renderPart(w, r, "holds", "list", d)
		return
	}
	c.renderStatus(w, r, status, "holds", d)
}

func holdNotice(r *http.Request) string {
	switch r.URL.Query().Get("done") {
	case "approved":
		return "Approved: the statement runs now."
	case "denied":
		return "Denied: the agent's client was told the reason; its session goes on."
	}
	return ""
}

func (c *Console) approveHold(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	c.decideHold(w, r, who, true)
}

func (c *Console) denyHold(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	c.decideHold(w, r, who, false)
}

// decideHold approves or denies a hold as the signed-in identity: the same
// HoldStore.Decide as POST /v1/holds/{id}/approve|deny. One already
// decided, expired or cancelled is a 409 that says what became of it.
func (c *Console) decideHold(w http.ResponseWriter, r *http.Request, who *config.Identity, approve bool) {
	if c.svc.Holds == nil {
		c.showHolds(w, r, who, http.StatusServiceUnavailable, holdsData{})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, http.StatusBadRequest, "Unreadable form.")
		return
	}
	id, comment, action := r.PathValue("id"), r.PostFormValue("comment"), "approve"
	if !approve {
		comment, action = r.PostFormValue("reason"), "deny"
	}
	h, err := c.svc.Holds.Decide(r.Context(), id, approve, who.Name, comment)
	var ue *control.UserError
	switch {
	case errors.As(err, &ue):
		c.showHolds(w, r, who, ue.Status, holdsData{Error: sentence(ue.Msg), ErrorHold: id})
		return
	case err != nil:
		c.log.Error("console hold decision failed", "hold", id, "action", action, "err", err)
		c.showHolds(w, r, who, http.StatusServiceUnavailable, holdsData{
			Error: "The decision could not be stored; nothing changed. Try again in a moment.", ErrorHold: id})
		return
	}
	c.log.Info("held statement decided", "hold", h.ID, "action", action, "by", who.Name,
		"agent", h.Agent, "resource", h.Resource, "session", h.Session, "grant", h.Grant, "via", "console")
	done := "approved"
	if !approve {
		done = "denied"
	}
	http.Redirect(w, r, "/ui/holds?done="+done, http.StatusSeeOther)
}

// sentence capitalises an API message for the page.
func sentence(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:] + "."
}
