package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/control"
)

func notifyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "notify", Short: "Notification targets and their deliveries (approver, admin)"}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show each notify target's deliveries: pending, retrying, given up, last success and error",
		Args:  cobra.NoArgs,
		RunE: call(g, func(ctx context.Context, c *control.Client, _ []string) (*control.NotifyReport, error) {
			return c.NotifyStatus(ctx)
		}, func(r *control.NotifyReport) error {
			if len(r.Targets) == 0 {
				fmt.Println("No notify targets are configured (see the gateway config's notify: list).")
				return nil
			}
			for i, t := range r.Targets {
				if i > 0 {
					fmt.Println()
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "target:\t%s (%s, %s)\n", t.Name, t.Format, t.URL)
				fmt.Fprintf(tw, "events:\t%s\n", strings.Join(t.Events, ", "))
				fmt.Fprintf(tw, "notifications:\t%d (delivered %d, pending %d, retrying %d, given up %d)\n", t.Notifications, t.Delivered, t.Pending, t.Retrying, t.GivenUp)
				if t.OldestPending != nil {
					fmt.Fprintf(tw, "oldest pending:\t%s\n", when(*t.OldestPending))
				}
				fmt.Fprintf(tw, "attempts:\t%d (%d failed)\n", t.Attempts, t.Failures)
				last := "never"
				if t.LastSuccess != nil {
					last = when(*t.LastSuccess)
				}
				fmt.Fprintf(tw, "last success:\t%s\n", last)
				if t.LastError != "" {
					fmt.Fprintf(tw, "last error:\t%s: %s\n", when(*t.LastErrorAt), t.LastError)
				}
				for _, f := range t.GaveUp {
					fmt.Fprintf(tw, "given up:\t%s %s %s: %s\n", when(f.Time), f.Type, f.ID, f.Error)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			return nil
		}),
	}
	cmd.AddCommand(status)
	return cmd
}
