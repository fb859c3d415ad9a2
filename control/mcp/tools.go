package mcp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
)

// ListResourcesOutput is list_resources' result.
type ListResourcesOutput struct {
	Resources []control.Resource `json:"resources"`
}

// RequestAccessInput is request_access's input: what airlock request
// asks for.
type RequestAccessInput struct {
	Resource        string   `json:"resource" jsonschema:"resource name, as list_resources returns it"`
	Task            string   `json:"task" jsonschema:"what the access is for, shown to the approver (e.g. a ticket and a sentence)"`
	Access          string   `json:"access,omitempty" jsonschema:"database: read, write, ddl or admin (default read)"`
	Duration        string   `json:"duration,omitempty" jsonschema:"how long the grant lasts once approved, a Go duration such as 30m (default: the gateway's)"`
	Tables          []string `json:"tables,omitempty" jsonschema:"database: only these SCHEMA.TABLE names (* wildcards); empty: any table"`
	Functions       []string `json:"functions,omitempty" jsonschema:"database: extra functions allowed at read access"`
	AllowDrop       bool     `json:"allow_drop,omitempty" jsonschema:"database, ddl: let DDL drop (DROP, TRUNCATE)"`
	AllowUnfiltered bool     `json:"allow_unfiltered,omitempty" jsonschema:"database: let UPDATE and DELETE run without WHERE"`
	Commands        []string `json:"commands,omitempty" jsonschema:"ssh: allow commands matching these argv patterns, * per word (e.g. 'systemctl status *')"`
	Hold            []string `json:"hold,omitempty" jsonschema:"database: statements of these kinds wait for a person to approve each one (DELETE, TRUNCATE, ..., or DDL, WRITE, UNFILTERED); the query call waits meanwhile"`
	HoldTables      []string `json:"hold_tables,omitempty" jsonschema:"database: statements writing these tables wait for a person to approve each one"`
	HoldCommands    []string `json:"hold_commands,omitempty" jsonschema:"ssh: commands matching these patterns (as commands) wait for a person to approve each one"`
	HoldDenied      bool     `json:"hold_denied,omitempty" jsonschema:"database: a statement the grant would refuse waits for a person instead, who may let it through once"`
	HoldTimeout     string   `json:"hold_timeout,omitempty" jsonschema:"how long a held statement waits before it is refused, a Go duration (default 5m)"`
}

// RequestAccessOutput is request_access's result. The grant's token is
// kept by the MCP server, never returned.
type RequestAccessOutput struct {
	RequestID string    `json:"request_id" jsonschema:"the grant id to pass to wait_for_grant, query, run_command and end_session"`
	State     string    `json:"state"`
	Expires   time.Time `json:"request_expires_at,omitzero" jsonschema:"when the request lapses if nobody decides"`
	Note      string    `json:"note"`
}

// WaitInput is wait_for_grant's input.
type WaitInput struct {
	ID      string `json:"id" jsonschema:"the request id request_access returned"`
	Timeout string `json:"timeout,omitempty" jsonschema:"how long to wait for a decision, a Go duration (default 5m)"`
}

// GrantOutput is wait_for_grant's result: the grant as it is.
type GrantOutput struct {
	ID        string    `json:"id"`
	State     string    `json:"state" jsonschema:"active (approved), denied, expired, revoked, or pending when the timeout passed"`
	Resource  string    `json:"resource"`
	Access    string    `json:"access,omitempty"`
	Tables    []string  `json:"tables,omitempty"`
	DecidedBy string    `json:"decided_by,omitempty"`
	Reason    string    `json:"reason,omitempty" jsonschema:"the approver's comment, or why it was denied"`
	ExpiresAt time.Time `json:"expires_at,omitzero" jsonschema:"when an active grant ends"`
}

// EndSessionInput is end_session's input.
type EndSessionInput struct {
	Grant string `json:"grant" jsonschema:"the grant id whose connection to close"`
}

// EndSessionOutput is end_session's result.
type EndSessionOutput struct {
	Closed bool `json:"closed" jsonschema:"false when no connection was open"`
}

func (s *Server) addTools() {
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "list_resources",
		Description: "List the databases and hosts airlock guards, with the access each offers.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.listResources)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name: "request_access",
		Description: "Ask a person for access to a resource for a task. Returns the request id; call wait_for_grant with it. " +
			"Ask for the least access the task needs (read unless it must write; the tables it needs).",
	}, s.requestAccess)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "wait_for_grant",
		Description: "Wait until a request is approved or denied (or the timeout passes). Returns the grant's state and the approver's reason.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.waitForGrant)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name: "query",
		Description: "Run one SQL statement on a Postgres or MySQL resource through airlock, under an active grant. " +
			"Parameters are $1, $2 (Postgres) or ? (MySQL). Statements of one grant share one connection (transactions carry over) " +
			"until end_session. A statement the grant does not allow is refused with the reason; one the grant holds waits until a person " +
			"approves it (then it runs and its result comes back) or denies it (an error with the reason).",
	}, s.query)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "run_command",
		Description: "Run a command (argv, no shell) on an SSH resource through airlock, under an active grant whose patterns allow it.",
	}, s.runCommand)
	mcp.AddTool(s.mcp, &mcp.Tool{
		Name:        "end_session",
		Description: "Close the connection held for a grant; the next query or run_command opens a new session.",
		Annotations: &mcp.ToolAnnotations{IdempotentHint: true},
	}, s.endSession)
}

