package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/internal/plural"
	"github.com/airlockhq/airlock/recorder"
)

func sessionsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Short: "List and read recorded sessions (reviewer)"}
	var since, until, agent, resource, grant, task, state, cursor string
	var limit int
	var denied bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List sessions, newest first",
		Long: `List sessions, newest first, filtered by the flags given.

With --limit the list is one page: when more sessions match, the cursor of
the next page is printed on stderr (in --json, see the Airlock-Next-Cursor
header of GET /v1/sessions); pass it to --cursor for the next page.`,
		Args: cobra.NoArgs,
		RunE: call(g, func(ctx context.Context, c *control.Client, _ []string) ([]recorder.Summary, error) {
			q := url.Values{}
			for k, v := range map[string]string{"since": since, "until": until, "agent": agent, "resource": resource,
				"grant": grant, "task": task, "state": state, "cursor": cursor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if denied {
				q.Set("denied", "true")
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			ss, next, err := c.SessionsPage(ctx, q)
			if err == nil && next != "" {
				fmt.Fprintf(os.Stderr, "more sessions: --cursor %s\n", next)
			}
			return ss, err
		}, func(ss []recorder.Summary) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SESSION\tSTARTED\tSTATUS\tAGENT\tRESOURCE\tGRANT\tSTMTS\tDENIED\tCLIENT")
			for _, s := range ss {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.Session, when(s.Start), s.Status, s.Agent, s.Resource, dash(s.Grant), s.Statements, s.Denied, s.Client)
			}
			return tw.Flush()
		}),
	}
	list.Flags().StringVar(&since, "since", "", "only sessions started since a time (RFC 3339) or a duration ago (2h)")
	list.Flags().StringVar(&until, "until", "", "only sessions started before a time (RFC 3339) or a duration ago (2h)")
	list.Flags().StringVar(&agent, "agent", "", "only this agent's sessions")
	list.Flags().StringVar(&resource, "resource", "", "only sessions to this resource")
	list.Flags().StringVar(&grant, "grant", "", "only sessions of this grant")
	list.Flags().StringVar(&task, "task", "", "only sessions whose task text contains this (case ignored)")
	list.Flags().StringVar(&state, "state", "", "only sessions in this state: open, ended, interrupted or auth_failed")
	list.Flags().BoolVar(&denied, "denied", false, "only sessions with a denied statement or command")
	list.Flags().StringVar(&cursor, "cursor", "", "continue after the page that printed this cursor")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many sessions (a page, newest first)")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a session: who, why, every statement with its decision and result",
		Args:  cobra.ExactArgs(1),
		RunE: call(g, func(ctx context.Context, c *control.Client, args []string) (*control.SessionDetail, error) {
			return c.Session(ctx, args[0])
		}, func(d *control.SessionDetail) error {
			printSession(os.Stdout, d)
			return nil
		}),
	}
	cmd.AddCommand(list, show, verifyCmd(g), exportCmd(g))
	cmd.AddCommand(replayCmd(g))
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printSession writes a session for a reviewer: its header, then one line
// per statement with its decision and result.
func printSession(w io.Writer, d *control.SessionDetail) {
	s := d.Summary
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "session:\t%s (%s)\n", s.Session, s.Status)
	fmt.Fprintf(tw, "agent:\t%s\n", s.Agent)
	fmt.Fprintf(tw, "task:\t%s\n", dash(s.Task))
	if s.Protocol == "ssh" {
		// An SSH grant's recorded access level is the unused default.
		fmt.Fprintf(tw, "grant:\t%s (approved by %s)\n", dash(s.Grant), dash(s.Approver))
	} else {
		fmt.Fprintf(tw, "grant:\t%s (%s access, approved by %s)\n", dash(s.Grant), dash(s.Access), dash(s.Approver))
	}
	fmt.Fprintf(tw, "resource:\t%s (%s)\n", s.Resource, s.Protocol)
	fmt.Fprintf(tw, "client:\t%s\n", s.Client)
	fmt.Fprintf(tw, "started:\t%s\n", when(s.Start))
	if s.End != nil && s.Status == recorder.StatusInterrupted {
		fmt.Fprintf(tw, "interrupted:\t%s, noticed by %s: %s\n", when(*s.End), dash(s.InterruptedBy), s.Interrupted.Reason)
	} else if s.End != nil {
		fmt.Fprintf(tw, "ended:\t%s (%s)\n", when(*s.End), s.EndReason)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)

	results := map[uint64]*recorder.Result{}
	for _, e := range d.Events {
		for _, r := range e.Outcomes() {
			results[r.ID] = r
		}
	}
	for _, e := range d.Events {
		ts := e.Time.Local().Format("15:04:05.000")
		switch e.Type {
		case recorder.TypeSessionStart:
			fmt.Fprintf(w, "%s  session start\n", ts)
		case recorder.TypeAuthFailed:
			fmt.Fprintf(w, "%s  login refused for %s: %s\n", ts, e.Auth.User, e.Auth.Reason)
		case recorder.TypeStatement:
			st := e.Statement
			fmt.Fprintf(w, "%s  #%d %-5s %-6s %s\n", ts, st.ID, strings.ToUpper(st.Decision), st.Class.Required, oneLine(st.Text))
			if r := st.TextRef; r != nil {
				how := "kept in chunks; --json shows it whole"
				if r.Omitted {
					how = "only its first bytes are recorded (over recorder.max_statement_bytes)"
				}
				fmt.Fprintf(w, "%15s text of %d bytes, sha256 %s, %s\n", "", r.Size, r.SHA256, how)
			}
			if st.Decision != "allow" {
				fmt.Fprintf(w, "%15s rule %s: %s\n", "", st.Rule, st.Reason)
			} else if r := results[st.ID]; r != nil {
				fmt.Fprintf(w, "%15s %s\n", "", resultLine(r))
			}
		case recorder.TypeSessionEnd:
			x := e.End
			exit := ""
			switch {
			case x.ExitStatus != nil:
				exit = fmt.Sprintf("; last command: exit %d", *x.ExitStatus)
			case x.ExitSignal != "":
				exit = "; last command: signal " + x.ExitSignal
			}
			fmt.Fprintf(w, "%s  session end: %s (%s, %d denied%s)%s\n", ts, x.Reason, plural.N(x.Statements, "statement"), x.Denied, exit, x.Stop.Words())
		case recorder.TypeSessionInterrupted:
			if n := e.Interrupted; n != nil {
				fmt.Fprintf(w, "%s  session interrupted after seq %d, noted by %s (%s): %s\n", ts, n.LastSeq, dash(e.Gateway), n.By, n.Reason)
			}
		}
	}
}

func resultLine(r *recorder.Result) string {
	return "-> " + recorder.OutcomeText(r)
}

func oneLine(s string) string {
	return clip(strings.Join(strings.Fields(s), " "), 120)
}
