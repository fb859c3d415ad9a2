package mcp

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
)

// HTTPOptions configure the streamable HTTP handler the gateway's API
// listener serves at /mcp.
type HTTPOptions struct {
	// Config holds the identities whose API tokens are accepted.
	Config *config.Config
	// API is the HTTP API's handler. Each MCP session calls it in
	// process, as the agent whose bearer token opened the session, so
	// the API's own authentication and rules apply unchanged.
	API http.Handler
	Log *slog.Logger
	// Version is announced to MCP clients.
	Version string
	// IdleTimeout closes an MCP session, and the connections it holds,
	// after this long without a request (default 30m).
	IdleTimeout time.Duration
}

// tokenKey carries the caller's API token in auth.TokenInfo.Extra, for
// the session's API client.
const tokenKey = "airlock_api_token"

// Handler serves MCP over streamable HTTP, authenticated by
// `Authorization: Bearer <API token>` of an identity with role agent.
// Each MCP session is bound to the identity that opened it (a request
// with another identity's token is refused by the SDK's session check).
func Handler(o HTTPOptions) http.Handler {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	idle := o.IdleTimeout
	if idle == 0 {
		idle = 30 * time.Minute
	}
	getServer := func(r *http.Request) *mcp.Server {
		ti := auth.TokenInfoFromContext(r.Context())
		if ti == nil {
			return nil
		}
		tok, _ := ti.Extra[tokenKey].(string)
		api := &control.Client{
			// The host the API sees: a listener bound to every address
			// is then reached on loopback.
			Server: "http://127.0.0.1",
			Token:  tok,
			HTTP:   &http.Client{Transport: inProcess{o.API}},
		}
		s := New(Options{API: api, Log: log, Version: o.Version})
		s.onInitialized = func(ss *mcp.ServerSession) {
			// The session's connections close with the session (the
			// client's DELETE or IdleTimeout).
			go func() { _ = ss.Wait(); s.Close() }()
		}
		return s.MCP()
	}
	h := mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{Logger: log, SessionTimeout: idle})
	verify := func(_ context.Context, tok string, _ *http.Request) (*auth.TokenInfo, error) {
		who := control.Identify(o.Config, tok)
		if who == nil {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: who.Name, Extra: map[string]any{tokenKey: tok}}, nil
	}
	bearer := auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(h)
	agents := []config.Role{config.RoleAgent}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The role is checked before the SDK sees the request, so a
		// reviewer's token gets 403 and the reason, as from the API.
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			if who := control.Identify(o.Config, tok); who != nil && !slices.Contains(agents, who.Role) {
				http.Error(w, who.Name+" has role "+string(who.Role)+"; MCP needs "+control.RoleList(agents), http.StatusForbidden)
				return
			}
		}
		bearer.ServeHTTP(w, r)
	})
}

// inProcess is an http.RoundTripper that answers from a handler in this
// process: the MCP session's API calls never leave the gateway.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		defer r.Body.Close()
	}
	rec := httptest.NewRecorder()
	r.RemoteAddr = "127.0.0.1:0"
	r.RequestURI = r.URL.RequestURI()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}
