package natsconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A replicated stream accepts writes only through its RAFT leader. When the
// leader's server dies (SIGKILL, power loss), its followers wait out
// nats-server's election timeout (4 to 9 s, not configurable) before one of
// them takes over; no client can shorten that. So where a few seconds
// without writes are too many, the gateway writes to one of two streams
// (the recorder's events and its standby stream, the grant bucket and its
// standby bucket), and keeps their leaders on different servers: losing
// any one server then leaves one of the pair writable at once.

// Leaders is who leads a stream and its standby.
type Leaders struct {
	Primary, Standby string
	// Moved names the server the standby's leadership was asked to move
	// to; empty when nothing was moved.
	Moved string
}

// KeepApart looks up the leaders of primary and standby and, when one
// server leads both, asks the standby's leader to step down in favour of a
// replica of the standby that does not lead primary. A stream without a
// leader (electing) is reported with an empty name and moves nothing; the
// error is the first lookup that failed.
func KeepApart(ctx context.Context, js jetstream.JetStream, primary, standby string) (Leaders, error) {
	var l Leaders
	pl, _, perr := streamLeader(ctx, js, primary)
	sl, peers, serr := streamLeader(ctx, js, standby)
	l.Primary, l.Standby = pl, sl
	if perr != nil {
		return l, perr
	}
	if serr != nil {
		return l, serr
	}
	if pl == "" || pl != sl {
		return l, nil
	}
	i := slices.IndexFunc(peers, func(p string) bool { return p != pl })
	if i < 0 {
		return l, nil // a single server: nothing to move to
	}
	if err := stepDown(ctx, js, standby, peers[i]); err != nil {
		return l, err
	}
	l.Moved = peers[i]
	return l, nil
}

// streamLeader asks the stream's leader for the stream's cluster state: its
// leader and the current replicas, sorted.
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, []string, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return "", nil, fmt.Errorf("natsconn: stream %s: %w", stream, err)
	}
	ci := st.CachedInfo().Cluster
	if ci == nil {
		return "", nil, nil
	}
	var peers []string
	for _, r := range ci.Replicas {
		if r != nil && r.Current && !r.Offline {
			peers = append(peers, r.Name)
		}
	}
	slices.Sort(peers)
	return ci.Leader, peers, nil
}

// stepDown asks stream's leader to hand its leadership to preferred.
func stepDown(ctx context.Context, js jetstream.JetStream, stream, preferred string) error {
	body, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": preferred}})
	if err != nil {
		return err
	}
	msg, err := js.Conn().RequestWithContext(ctx, APIPrefix(js)+"STREAM.LEADER.STEPDOWN."+stream, body)
	if err != nil {
		return fmt.Errorf("natsconn: stream %s: leader step down: %w", stream, err)
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("natsconn: stream %s: leader step down: %w", stream, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("natsconn: stream %s: leader step down: %s", stream, resp.Error.Description)
	}
	return nil
}

// APIPrefix is the subject prefix of js's JetStream API requests, for the
// requests the jetstream package has no method for.
func APIPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		p := o.APIPrefix
		if p[len(p)-1] != '.' {
			p += "."
		}
		return p
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return "$JS.API."
}

// Denied reports whether the server refused c a request to a subject
// naming name (a stream, a bucket) for want of permission. A refused
// request gets no answer, only an asynchronous error, so a caller that
// timed out asks here whether waiting longer can help.
func Denied(c *nats.Conn, name string) bool {
	err := c.LastError()
	return errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), name)
}
