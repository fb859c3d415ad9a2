package control

import (
	"cmp"
	"errors"
	"net/http"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
)

// HoldDecision is the optional body of POST /v1/holds/{id}/approve
// (comment) and the required one of POST /v1/holds/{id}/deny (reason;
// comment is read as the reason too).
type HoldDecision struct {
	Comment string `json:"comment,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// holds returns the hold store, or answers 503 and returns nil.
func (a *API) holds(w http.ResponseWriter) *HoldStore {
	if a.Service.Holds == nil {
		writeError(w, http.StatusServiceUnavailable, "held statements are off on this gateway: it could not open the holds bucket (see its log and deploy/nats/accounts.conf)")
	}
	return a.Service.Holds
}

func (a *API) listHolds(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	hs := a.holds(w)
	if hs == nil {
		return
	}
	state := authz.HoldState(r.URL.Query().Get("state"))
	if !ValidHoldState(state) {
		writeError(w, http.StatusBadRequest, "state "+string(state)+": want pending, approved, denied, expired or cancelled")
		return
	}
	l, err := hs.List(r.Context(), state)
	a.reply(w, http.StatusOK, l, err)
}

func (a *API) getHold(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	hs := a.holds(w)
	if hs == nil {
		return
	}
	h, err := hs.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, ErrNoHold) {
		writeError(w, http.StatusNotFound, "no hold "+r.PathValue("id"))
		return
	}
	a.reply(w, http.StatusOK, h, err)
}

func (a *API) decideHold(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	action := r.PathValue("action")
	if action != "approve" && action != "deny" {
		writeError(w, http.StatusNotFound, "no such action "+action+": approve or deny")
		return
	}
	hs := a.holds(w)
	if hs == nil {
		return
	}
	var d HoldDecision
	if r.ContentLength != 0 {
		if !readJSON(w, r, &d) {
			return
		}
	}
	// A denial's reason, an approval's comment; either field is read.
	comment := cmp.Or(d.Comment, d.Reason)
	if action == "deny" {
		comment = cmp.Or(d.Reason, d.Comment)
	}
	h, err := hs.Decide(r.Context(), r.PathValue("id"), action == "approve", who.Name, comment)
	if err == nil {
		a.logger().Info("held statement decided", "hold", h.ID, "action", action, "by", who.Name,
			"agent", h.Agent, "resource", h.Resource, "session", h.Session, "grant", h.Grant)
	}
	a.reply(w, http.StatusOK, h, err)
}