func (s *Server) listResources(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, ListResourcesOutput, error) {
	rs, err := s.api.Resources(ctx)
	if err != nil {
		return nil, ListResourcesOutput{}, fmt.Errorf("listing resources: %s", apiMessage(err))
	}
	if rs == nil {
		rs = []control.Resource{}
	}
	return nil, ListResourcesOutput{Resources: rs}, nil
}

func (s *Server) requestAccess(ctx context.Context, _ *mcp.CallToolRequest, in RequestAccessInput) (*mcp.CallToolResult, RequestAccessOutput, error) {
	var zero RequestAccessOutput
	rs, err := s.api.Resources(ctx)
	if err != nil {
		return nil, zero, fmt.Errorf("listing resources: %s", apiMessage(err))
	}
	var res *control.Resource
	for i := range rs {
		if rs[i].Name == in.Resource {
			res = &rs[i]
		}
	}
	spec := control.GrantSpec{
		Resource: in.Resource, Task: in.Task, Access: in.Access, TTL: in.Duration,
		Scope: authz.Scope{Tables: in.Tables, Functions: in.Functions, AllowDrop: in.AllowDrop, AllowUnfiltered: in.AllowUnfiltered},
		SSH:   authz.SSHPolicy{Commands: in.Commands},
		Holds: authz.Holds{Kinds: in.Hold, Tables: in.HoldTables, Commands: in.HoldCommands, Denied: in.HoldDenied},
	}
	if in.HoldTimeout != "" {
		d, err := time.ParseDuration(in.HoldTimeout)
		if err != nil || d <= 0 {
			return nil, zero, fmt.Errorf("hold_timeout %q: want a duration such as 10m", in.HoldTimeout)
		}
		spec.Holds.Timeout = authz.Duration(d)
	}
	// The gateway names an unknown resource and the closest one; let it.
	iss, err := s.api.Request(ctx, spec)
	if err != nil {
		return nil, zero, fmt.Errorf("request refused: %s", apiMessage(err))
	}
	if res == nil {
		return nil, zero, fmt.Errorf("resource %q is not in list_resources", in.Resource)
	}
	s.table.add(&grant{
		id: iss.Grant.ID, agent: iss.Grant.Agent, resource: res.Name, protocol: res.Protocol,
		address: res.Address, token: iss.Token, types: pgtype.NewMap(),
	})
	s.log.Info("mcp: access requested", "grant", iss.Grant.ID, "agent", iss.Grant.Agent, "resource", res.Name)
	return nil, RequestAccessOutput{
		RequestID: iss.Grant.ID, State: string(iss.Grant.State), Expires: iss.Grant.RequestExpiresAt,
		Note: "A person must approve it: call wait_for_grant with this id.",
	}, nil
}

func (s *Server) waitForGrant(ctx context.Context, _ *mcp.CallToolRequest, in WaitInput) (*mcp.CallToolResult, GrantOutput, error) {
	var zero GrantOutput
	timeout := DefaultWaitTimeout
	if in.Timeout != "" {
		d, err := time.ParseDuration(in.Timeout)
		if err != nil || d < 0 {
			return nil, zero, fmt.Errorf("timeout %q: want a duration such as 10m", in.Timeout)
		}
		timeout = d
	}
	until := time.Now().Add(timeout)
	for {
		span := min(waitSpan, max(time.Until(until), 0))
		g, err := s.api.WaitGrant(ctx, in.ID, span)
		if err != nil {
			return nil, zero, fmt.Errorf("waiting for %s: %s", in.ID, apiMessage(err))
		}
		if g.State != authz.StatePending || !time.Now().Before(until) {
			return nil, grantOutput(g), nil
		}
		if err := ctx.Err(); err != nil {
			return nil, zero, fmt.Errorf("waiting for %s: %w", in.ID, err)
		}
	}
}

func grantOutput(g *authz.Grant) GrantOutput {
	o := GrantOutput{
		ID: g.ID, State: string(g.State), Resource: g.Resource, DecidedBy: g.DecidedBy,
		Reason: g.Comment, ExpiresAt: g.ExpiresAt, Tables: g.Scope.Tables,
	}
	if g.SSH.IsZero() {
		o.Access = g.Access.String()
	} else {
		o.Access = "ssh: " + strings.Join(g.SSH.Allows(), "; ")
	}
	if g.State == authz.StateDenied && o.Reason == "" {
		o.Reason = "no reason given"
	}
	return o
}

func (s *Server) endSession(_ context.Context, _ *mcp.CallToolRequest, in EndSessionInput) (*mcp.CallToolResult, EndSessionOutput, error) {
	g, err := s.table.get(in.Grant)
	if err != nil {
		return nil, EndSessionOutput{}, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return nil, EndSessionOutput{Closed: g.closeConn()}, nil
}

// errNotDatabase and friends are tool errors about a grant's protocol.
var errNoListener = errors.New("the gateway has no listener for this resource's protocol (its listen section)")
