// Package mcp is the MCP server agents use to ask for access and query
// through airlock.
//
// It holds no second path to a database or host: the query tool connects
// to the gateway's own Postgres or MySQL listener, and run_command to its
// SSH listener, as a normal client with the grant's token as password, so
// every statement is authorized, recorded (acknowledged before it runs),
// held and shown in the console exactly as a psql one is.
package mcp

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
)

// API is what the server asks of the gateway's HTTP API, as the agent
// whose API token it holds; control.Client is one.
type API interface {
	Resources(ctx context.Context) ([]control.Resource, error)
	Request(ctx context.Context, spec control.GrantSpec) (*control.Issued, error)
	WaitGrant(ctx context.Context, id string, wait time.Duration) (*authz.Grant, error)
}

// Options configure a Server.
type Options struct {
	// API reaches the gateway as the agent.
	API API
	// Log gets operational messages; never a token.
	Log *slog.Logger
	// Version is the server's version as announced to MCP clients.
	Version string
}

// Defaults of the tools' optional inputs.
const (
	DefaultMaxRows     = 1000
	MaxMaxRows         = 100000
	DefaultWaitTimeout = 5 * time.Minute
	// waitSpan is one long poll of GET /v1/grants/{id}?wait=; the API
	// cuts longer ones to control.MaxWait.
	waitSpan = 30 * time.Second
)

// Server is one agent's MCP session: its grants' tokens and the
// connections open through the gateway's listeners. Tokens live in
// memory only and are never logged.
type Server struct {
	api   API
	log   *slog.Logger
	mcp   *mcp.Server
	table *grants
	// onInitialized, if set, hears of the MCP session once it starts.
	onInitialized func(*mcp.ServerSession)
}

// New returns the MCP server of one agent session.
func New(o Options) *Server {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	v := o.Version
	if v == "" {
		v = "dev"
	}
	s := &Server{api: o.API, log: log, table: newGrants()}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "airlock", Title: "airlock gateway", Version: v}, &mcp.ServerOptions{
		Instructions: "Access to databases and hosts goes through airlock: list_resources, then request_access with a task " +
			"(a person approves it), wait_for_grant, then query or run_command with the grant id. Every statement is " +
			"checked against the grant and recorded; a refused one comes back as an error with the reason.",
		InitializedHandler: func(_ context.Context, r *mcp.InitializedRequest) {
			if s.onInitialized != nil {
				s.onInitialized(r.Session)
			}
		},
	})
	s.addTools()
	return s
}

// MCP is the SDK server, to run on a transport.
func (s *Server) MCP() *mcp.Server { return s.mcp }

// Run serves the session on t until the client leaves or ctx ends, then
// closes every connection the session opened.
func (s *Server) Run(ctx context.Context, t mcp.Transport) error {
	defer s.Close()
	return s.mcp.Run(ctx, t)
}

// Close ends every connection held for the session's grants.
func (s *Server) Close() { s.table.closeAll() }

// apiMessage is the gateway's own words for an API error.
func apiMessage(err error) string {
	var ae *control.APIError
	if errors.As(err, &ae) {
		return ae.Msg
	}
	return err.Error()
}
