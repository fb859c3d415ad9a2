package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/control"
)

// consoleCmd prints a one-time sign-in link to the web console: the way
// from a terminal that holds AIRLOCK_TOKEN to a browser that does not.
func consoleCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "console [PAGE]",
		Short: "Print a one-time sign-in link to the web console (works once, for 60 seconds)",
		Long: `Print a one-time sign-in link to the web console for the identity of
AIRLOCK_TOKEN. It works once, within 60 seconds. PAGE, a console path such
as /ui/requests/gr_abc, is where the browser goes after signing in.`,
		Args: cobra.MaximumNArgs(1),
		RunE: call(g, func(ctx context.Context, c *control.Client, args []string) (*control.ConsoleLink, error) {
			next := ""
			if len(args) == 1 {
				next = args[0]
				if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") {
					return nil, fmt.Errorf("PAGE %q: want a console path starting with /ui/", next)
				}
			}
			l, err := c.ConsoleLink(ctx)
			if err == nil && next != "" {
				l.URL += "?next=" + url.QueryEscape(next)
			}
			return l, err
		}, func(l *control.ConsoleLink) error {
			fmt.Println(l.URL)
			fmt.Fprintf(os.Stderr, "Open it in a browser within %s; it works once. Do not share it: it signs in as you.\n",
				time.Until(l.Expires).Round(time.Second))
			return nil
		}),
	}
}
