package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/internal/plural"
	"github.com/airlockhq/airlock/recorder"
)

// Exit statuses of `sessions verify`.
const (
	exitVerifyFailed       = 1 // a session failed (or verification could not run)
	exitVerifyUnterminated = 3 // nothing failed, but a session has no end (open, or interrupted)
)

func verifyCmd(g *globals) *cobra.Command {
	var (
		all         bool
		since, file string
		keyFlags    []string
	)
	cmd := &cobra.Command{
		Use:   "verify ID | --all [--since T] | --file FILE",
		Short: "Check sessions' hash chains, signatures, gaps, start and end",
		Long: `Check that recorded sessions are what the gateway wrote: sequence numbers
1..n without gaps, each event's hash matching its content and linking to
the previous one, signatures valid under the gateway's key, a start and an
end.

By default the keys are the gateway's published ones (GET /v1/keys); with
--file, the keys in the file. --key trusts only what it names: a key file
(ssh-ed25519 line, PEM or base64) or a fingerprint (SHA256:...) that the
published or embedded key must have.

Each session gets one line: ok; INTERRUPTED (intact, but its gateway
process stopped mid-session and another gateway recorded a signed
session.interrupted note; events after the gateway's last signature are
reported as a chained, unsigned tail); UNTERMINATED (no session.end and no
note: still open, or not noticed yet, or cut off); or FAILED at the first
bad seq.

Exit status: 0 every session verified; 1 a session failed (altered, removed,
reordered, truncated, forged or replayed events, untrusted key) or could not
be read; 3 nothing failed but a session has no end (interrupted, or still
open).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			modes := 0
			for _, on := range []bool{len(args) == 1, all, file != ""} {
				if on {
					modes++
				}
			}
			if modes != 1 {
				return errors.New("give one of: a session ID, --all, or --file FILE")
			}
			if since != "" && !all {
				return errors.New("--since goes with --all")
			}
			trust, err := parseKeyFlags(keyFlags)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if file != "" {
				r, err := verifyFile(file, trust)
				if err != nil {
					return err
				}
				return reportVerification(g, []recorder.Report{r}, false)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			published, err := c.Keys(ctx)
			if err != nil {
				return fmt.Errorf("reading the gateway's keys: %w", err)
			}
			keys, err := trust.keyring(published)
			if err != nil {
				return err
			}
			if !all {
				r, err := verifyRemote(ctx, c, args[0], keys)
				if err != nil {
					return err
				}
				return reportVerification(g, []recorder.Report{r}, false)
			}
			q := url.Values{}
			if since != "" {
				q.Set("since", since)
			}
			list, err := c.Sessions(ctx, q)
			if err != nil {
				return err
			}
			reports := make([]recorder.Report, 0, len(list))
			for _, s := range list {
				r, err := verifyRemote(ctx, c, s.Session, keys)
				if err != nil {
					r = recorder.Report{Session: s.Session, Status: recorder.VerifyFailed, Problem: "cannot read it: " + err.Error()}
				}
				reports = append(reports, r)
			}
			return reportVerification(g, reports, true)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "verify every session (newest first)")
	cmd.Flags().StringVar(&since, "since", "", "with --all: only sessions started since a time (RFC 3339) or a duration ago (24h)")
	cmd.Flags().StringVar(&file, "file", "", "verify an export file offline (airlock sessions export)")
	cmd.Flags().StringArrayVar(&keyFlags, "key", nil, "trust only this key: a public key file, or a fingerprint SHA256:... (repeatable)")
	return cmd
}

func verifyRemote(ctx context.Context, c *control.Client, id string, keys recorder.Keyring) (recorder.Report, error) {
	x, err := c.Export(ctx, id)
	if err != nil {
		return recorder.Report{}, fmt.Errorf("session %s: %w", id, err)
	}
	return x.Verify(keys)
}

func verifyFile(path string, trust keyTrust) (recorder.Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return recorder.Report{}, err
	}
	defer f.Close()
	x, err := recorder.ReadExport(f)
	if err != nil {
		return recorder.Report{}, fmt.Errorf("%s: %w", path, err)
	}
	keys, err := trust.keyring(x.Keys)
	if err != nil {
		return recorder.Report{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(trust.files) == 0 && len(trust.pins) == 0 {
		fps := keys.Fingerprints()
		slices.Sort(fps)
		fmt.Fprintf(os.Stderr, "trusting the key(s) in the file: %s; compare with the gateway's published key (GET /v1/keys, its start log) or pin it with --key\n",
			strings.Join(fps, ", "))
	}
	return x.Verify(keys)
}

// keyTrust is what --key asked for: keys to trust outright, and
// fingerprints the offered keys must have.
type keyTrust struct {
	files []recorder.PublicKey
	pins  map[string]bool
}

func parseKeyFlags(flags []string) (keyTrust, error) {
	t := keyTrust{pins: map[string]bool{}}
	for _, f := range flags {
		if strings.HasPrefix(f, "SHA256:") {
			t.pins[f] = true
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return t, fmt.Errorf("--key %s: %w (want a key file or a SHA256: fingerprint)", f, err)
		}
		k, err := recorder.ParsePublicKey(b)
		if err != nil {
			return t, fmt.Errorf("--key %s: %w", f, err)
		}
		t.files = append(t.files, k)
	}
	return t, nil
}

// keyring is the keys to verify with, given the keys offered by the
// gateway or the file: all of them when --key was not used; otherwise the
// --key files and the offered keys with a pinned fingerprint.
func (t keyTrust) keyring(offered []recorder.PublicKey) (recorder.Keyring, error) {
	if len(t.files) == 0 && len(t.pins) == 0 {
		return recorder.NewKeyring(offered...)
	}
	kr, err := recorder.NewKeyring(t.files...)
	if err != nil {
		return nil, err
	}
	for _, k := range offered {
		if t.pins[k.Fingerprint] {
			if err := kr.Add(k); err != nil {
				return nil, err
			}
		}
	}
	for fp := range t.pins {
		if _, ok := kr[fp]; !ok {
			return nil, fmt.Errorf("--key %s: no such key offered (offered: %s)", fp, fingerprints(offered))
		}
	}
	return kr, nil
}

func fingerprints(keys []recorder.PublicKey) string {
	if len(keys) == 0 {
		return "none"
	}
	fps := make([]string, len(keys))
	for i, k := range keys {
		fps[i] = k.Fingerprint
	}
	return strings.Join(fps, ", ")
}

// reportVerification prints the reports and turns their outcome into the
// exit status.
func reportVerification(g *globals, reports []recorder.Report, many bool) error {
	var failed, open, interrupted []recorder.Report
	for _, r := range reports {
		switch r.Status {
		case recorder.VerifyOK:
		case recorder.VerifyUnterminated:
			open = append(open, r)
		case recorder.VerifyInterrupted:
			interrupted = append(interrupted, r)
		default:
			failed = append(failed, r)
		}
	}
	if g.json {
		var err error
		if many {
			err = printJSON(reports)
		} else {
			err = printJSON(reports[0])
		}
		if err != nil {
			return err
		}
	} else {
		for _, r := range reports {
			printReport(os.Stdout, r)
		}
		if many {
			fmt.Printf("%s: %d verified, %d interrupted, %d unterminated, %d failed\n",
				plural.N(len(reports), "session"), len(reports)-len(failed)-len(open)-len(interrupted), len(interrupted), len(open), len(failed))
		}
	}
	switch {
	case len(failed) > 0:
		r := failed[0]
		return &verifyFailure{code: exitVerifyFailed, msg: fmt.Sprintf("%d of %s failed verification; first: %s", len(failed), plural.N(len(reports), "session"), reportLine(r))}
	case len(open)+len(interrupted) > 0:
		return &verifyFailure{code: exitVerifyUnterminated, msg: fmt.Sprintf("%d of %s no session.end (%d interrupted, %d unterminated); nothing failed",
			len(open)+len(interrupted), plural.Of(len(reports), "session has", "sessions have"), len(interrupted), len(open))}
	}
	return nil
}

func printReport(w io.Writer, r recorder.Report) {
	fmt.Fprintln(w, reportLine(r))
}

func reportLine(r recorder.Report) string { return r.Line() }

// verifyFailure is an outcome (a verification's, a request's denial or
// wait) that main turns into an exit status (through errors.As to
// exitError) after printing msg.
type verifyFailure struct {
	code int
	msg  string
}

func (e *verifyFailure) Error() string { return e.msg }

func (e *verifyFailure) As(target any) bool {
	if p, ok := target.(*exitError); ok {
		*p = exitError(e.code)
		return true
	}
	return false
}

func exportCmd(g *globals) *cobra.Command {
	var format, out string
	cmd := &cobra.Command{
		Use:   "export ID [--format json|asciicast] [-o FILE]",
		Short: "Write a session as a self-contained file that verify --file checks offline",
		Long: `Write a session's events exactly as stored, with the gateway's public key
and its fingerprint, as one JSON file (--format json, the default).
airlock sessions verify --file FILE checks it without reaching the gateway.

--format asciicast writes the terminal of an SSH session (its shell or pty
channels), or a Postgres or MySQL session's transcript (what airlock
sessions replay prints, times in UTC), as an asciicast v2 recording for
asciinema and other players. It is a view for watching, not evidence:
export json to keep or verify.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "json" && format != "asciicast" {
				return fmt.Errorf("--format %q: want json or asciicast", format)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			x, err := c.Export(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			write := x.Write
			if format == "asciicast" {
				evs, bad := recorder.DecodeRaw(x.Events)
				if len(bad) > 0 {
					return fmt.Errorf("session %s: %d events are not as the gateway wrote them; check with airlock sessions verify %s", x.Session, len(bad), x.Session)
				}
				write = func(w io.Writer) error { return recorder.WriteAsciicast(w, evs) }
			}
			if out == "" || out == "-" {
				return write(os.Stdout)
			}
			f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			if err := write(f); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if format == "json" {
				fmt.Fprintf(os.Stderr, "wrote %s: session %s, %s, key %s\n", out, x.Session, plural.N(len(x.Events), "event"), fingerprints(x.Keys))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "json", "json (events and key, verifiable) or asciicast (an SSH session's terminal)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}
