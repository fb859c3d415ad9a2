package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/control"
)

// consoleCmd prints a one-time sign-in link to the web console: the way
// from a terminal that holds AIRLOCK_TOKEN to a browser that does not.
func consoleCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "console",
		Short: "Print a one-time sign-in link to the web console (works once, for 60 seconds)",
		Args:  cobra.NoArgs,
		RunE: call(g, func(ctx context.Context, c *control.Client, _ []string) (*control.ConsoleLink, error) {
			return c.ConsoleLink(ctx)
		}, func(l *control.ConsoleLink) error {
			fmt.Println(l.URL)
			fmt.Fprintf(os.Stderr, "Open it in a browser within %s; it works once. Do not share it: it signs in as you.\n",
				time.Until(l.Expires).Round(time.Second))
			return nil
		}),
	}
}
