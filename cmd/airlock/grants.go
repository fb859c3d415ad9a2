package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
)

// specFlags are what a request or a pre-approved grant asks for.
func specFlags(cmd *cobra.Command, spec *control.GrantSpec) {
	cmd.Flags().StringVar(&spec.Resource, "resource", "", "resource name, as airlock resources lists them (required)")
	cmd.Flags().StringVar(&spec.Task, "task", "", "what the access is for (required)")
	cmd.Flags().StringVar(&spec.Access, "access", "", "database: read, write, ddl or admin (default read)")
	cmd.Flags().StringVar(&spec.TTL, "ttl", "", "how long the grant lasts once approved (default: the gateway's, 1h)")
	f := cmd.Flags()
	f.StringArrayVar(&spec.Scope.Tables, "table", nil, "database: only this SCHEMA.TABLE (repeatable, * wildcards)")
	f.StringArrayVar(&spec.Scope.Functions, "function", nil, "database: also allow this function at read access (repeatable)")
	f.BoolVar(&spec.Scope.AllowDrop, "allow-drop", false, "database: let DDL drop (DROP, TRUNCATE)")
	f.BoolVar(&spec.Scope.AllowUnfiltered, "allow-unfiltered", false, "database: let UPDATE and DELETE run without WHERE")
	f.IntVar(&spec.Scope.MaxTables, "max-tables", 0, "database: refuse statements touching more tables (0: no limit)")
	f.BoolVar(&spec.Scope.AllowFileLoad, "allow-file-load", false, "mysql: allow LOAD DATA LOCAL INFILE")
	f.BoolVar(&spec.Scope.AllowServerFiles, "allow-server-files", false, "database, admin: allow server-side files and programs (COPY ... PROGRAM)")
	f.StringArrayVar(&spec.SSH.Commands, "command", nil, "ssh: allow commands matching this argv pattern, * per word (repeatable)")
	f.BoolVar(&spec.SSH.Shell, "shell", false, "ssh: allow an interactive shell")
	f.StringVar(&spec.SSH.Files, "files", "", "ssh: allow scp and sftp: read or read-write")
	f.StringArrayVar(&spec.SSH.Forwards, "forward", nil, "ssh: allow forwarding to HOST:PORT (repeatable)")
	f.StringArrayVar(&spec.Holds.Kinds, "hold", nil, "database: statements of this kind wait for an approver (DELETE, TRUNCATE, ..., or DDL, WRITE, UNFILTERED; repeatable)")
	f.StringArrayVar(&spec.Holds.Tables, "hold-table", nil, "database: statements writing this table wait for an approver (repeatable)")
	f.StringArrayVar(&spec.Holds.Commands, "hold-command", nil, "ssh: allowed commands matching this argv pattern wait for an approver (repeatable)")
	f.BoolVar(&spec.Holds.Denied, "hold-denied", false, "what the grant would refuse waits for an approver instead")
	f.Var((*durationFlag)(&spec.Holds.Timeout), "hold-timeout", "how long a held statement waits before it is refused (default 5m)")
	_ = cmd.MarkFlagRequired("resource")
	_ = cmd.MarkFlagRequired("task")
}

// durationFlag is an authz.Duration flag.
type durationFlag authz.Duration

func (d *durationFlag) String() string {
	if *d == 0 {
		return ""
	}
	return time.Duration(*d).String()
}

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = durationFlag(v)
	return nil
}

func (d *durationFlag) Type() string { return "duration" }

// Exit statuses of airlock request --wait besides 0 (approved) and 1
// (an error).
const (
	exitDenied   = 3 // an approver denied the request
	exitTimeout  = 4 // --timeout passed with the request still pending
	exitExpired  = 5 // the request expired without a decision
	waitPollSpan = 30 * time.Second
)

