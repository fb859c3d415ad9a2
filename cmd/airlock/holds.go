package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
)

func holdsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "holds", Short: "List, approve and deny statements held for an approver (approver)"}
	var state string
	list := &cobra.Command{
		Use:   "list [--state S]",
		Short: "List held statements, newest first",
		Args:  cobra.NoArgs,
		RunE: call(g, func(ctx context.Context, c *control.Client, _ []string) ([]*authz.Hold, error) {
			if !control.ValidHoldState(authz.HoldState(state)) {
				return nil, fmt.Errorf("--state %q: want pending, approved, denied, expired or cancelled", state)
			}
			return c.Holds(ctx, authz.HoldState(state))
		}, func(hs []*authz.Hold) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tAGE\tAGENT\tRESOURCE\tGRANT\tSTATEMENT\tEXPIRES")
			for _, h := range hs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.State, age(h.CreatedAt), h.Agent, h.Resource, h.Grant,
					clip(oneLine(firstHeld(h)), 60), when(h.ExpiresAt))
			}
			return tw.Flush()
		}),
	}
	list.Flags().StringVar(&state, "state", "", "only holds in this state (pending, approved, denied, expired, cancelled)")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one held statement: its text, parameters, session and what ran before it",
		Args:  cobra.ExactArgs(1),
		RunE: call(g, func(ctx context.Context, c *control.Client, args []string) (*authz.Hold, error) {
			return c.Hold(ctx, args[0])
		}, func(h *authz.Hold) error {
			printHold(h)
			return nil
		}),
	}

	var comment string
	approve := &cobra.Command{
		Use:   "approve ID [--comment TEXT]",
		Short: "Let a held statement run (exactly as held)",
		Args:  cobra.ExactArgs(1),
		RunE: call(g, func(ctx context.Context, c *control.Client, args []string) (*authz.Hold, error) {
			return c.ApproveHold(ctx, args[0], comment)
		}, func(h *authz.Hold) error {
			fmt.Printf("hold %s approved: agent %s's statement on %s runs now\n", h.ID, h.Agent, h.Resource)
			return nil
		}),
	}
	approve.Flags().StringVar(&comment, "comment", "", "a comment recorded with the decision")

	var reason string
	deny := &cobra.Command{
		Use:   "deny ID --reason TEXT",
		Short: "Refuse a held statement; the agent's client gets an error with the reason and its session goes on",
		Args:  cobra.ExactArgs(1),
		RunE: call(g, func(ctx context.Context, c *control.Client, args []string) (*authz.Hold, error) {
			return c.DenyHold(ctx, args[0], reason)
		}, func(h *authz.Hold) error {
			fmt.Printf("hold %s denied: agent %s's client is told: %s\n", h.ID, h.Agent, h.Comment)
			return nil
		}),
	}
	deny.Flags().StringVar(&reason, "reason", "", "why the statement is refused (required; the agent is told)")
	_ = deny.MarkFlagRequired("reason")

	cmd.AddCommand(list, show, approve, deny)
	return cmd
}

// firstHeld is the text of the first statement a rule holds (the first
// statement if none says so).
func firstHeld(h *authz.Hold) string {
	for _, s := range h.Statements {
		if s.Hold {
			return s.Text
		}
	}
	if len(h.Statements) > 0 {
		return h.Statements[0].Text
	}
	return "-"
}

// age is how long ago t was, to the second.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}

func printHold(h *authz.Hold) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("id", h.ID)
	row("state", string(h.State))
	row("agent", h.Agent)
	row("resource", h.Resource)
	row("grant", h.Grant)
	row("task", h.Task)
	row("session", h.Session)
	row("held", when(h.CreatedAt)+" ("+age(h.CreatedAt)+" ago)")
	row("expires", when(h.ExpiresAt))
	if h.DecidedBy != "" {
		row("decided", h.DecidedBy+" at "+when(h.DecidedAt))
	} else if !h.DecidedAt.IsZero() {
		row("ended", when(h.DecidedAt))
	}
	row("comment", h.Comment)
	_ = tw.Flush()
	for i, s := range h.Statements {
		mark := "runs"
		if s.Hold {
			mark = "HELD"
		}
		fmt.Printf("\nstatement %d (%s, %s)", i+1, s.Kind, mark)
		if s.Reason != "" {
			fmt.Printf(": %s", s.Reason)
		}
		fmt.Printf("\n  %s\n", strings.ReplaceAll(s.Text, "\n", "\n  "))
		for j, p := range s.Params {
			fmt.Printf("  $%d = %s\n", j+1, p)
		}
	}
	if len(h.Before) > 0 {
		fmt.Printf("\nbefore it in the session (oldest first):\n")
		for _, b := range h.Before {
			fmt.Printf("  %s\n", oneLine(b))
		}
	}
}
