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

func resourcesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resources",
		Short: "List the resources you may request, what access each offers and how to connect",
		Long: `List the gateway's resources: name, protocol, what a request can ask for
(a database: --access read, write, ddl or admin; ssh: --command, --shell,
--files read or read-write, --forward), and how a client connects once the
grant is approved. Any identity may list them.`,
		Args: cobra.NoArgs,
		RunE: call(g, func(ctx context.Context, c *control.Client, _ []string) ([]control.Resource, error) {
			return c.Resources(ctx)
		}, func(rs []control.Resource) error {
			if len(rs) == 0 {
				fmt.Println("This gateway has no resources.")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPROTOCOL\tACCESS\tCONNECT")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Protocol, strings.Join(r.Access, ", "), dash(r.Connect))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Println("\nAsk with: airlock request --resource NAME --task \"...\" (--access LEVEL for a database; --command, --shell, --files, --forward for ssh)")
			return nil
		}),
	}
}
