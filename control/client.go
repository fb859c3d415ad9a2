package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
)

// Client calls the HTTP API; the CLI is built on it.
type Client struct {
	Server string // base URL, e.g. http://127.0.0.1:8080
	Token  string // the caller's API token
	HTTP   *http.Client
}

// Request files a request for access.
func (c *Client) Request(ctx context.Context, spec GrantSpec) (*Issued, error) {
	var out Issued
	return &out, c.do(ctx, "POST", "/v1/requests", spec, &out)
}

// Resources lists the resources the caller may request.
func (c *Client) Resources(ctx context.Context) ([]Resource, error) {
	var out []Resource
	return out, c.do(ctx, "GET", "/v1/resources", nil, &out)
}

// CreateGrant creates a pre-approved grant.
func (c *Client) CreateGrant(ctx context.Context, spec GrantSpec) (*Issued, error) {
	var out Issued
	return &out, c.do(ctx, "POST", "/v1/grants", spec, &out)
}

// Grants lists grants; query may filter by state and agent.
func (c *Client) Grants(ctx context.Context, query url.Values) ([]authz.Grant, error) {
	var out []authz.Grant
	return out, c.do(ctx, "GET", "/v1/grants?"+query.Encode(), nil, &out)
}

// Grant returns one grant.
func (c *Client) Grant(ctx context.Context, id string) (*authz.Grant, error) {
	var out authz.Grant
	return &out, c.do(ctx, "GET", "/v1/grants/"+url.PathEscape(id), nil, &out)
}

// WaitGrant returns grant id once it is no longer pending, or as it is
// after wait (the server cuts a wait to MaxWait).
func (c *Client) WaitGrant(ctx context.Context, id string, wait time.Duration) (*authz.Grant, error) {
	var out authz.Grant
	return &out, c.do(ctx, "GET", "/v1/grants/"+url.PathEscape(id)+"?wait="+url.QueryEscape(wait.String()), nil, &out)
}

// Decide approves, denies or revokes a grant.
func (c *Client) Decide(ctx context.Context, id, action string) (*authz.Grant, error) {
	var out authz.Grant
	return &out, c.do(ctx, "POST", "/v1/grants/"+url.PathEscape(id)+"/"+action, nil, &out)
}

// DecideWith approves or denies with a comment (a denial's reason), and
// approves for less than was asked (a shorter TTL, fewer tables).
func (c *Client) DecideWith(ctx context.Context, id, action string, o DecideOptions) (*authz.Grant, error) {
	var out authz.Grant
	return &out, c.do(ctx, "POST", "/v1/grants/"+url.PathEscape(id)+"/"+action, o, &out)
}

// ConsoleLink returns a one-time sign-in link to the web console for the
// caller.
func (c *Client) ConsoleLink(ctx context.Context) (*ConsoleLink, error) {
	var out ConsoleLink
	return &out, c.do(ctx, "POST", "/v1/console/links", nil, &out)
}

// Sessions lists recorded sessions; query may hold since, agent, resource
// and limit.
func (c *Client) Sessions(ctx context.Context, query url.Values) ([]recorder.Summary, error) {
	var out []recorder.Summary
	return out, c.do(ctx, "GET", "/v1/sessions?"+query.Encode(), nil, &out)
}

// SessionsPage lists one page of sessions (query with limit, and the
// cursor of the previous page if any) and returns the next page's cursor,
// empty on the last page.
func (c *Client) SessionsPage(ctx context.Context, query url.Values) ([]recorder.Summary, string, error) {
	var out []recorder.Summary
	h, err := c.doHeader(ctx, "GET", "/v1/sessions?"+query.Encode(), nil, &out)
	if err != nil {
		return nil, "", err
	}
	return out, h.Get(NextCursorHeader), nil
}

// Session returns one session with its events.
func (c *Client) Session(ctx context.Context, id string) (*SessionDetail, error) {
	var out SessionDetail
	return &out, c.do(ctx, "GET", "/v1/sessions/"+url.PathEscape(id), nil, &out)
}

// Export returns a session's export: its events as stored and the
// gateway's public keys.
func (c *Client) Export(ctx context.Context, id string) (*recorder.Export, error) {
	var out recorder.Export
	return &out, c.do(ctx, "GET", "/v1/sessions/"+url.PathEscape(id)+"/export", nil, &out)
}

// Keys returns the public keys the gateway signs events with.
func (c *Client) Keys(ctx context.Context) ([]recorder.PublicKey, error) {
	var out Keys
	return out.Keys, c.do(ctx, "GET", "/v1/keys", nil, &out)
}

// Holds lists held statements, newest first; state "" is every state.
func (c *Client) Holds(ctx context.Context, state authz.HoldState) ([]*authz.Hold, error) {
	var out []*authz.Hold
	q := url.Values{}
	if state != "" {
		q.Set("state", string(state))
	}
	return out, c.do(ctx, "GET", "/v1/holds?"+q.Encode(), nil, &out)
}

// Hold returns one held statement.
func (c *Client) Hold(ctx context.Context, id string) (*authz.Hold, error) {
	var out authz.Hold
	return &out, c.do(ctx, "GET", "/v1/holds/"+url.PathEscape(id), nil, &out)
}

// ApproveHold lets a held statement run; comment is optional.
func (c *Client) ApproveHold(ctx context.Context, id, comment string) (*authz.Hold, error) {
	var out authz.Hold
	return &out, c.do(ctx, "POST", "/v1/holds/"+url.PathEscape(id)+"/approve", HoldDecision{Comment: comment}, &out)
}

// DenyHold refuses a held statement; the reason is required and the
// agent's client is told it.
func (c *Client) DenyHold(ctx context.Context, id, reason string) (*authz.Hold, error) {
	var out authz.Hold
	return &out, c.do(ctx, "POST", "/v1/holds/"+url.PathEscape(id)+"/deny", HoldDecision{Reason: reason}, &out)
}

// NotifyStatus reports the notify targets' deliveries.
func (c *Client) NotifyStatus(ctx context.Context) (*NotifyReport, error) {
	var out NotifyReport
	return &out, c.do(ctx, "GET", "/v1/notify", nil, &out)
}

// APIError is an error answer from the gateway.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.doHeader(ctx, method, path, in, out)
	return err
}

// doHeader is do that also returns the answer's headers.
func (c *Client) doHeader(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	if c.Server == "" {
		return nil, fmt.Errorf("no gateway address: set --server or AIRLOCK_SERVER")
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Server, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reaching the gateway at %s: %w", c.Server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("reading the gateway's answer: %w", err)
		}
		var e apiError
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, &APIError{Status: resp.StatusCode, Msg: e.Error}
		}
		return nil, &APIError{Status: resp.StatusCode, Msg: fmt.Sprintf("gateway answered %s", resp.Status)}
	}
	// Decoded as it arrives, with no size limit: a session holding large
	// statements (recorder.max_statement_bytes, 64 MiB by default, each)
	// is as large as they are, and an export carries all of them.
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return nil, fmt.Errorf("gateway answer unreadable: %w", err)
	}
	return resp.Header, nil
}
