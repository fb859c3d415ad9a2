package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/recorder"
)

func replayCmd(g *globals) *cobra.Command {
	var speed float64
	var idle time.Duration
	cmd := &cobra.Command{
		Use:   "replay ID [--speed X]",
		Short: "Play a recorded terminal (shell) session with its original timing, or print a database session's transcript",
		Long: `Play a recorded SSH terminal (shell or pty) session in this terminal, with
its original timing (--speed, --idle-limit).

A Postgres or MySQL session has no terminal: replay prints its transcript
at once, in time order: each statement with its time, decision and kind,
an allowed one's outcome (tag, rows, duration, error) at the time it
completed, and a denied one marked DENIED with its rule and reason. Times
are local.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if speed <= 0 {
				return errors.New("--speed must be positive (2 plays twice as fast)")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			d, err := c.Session(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if recorder.IsDatabase(d.Summary.Protocol) {
				s := d.Summary
				fmt.Fprintf(os.Stderr, "airlock: transcript of session %s: %s on %s (%s)\n", s.Session, s.Agent, s.Resource, s.Protocol)
				for _, l := range recorder.Transcript(d.Events, time.Local) {
					if _, err := fmt.Fprintln(os.Stdout, l.Text); err != nil {
						return err
					}
				}
				return nil
			}
			cast, err := recorder.Terminal(d.Events)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "airlock: replaying %s (%dx%d) at %gx; Ctrl-C stops\r\n", cast.Header.Title, cast.Header.Width, cast.Header.Height, speed)
			if err := play(cmd.Context(), os.Stdout, cast, speed, idle); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "\r\nairlock: end of session %s\r\n", args[0])
			return nil
		},
	}
	cmd.Flags().Float64Var(&speed, "speed", 1, "playback speed: 2 plays twice as fast, 0.5 half as fast")
	cmd.Flags().DurationVar(&idle, "idle-limit", 0, "shorten pauses longer than this (e.g. 2s); 0 keeps them")
	return cmd
}

// play writes the recording's output to w, sleeping between events as
// the original session did (divided by speed, capped at idle when set).
func play(ctx context.Context, w io.Writer, c *recorder.Cast, speed float64, idle time.Duration) error {
	var last float64
	for _, e := range c.Events {
		if e.Code != "o" {
			continue
		}
		d := time.Duration((e.Time - last) / speed * float64(time.Second))
		last = e.Time
		if idle > 0 && d > idle {
			d = idle
		}
		if d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		if _, err := io.WriteString(w, e.Data); err != nil {
			return err
		}
	}
	return nil
}
