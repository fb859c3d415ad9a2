package mcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/crypto/ssh"
)

// maxOutput caps each of stdout and stderr returned by run_command; the
// target's whole output still passes through (and is recorded by) the
// gateway.
const maxOutput = 1 << 20

// RunCommandInput is run_command's input.
type RunCommandInput struct {
	Grant string   `json:"grant" jsonschema:"an active SSH grant's id"`
	Argv  []string `json:"argv" jsonschema:"the command and its arguments, one word each; no shell syntax"`
}

// RunCommandOutput is run_command's result.
type RunCommandOutput struct {
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	ExitStatus int    `json:"exit_status" jsonschema:"the command's exit status; 126 when airlock refused it (the reason is on stderr)"`
	ExitSignal string `json:"exit_signal,omitempty"`
	Truncated  bool   `json:"truncated,omitempty" jsonschema:"true when stdout or stderr passed 1 MiB and was cut"`
}

func (s *Server) runCommand(ctx context.Context, _ *mcp.CallToolRequest, in RunCommandInput) (*mcp.CallToolResult, RunCommandOutput, error) {
	var zero RunCommandOutput
	g, err := s.table.get(in.Grant)
	if err != nil {
		return nil, zero, err
	}
	if g.protocol != "ssh" {
		return nil, zero, fmt.Errorf("grant %s is for %s resource %s: use query", g.id, g.protocol, g.resource)
	}
	if len(in.Argv) == 0 {
		return nil, zero, errors.New("argv is empty: give the command and its arguments")
	}
	if g.address == "" {
		return nil, zero, errNoListener
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ssh == nil {
		c, err := g.sshDial(ctx)
		if err != nil {
			return nil, zero, err
		}
		g.ssh = c
	}
	sess, err := g.ssh.NewSession()
	if err != nil {
		// The connection is gone (revoked, expired, gateway restarted):
		// the next call dials again.
		_ = g.ssh.Close()
		g.ssh = nil
		return nil, zero, fmt.Errorf("ssh session on %s: %v", g.resource, err)
	}
	defer sess.Close()
	var stdout, stderr capped
	sess.Stdout, sess.Stderr = &stdout, &stderr
	stop := context.AfterFunc(ctx, func() { _ = sess.Close() })
	defer stop()
	err = sess.Run(shellQuote(in.Argv))
	out := RunCommandOutput{Stdout: stdout.String(), Stderr: stderr.String(), Truncated: stdout.cut || stderr.cut}
	var ee *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		out.ExitStatus = ee.ExitStatus()
		out.ExitSignal = ee.Signal()
	case errors.As(err, &missing):
		return nil, zero, fmt.Errorf("the command ended without an exit status (the connection was closed); stderr: %s", out.Stderr)
	default:
		if ctx.Err() != nil {
			return nil, zero, ctx.Err()
		}
		return nil, zero, fmt.Errorf("running the command: %v", err)
	}
	return nil, out, nil
}

// sshDial connects to the gateway's SSH listener as AGENT+RESOURCE with
// the grant's token as password (docs/ssh.md).
func (g *grant) sshDial(ctx context.Context) (*ssh.Client, error) {
	cfg := &ssh.ClientConfig{
		User: g.agent + "+" + g.resource,
		Auth: []ssh.AuthMethod{ssh.Password(g.token)},
		// The gateway's host key is not published to agents; the
		// password is a short-lived grant token. docs/mcp.md says so.
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), //nolint:gosec // see above
		Timeout:         dialTimeout,
	}
	d := netDialer()
	nc, err := d.DialContext(ctx, "tcp", g.address)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s through airlock: %v", g.resource, err)
	}
	cc, chans, reqs, err := ssh.NewClientConn(nc, g.address, cfg)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connecting to %s through airlock: %v", g.resource, err)
	}
	return ssh.NewClient(cc, chans, reqs), nil
}

// shellQuote joins argv as the shell would read it back word for word;
// the gateway matches the words against the grant's patterns.
func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// capped keeps the first maxOutput bytes written to it.
type capped struct {
	bytes.Buffer
	cut bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := maxOutput - c.Len(); room < len(p) {
		c.cut = true
		if room > 0 {
			c.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return c.Buffer.Write(p)
}

var _ io.Writer = (*capped)(nil)

func netDialer() *net.Dialer { return &net.Dialer{Timeout: dialTimeout} }
