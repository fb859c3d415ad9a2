package console

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
)

// signinData is the data of templates/signin.html.
type signinData struct {
	Next  string
	Error string
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, "signin", signinData{Next: safeNext(r.URL.Query().Get("next"))})
}

// signinToken signs in with a pasted API token: the fallback when no CLI
// is at hand to print a link.
func (c *Console) signinToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	who := control.Identify(c.cfg, tok)
	if tok == "" || who == nil {
		// Slow down guessing a little; tokens are long enough that this
		// is courtesy to the log, not the defence.
		time.Sleep(200 * time.Millisecond)
		c.log.Info("console sign-in refused", "remote", r.RemoteAddr, "reason", "unknown API token")
		c.renderStatus(w, r, http.StatusUnauthorized, "signin", signinData{Next: next, Error: "That token is not an identity of this gateway."})
		return
	}
	c.startSession(w, r, who, "token", next)
}

// linkData is the data of templates/signin_link.html.
type linkData struct {
	Name  string
	Next  string
	Error string
}

// linkPage shows a "Continue" button and does not spend the link: chat
// and mail link scanners fetch links before the person clicks, and would
// otherwise use it up (or sign themselves in).
func (c *Console) linkPage(w http.ResponseWriter, r *http.Request) {
	l, err := c.store.PeekLink(r.Context(), r.PathValue("secret"))
	if err != nil {
		c.linkRefused(w, r, err)
		return
	}
	c.render(w, r, "signin_link", linkData{Name: l.Name, Next: safeNext(r.URL.Query().Get("next"))})
}

// linkUse spends the link and signs in.
func (c *Console) linkUse(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	l, err := c.store.UseLink(r.Context(), r.PathValue("secret"))
	if err != nil {
		c.linkRefused(w, r, err)
		return
	}
	who := c.cfg.Identity(l.Name)
	if who == nil || who.Role != l.Role || tokenFP(who) != l.TokenFP {
		c.linkRefused(w, r, ErrNoSession)
		return
	}
	c.startSession(w, r, who, "link", safeNext(r.PostFormValue("next")))
}

func (c *Console) linkRefused(w http.ResponseWriter, r *http.Request, err error) {
	if !errors.Is(err, ErrNoSession) {
		c.log.Error("console sign-in link lookup failed", "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, "Sign-in links cannot be read right now; try again in a moment.")
		return
	}
	c.log.Info("console sign-in refused", "remote", r.RemoteAddr, "reason", "unknown, used or expired link")
	c.renderStatus(w, r, http.StatusGone, "signin_link", linkData{
		Error: "This sign-in link has been used or has expired (links work once, for 60 seconds). Run airlock console for a new one.",
	})
}

// startSession stores a new session (a new id at every sign-in, so a
// cookie planted before cannot be promoted) and sends the browser on
// with 303, so the sign-in URL is not the page left in history.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, who *config.Identity, how, next string) {
	id, err := c.store.NewSession(r.Context(), who)
	if err != nil {
		c.log.Error("console session not stored", "err", err)
		c.fail(w, r, http.StatusServiceUnavailable, "Could not start a session right now; try again in a moment.")
		return
	}
	setCookie(w, r, c.cfg, id)
	c.log.Info("console sign-in", "identity", who.Name, "role", string(who.Role), "by", how, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(CookieName); err == nil {
		if err := c.store.EndSession(r.Context(), ck.Value); err != nil {
			c.log.Error("console sign-out not stored", "err", err)
			c.fail(w, r, http.StatusServiceUnavailable, "Could not sign out right now; try again in a moment.")
			return
		}
	}
	clearCookie(w, r, c.cfg)
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}
