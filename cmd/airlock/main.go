// Command airlock is the airlock gateway and its command-line client.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/control"
)

// globals are the flags every client command shares.
type globals struct {
	server string
	json   bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		var ae *control.APIError
		if errors.As(err, &ae) {
			fmt.Fprintln(os.Stderr, "airlock:", ae.Msg)
		} else {
			fmt.Fprintln(os.Stderr, "airlock:", err)
		}
		var ex exitError
		if errors.As(err, &ex) {
			os.Exit(int(ex))
		}
		os.Exit(1)
	}
}

// exitError asks main for a specific exit status.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "airlock",
		Short:         "Access gateway for AI agents: per-statement authorization and tamper-evident recording",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.server, "server", os.Getenv("AIRLOCK_SERVER"), "gateway HTTP API URL (env AIRLOCK_SERVER)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON")
	root.AddCommand(gatewayCmd(), resourcesCmd(g), requestCmd(g), grantsCmd(g), sessionsCmd(g), notifyCmd(g), holdsCmd(g), consoleCmd(g), mcpCmd(g))
	return root
}

// client builds the API client from the flags and AIRLOCK_TOKEN.
func (g *globals) client() (*control.Client, error) {
	if g.server == "" {
		return nil, errors.New("no gateway address: pass --server URL or set AIRLOCK_SERVER")
	}
	tok := os.Getenv("AIRLOCK_TOKEN")
	if tok == "" {
		return nil, errors.New("no API token: set AIRLOCK_TOKEN to your identity's token")
	}
	return &control.Client{Server: g.server, Token: tok}, nil
}

// call is the RunE of a client command: fetch with the API client, then
// print the answer as JSON under --json, or as text for a person.
func call[T any](g *globals, fetch func(ctx context.Context, c *control.Client, args []string) (T, error), text func(T) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := g.client()
		if err != nil {
			return err
		}
		v, err := fetch(cmd.Context(), c, args)
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(v)
		}
		return text(v)
	}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