func requestCmd(g *globals) *cobra.Command {
	var spec control.GrantSpec
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "request --resource R --task TEXT [--access LEVEL] [--ttl DUR] [--wait [--timeout D]]",
		Short: "Ask for access (agent); prints the request id and a connection token",
		Long: `Ask for access (agent); prints the request id and a connection token.

With --wait it blocks until an approver decides, printing progress on
stderr: approved, it prints the token on stdout (with --json, the request
as approved and the token) and exits 0; denied, it prints the reason and
exits 3. Exit 4: --timeout passed and the request is still pending (the
token is printed on stdout all the same; it works once approved); exit 5:
the request expired without a decision. airlock resources lists what may
be requested.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !wait && cmd.Flags().Changed("timeout") {
				return errors.New("--timeout applies to --wait")
			}
			if timeout < 0 {
				return errors.New("--timeout must be positive (e.g. 10m)")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			iss, err := c.Request(cmd.Context(), spec)
			if err != nil {
				return err
			}
			if wait {
				return waitDecision(cmd.Context(), g, c, iss, timeout)
			}
			if g.json {
				return printJSON(iss)
			}
			fmt.Printf("request: %s\n", iss.Grant.ID)
			fmt.Printf("state:   %s (an approver must run: airlock grants approve %s)\n", iss.Grant.State, iss.Grant.ID)
			if t := iss.Grant.RequestExpiresAt; !t.IsZero() {
				fmt.Printf("expires: %s unless approved or denied by then\n", when(t))
			}
			fmt.Printf("token:   %s\n", iss.Token)
			fmt.Printf("\nThe token is shown only now. Use it as the password once the request is approved.\n")
			return nil
		},
	}
	specFlags(cmd, &spec)
	cmd.Flags().BoolVar(&wait, "wait", false, "block until the request is approved or denied; print the token on approval")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait: give up after this long (exit 4); 0 waits until the request expires")
	return cmd
}

// waitDecision waits for iss's request to be decided, through the API's
// long poll (GET /v1/grants/{id}?wait=), so a decision is heard at once.
// Progress goes to stderr; stdout gets the token (or the JSON) only.
func waitDecision(ctx context.Context, g *globals, c *control.Client, iss *control.Issued, timeout time.Duration) error {
	id := iss.Grant.ID
	var until time.Time
	if timeout > 0 {
		until = time.Now().Add(timeout)
	}
	limit := "until it expires"
	if t := iss.Grant.RequestExpiresAt; !t.IsZero() {
		limit = "until " + when(t) + ", when it expires"
	}
	if !until.IsZero() && (iss.Grant.RequestExpiresAt.IsZero() || until.Before(iss.Grant.RequestExpiresAt)) {
		limit = "for " + timeout.String()
	}
	fmt.Fprintf(os.Stderr, "airlock: request %s filed; waiting %s for an approver (airlock grants approve %s)\n", id, limit, id)
	printToken := func(x *authz.Grant) error {
		if g.json {
			return printJSON(&control.Issued{Grant: x, Token: iss.Token})
		}
		fmt.Println(iss.Token)
		return nil
	}
	started := time.Now()
	for {
		span := waitPollSpan
		if !until.IsZero() {
			left := time.Until(until)
			if left <= 0 {
				if err := printToken(iss.Grant); err != nil {
					return err
				}
				return &verifyFailure{code: exitTimeout, msg: fmt.Sprintf("request %s still pending after %s (--timeout); its token, printed on stdout, works once an approver approves it (airlock grants show %s)", id, timeout, id)}
			}
			span = min(span, left)
		}
		x, err := c.WaitGrant(ctx, id, span)
		if ctx.Err() != nil {
			fmt.Fprintf(os.Stderr, "airlock: stopped waiting; request %s is still pending and its token, on stdout, works once approved\n", id)
			if perr := printToken(iss.Grant); perr != nil {
				return perr
			}
			return ctx.Err()
		}
		if err != nil {
			return err
		}
		switch x.State {
		case authz.StatePending:
			fmt.Fprintf(os.Stderr, "airlock: request %s still pending (%s)\n", id, time.Since(started).Round(time.Second))
			continue
		case authz.StateActive:
			fmt.Fprintf(os.Stderr, "airlock: request %s approved by %s; the grant lasts until %s\n", id, x.DecidedBy, when(x.ExpiresAt))
			if x.Comment != "" {
				fmt.Fprintf(os.Stderr, "airlock: comment: %s\n", x.Comment)
			}
			return printToken(x)
		case authz.StateDenied:
			why := x.Comment
			if why == "" {
				why = "no reason given"
			}
			return &verifyFailure{code: exitDenied, msg: fmt.Sprintf("request %s denied by %s: %s", id, x.DecidedBy, why)}
		case authz.StateExpired:
			return &verifyFailure{code: exitExpired, msg: fmt.Sprintf("request %s expired at %s without a decision; request again", id, when(x.RequestExpiresAt))}
		default:
			return fmt.Errorf("request %s is %s", id, x.State)
		}
	}
}

func grantsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "grants", Short: "List, approve, deny, revoke and create task grants (approver)"}
	var state, agent string
	list := &cobra.Command{
		Use:   "list",
		Short: "List grants and requests",
		Args:  cobra.NoArgs,
		RunE: call(g, func(ctx context.Context, c *control.Client, _ []string) ([]authz.Grant, error) {
			q := url.Values{}
			if state != "" {
				q.Set("state", state)
			}
			if agent != "" {
				q.Set("agent", agent)
			}
			return c.Grants(ctx, q)
		}, func(gs []authz.Grant) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tAGENT\tRESOURCE\tACCESS\tEXPIRES\tTASK")
			for _, x := range gs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.ID, x.State, x.Agent, x.Resource, accessOf(&x), when(x.ExpiredAt()), clip(x.Task, 60))
			}
			return tw.Flush()
		}),
	}
	list.Flags().StringVar(&state, "state", "", "only grants in this state (pending, active, denied, revoked, expired)")
	list.Flags().StringVar(&agent, "agent", "", "only this agent's grants")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one grant",
		Args:  cobra.ExactArgs(1),
		RunE: call(g, func(ctx context.Context, c *control.Client, args []string) (*authz.Grant, error) {
			return c.Grant(ctx, args[0])
		}, func(x *authz.Grant) error {
			printGrant(x)
			return nil
		}),
	}
	cmd.AddCommand(list, show, decideCmd(g, "approve", "Approve a pending request"),
		decideCmd(g, "deny", "Deny a pending request"), decideCmd(g, "revoke", "Revoke an active grant; its live sessions end at once"),
		createCmd(g))
	return cmd
}

func decideCmd(g *globals, action, short string) *cobra.Command {
	var o control.DecideOptions
	use := action + " ID"
	switch action {
	case "approve":
		use += " [--ttl DUR] [--table T]... [--comment TEXT]"
	case "deny":
		use += " --reason TEXT"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: call(g, func(ctx context.Context, c *control.Client, args []string) (*authz.Grant, error) {
			if o.Comment == "" && o.TTL == "" && len(o.Tables) == 0 {
				return c.Decide(ctx, args[0], action)
			}
			return c.DecideWith(ctx, args[0], action, o)
		}, func(x *authz.Grant) error {
			fmt.Printf("grant %s is now %s\n", x.ID, x.State)
			if action == "approve" {
				fmt.Printf("agent %s may connect to %s until %s\n", x.Agent, x.Resource, when(x.ExpiresAt))
			}
			return nil
		}),
	}
	switch action {
	case "approve":
		cmd.Flags().StringVar(&o.Comment, "comment", "", "a comment recorded on the grant and on every event of its sessions")
		cmd.Flags().StringVar(&o.TTL, "ttl", "", "approve for less time than was asked (e.g. 30m)")
		cmd.Flags().StringArrayVar(&o.Tables, "table", nil, "approve only these of the tables asked for (repeatable; any table was asked: limit to these)")
	case "deny":
		cmd.Flags().StringVar(&o.Comment, "reason", "", "why the request is denied (required; the agent is told)")
		_ = cmd.MarkFlagRequired("reason")
	}
	return cmd
}

func createCmd(g *globals) *cobra.Command {
	var spec control.GrantSpec
	cmd := &cobra.Command{
		Use:   "create --agent A --resource R --task TEXT [--access LEVEL] [--ttl DUR]",
		Short: "Create a pre-approved grant for an agent; prints its connection token",
		Args:  cobra.NoArgs,
		RunE: call(g, func(ctx context.Context, c *control.Client, _ []string) (*control.Issued, error) {
			return c.CreateGrant(ctx, spec)
		}, func(iss *control.Issued) error {
			fmt.Printf("grant:   %s (active until %s)\n", iss.Grant.ID, when(iss.Grant.ExpiresAt))
			fmt.Printf("token:   %s\n", iss.Token)
			fmt.Printf("\nThe token is shown only now; hand it to agent %s.\n", iss.Grant.Agent)
			return nil
		}),
	}
	cmd.Flags().StringVar(&spec.Agent, "agent", "", "agent the grant is for (required)")
	_ = cmd.MarkFlagRequired("agent")
	specFlags(cmd, &spec)
	return cmd
}

func printGrant(x *authz.Grant) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("id", x.ID)
	row("state", string(x.State))
	row("agent", x.Agent)
	row("resource", x.Resource)
	if x.SSH.IsZero() {
		row("access", x.Access.String())
		row("tables", strings.Join(x.Scope.Tables, ", "))
	} else {
		// An SSH grant has no access level (its Access is the unused
		// default, read): it allows what its SSH policy says.
		row("access", "ssh")
		row("commands", strings.Join(x.SSH.Commands, " | "))
		if x.SSH.Shell {
			row("shell", "allowed")
		}
		row("files", x.SSH.Files)
		row("forwards", strings.Join(x.SSH.Forwards, ", "))
	}
	row("task", x.Task)
	row("requested", x.RequestedBy+" at "+when(x.RequestedAt))
	if x.DecidedBy != "" {
		row("decided", x.DecidedBy+" at "+when(x.DecidedAt))
	}
	row("comment", x.Comment)
	if x.Asked != nil {
		row("asked", "ttl "+time.Duration(x.Asked.TTL).String()+tablesNote(x.Asked.Tables))
	}
	if x.RevokedBy != "" {
		row("revoked", x.RevokedBy+" at "+when(x.RevokedAt))
	}
	row("ttl", time.Duration(x.TTL).String())
	if x.ExpiresAt.IsZero() && !x.RequestExpiresAt.IsZero() && x.DecidedBy == "" {
		row("request expires", when(x.RequestExpiresAt))
	} else {
		row("expires", when(x.ExpiresAt))
	}
	_ = tw.Flush()
}

// accessOf is what a grant allows in one cell: a database grant's access
// level, or what an SSH grant allows ("ssh: interactive shell; files:
// read").
func accessOf(x *authz.Grant) string {
	if x.SSH.IsZero() {
		return x.Access.String()
	}
	return "ssh: " + strings.Join(x.SSH.Allows(), "; ")
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func tablesNote(ts []string) string {
	if len(ts) == 0 {
		return ", any table"
	}
	return ", tables " + strings.Join(ts, ", ")
}
