package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/airlockhq/airlock/config"
)

// CSP is the Content-Security-Policy of every console response: nothing
// unless named; scripts, styles and fonts only from the console's own
// files, nothing inline and no eval; no plugins, no framing, no <base>,
// forms only to the console.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
	"connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// PlayerCSP is CSP for a page that runs asciinema-player: its bundle
// compiles a WebAssembly terminal ('wasm-unsafe-eval' allows WebAssembly,
// not JavaScript eval) and may start a worker. Only such a page gets it;
// call usePlayerCSP in its handler.
const PlayerCSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; " +
	"font-src 'self'; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; " +
	"base-uri 'none'; form-action 'self'"

// usePlayerCSP relaxes this response's CSP to PlayerCSP; call it before
// writing anything.
func usePlayerCSP(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", PlayerCSP)
}

// securityHeaders sets the headers every console response carries. Pages
// are not cached (they show who is signed in and what they may do);
// assetCache relaxes that for static files.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// assetCache lets browsers keep static files a few minutes (they change
// only with the binary) and lists no directory.
func assetCache(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		next.ServeHTTP(w, r)
	})
}

// secure says whether the session cookie gets the Secure attribute: when
// the request came over TLS, or people reach the console by an https
// public_url (TLS ended by a proxy in front).
func secure(r *http.Request, cfg *config.Config) bool {
	return r.TLS != nil || strings.HasPrefix(cfg.Console.PublicURL, "https:")
}

func setCookie(w http.ResponseWriter, r *http.Request, cfg *config.Config, value string) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: value, Path: "/",
		MaxAge:   int(cfg.Console.SessionLifetime.Seconds()),
		HttpOnly: true, Secure: secure(r, cfg), SameSite: http.SameSiteLaxMode,
	})
}

func clearCookie(w http.ResponseWriter, r *http.Request, cfg *config.Config) {
	if _, err := r.Cookie(CookieName); err != nil {
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: secure(r, cfg), SameSite: http.SameSiteLaxMode,
	})
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// safeNext is where to go after sign-in: a console path only, never
// another site (//evil.example, /\evil.example).
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Host != "" || u.Scheme != "" {
		return "/ui/"
	}
	return next
}
