package main

import (
	"log/slog"
	"os"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	airlockmcp "github.com/airlockhq/airlock/control/mcp"
)

func mcpCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "mcp",
		Short: "Serve MCP on stdin/stdout for an AI agent host (agent)",
		Long: `Serve the Model Context Protocol on stdin and stdout, as the agent whose
API token is in AIRLOCK_TOKEN, against the gateway at AIRLOCK_SERVER.

Tools: list_resources, request_access, wait_for_grant, query, run_command,
end_session. query and run_command connect to the gateway's own Postgres,
MySQL and SSH listeners with the grant's token, so every statement is
authorized and recorded as a psql one is. See docs/mcp.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			// stdout is the protocol's: logs go to stderr, never a token.
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			s := airlockmcp.New(airlockmcp.Options{API: c, Log: log})
			return s.Run(cmd.Context(), &mcp.StdioTransport{})
		},
	}
}
