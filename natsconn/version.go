package natsconn

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// MinServerVersion is the oldest nats-server airlock works with. The
// JetStream features below are what sets it; a server that lacks one
// does not refuse what airlock sends, it misbehaves later (an older
// server ignores an unknown publish header, so a guarantee would be lost
// silently), which is why the gateway checks the version at start.
const MinServerVersion = "2.11.0"

// serverFeatures are the features that need a recent server, with the
// version that brought each. Keep MinServerVersion the largest of them
// and docs/recorder.md ("NATS server version") in step.
var serverFeatures = []struct{ since, what string }{
	{"2.10.0", "consumers with several filter subjects (sessions list reads the start, auth, end and interrupted subjects at once)"},
	{"2.11.0", "the Nats-Expected-Last-Subject-Sequence-Subject header (a session's first event must find the session's subjects empty; a session.interrupted note must find the session as it was read)"},
}

// ErrServerUnsupported matches CheckServer's errors that waiting cannot
// mend (errors.Is): the server is too old, or JetStream is not enabled for
// the gateway's account. The operator has to change the NATS side.
var ErrServerUnsupported = errors.New("nats-server unsupported")

// unsupported is an error that is ErrServerUnsupported without repeating
// its text.
type unsupported struct{ msg string }

func (e *unsupported) Error() string        { return e.msg }
func (e *unsupported) Is(target error) bool { return target == ErrServerUnsupported }

func unsupportedf(format string, args ...any) error {
	return &unsupported{fmt.Sprintf(format, args...)}
}

// CheckServer checks that the connected server is one airlock can rely
// on: its version is at least MinServerVersion, and JetStream answers for
// the account the gateway is in. A cluster without a JetStream leader
// yet, or a timeout, is returned as it is (the caller may wait and try
// again); a server that can never do is reported with an error wrapping
// ErrServerUnsupported that names what was found and what is needed.
//
// Only the server the gateway is connected to is asked. In a cluster,
// upgrade every node before the gateways.
func (c *Conn) CheckServer(ctx context.Context) error {
	where := c.where()
	found := c.NC.ConnectedServerVersion()
	if found == "" {
		return fmt.Errorf("natsconn: %s: not connected", where)
	}
	if err := checkVersion(found); err != nil {
		return unsupportedf("natsconn: %s: %v", where, err)
	}
	_, err := c.JS.AccountInfo(ctx)
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return unsupportedf("natsconn: %s: JetStream is not enabled for the gateway's account (give the account \"jetstream: enabled\"; see deploy/nats/accounts.conf)", where)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return unsupportedf("natsconn: %s: JetStream is not enabled on nats-server %s (start it with -js, or a jetstream block in its configuration)", where, found)
	case err != nil:
		return fmt.Errorf("natsconn: %s: JetStream: %w", where, err)
	}
	return nil
}

// where names the server for an error: the embedded one or the URL.
func (c *Conn) where() string {
	if c.embedded != nil {
		return "embedded nats-server"
	}
	return "nats-server at " + c.NC.ConnectedUrlRedacted()
}

// checkVersion is nil when found is at least MinServerVersion.
func checkVersion(found string) error {
	cmp, err := compareVersions(found, MinServerVersion)
	if err != nil {
		return unsupportedf("version %q is not a version number airlock can read; it needs %s or later", found, MinServerVersion)
	}
	if cmp >= 0 {
		return nil
	}
	var missing []string
	for _, f := range serverFeatures {
		if c, _ := compareVersions(found, f.since); c < 0 {
			missing = append(missing, f.since+": "+f.what)
		}
	}
	return unsupportedf("version %s is too old; airlock needs nats-server %s or later (%s); upgrade the NATS servers",
		found, MinServerVersion, strings.Join(missing, "; "))
}

// compareVersions compares two nats-server versions ("2.11.0",
// "v2.10.4", "2.12.0-beta.1") by major, minor and patch, and returns -1,
// 0 or 1. A pre-release counts as its release: the features airlock
// needs are in a release's pre-releases too.
func compareVersions(a, b string) (int, error) {
	x, err := parseVersion(a)
	if err != nil {
		return 0, err
	}
	y, err := parseVersion(b)
	if err != nil {
		return 0, err
	}
	for i := range x {
		switch {
		case x[i] < y[i]:
			return -1, nil
		case x[i] > y[i]:
			return 1, nil
		}
	}
	return 0, nil
}

func parseVersion(v string) ([3]int, error) {
	var out [3]int
	s := strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return out, fmt.Errorf("version %q: want MAJOR.MINOR.PATCH", v)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, fmt.Errorf("version %q: %q is not a number", v, p)
		}
		out[i] = n
	}
	return out, nil
}
