package recorder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/natsconn"
)

// Failover (docs/recorder.md, "Losing a node"). A replicated stream takes
// writes only through its leader; when the leader's server dies, the
// others elect a new one after nats-server's election timeout, 4 to 9 s in
// which nothing can be acknowledged. With Options.Failover the recorder
// also keeps a standby stream, <stream>_STANDBY on <prefix>_standby.>,
// which the events stream sources (with the subjects mapped back to
// <prefix>.>), and the gateway keeps the two streams' leaders on different
// servers. An event left unacknowledged on one stream for failoverAfter is
// published to the other with the same Nats-Msg-Id, and the recorder
// publishes there until that one fails in turn or the events stream is
// healthy again. What the standby took arrives in the events stream
// through the source, deduplicated by Nats-Msg-Id, but only when
// nats-server gets the source going again, which can take minutes; so
// readers read both streams, keep one of identical copies, and order a
// session by seq, not by arrival.

// lane is a stream the recorder can publish to.
type lane struct {
	stream, prefix string
}

const (
	// standbySuffix names the standby stream after the events stream.
	standbySuffix = "_STANDBY"
	// standbySubjectSuffix is appended to the subject prefix for the
	// standby's subjects: airlock.events -> airlock.events_standby.
	standbySubjectSuffix = "_standby"

	// maxFailoverAfter is how long an event may wait for its ack on a
	// stream before it is sent to the other one. A healthy R3 stream
	// acknowledges within milliseconds (p99 10 ms at 64 sessions on 2
	// vCPUs); half a second leaves room for a slow moment, not for an
	// election.
	maxFailoverAfter = 500 * time.Millisecond

	// setupAttempt bounds one try at finding or creating the standby: a
	// request that meets a leader change is lost and never answered.
	setupAttempt = 5 * time.Second

	// monitorEvery is how often the recorder checks where the two
	// streams' leaders are.
	monitorEvery = time.Second
	// monitorTimeout bounds one check.
	monitorTimeout = 2 * time.Second
)

// StandbyStream is the name of the standby of stream.
func StandbyStream(stream string) string { return stream + standbySuffix }

// StandbySubjects is the subject prefix of the standby of a stream whose
// events go to prefix (empty: DefaultSubjectPrefix).
func StandbySubjects(prefix string) string {
	if prefix == "" {
		prefix = DefaultSubjectPrefix
	}
	return prefix + standbySubjectSuffix
}

// standbySource is how the events stream takes the standby's events.
func standbySource(o Options) *jetstream.StreamSource {
	return &jetstream.StreamSource{
		Name: StandbyStream(o.Stream),
		SubjectTransforms: []jetstream.SubjectTransformConfig{{
			Source:      StandbySubjects(o.Subjects) + ".>",
			Destination: o.Subjects + ".>",
		}},
	}
}

// sourcesStandby reports whether cfg takes the standby's events as
// standbySource says.
func sourcesStandby(cfg jetstream.StreamConfig, o Options) bool {
	want := standbySource(o)
	return slices.ContainsFunc(cfg.Sources, func(s *jetstream.StreamSource) bool {
		return s != nil && s.Name == want.Name && s.FilterSubject == "" && s.External == nil &&
			slices.Equal(s.SubjectTransforms, want.SubjectTransforms)
	})
}

// standbyConfig is the standby stream: the events stream's protections,
// its own subjects, no sources.
func standbyConfig(o Options) jetstream.StreamConfig {
	cfg := baseStreamConfig(o)
	cfg.Name = StandbyStream(o.Stream)
	cfg.Description = "airlock session events taken while " + o.Stream + " had no leader; " + o.Stream + " sources them (see docs/recorder.md)"
	cfg.Subjects = []string{StandbySubjects(o.Subjects) + ".>"}
	return cfg
}

// ensureStream creates want unless it exists, and checks an existing one
// captures exactly want's subjects and protects events as well.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, log *slog.Logger) (jetstream.StreamConfig, error) {
	st, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another gateway created it between our lookup and create.
			st, err = js.Stream(ctx, want.Name)
		} else if err == nil {
			log.Info("recorder stream created", "stream", want.Name,
				"subjects", want.Subjects, "replicas", want.Replicas, "sources", len(want.Sources))
		}
	}
	if err != nil {
		return jetstream.StreamConfig{}, fmt.Errorf("recorder: stream %s: %w", want.Name, err)
	}
	have := st.CachedInfo().Config
	if d := subjectDiff(have.Subjects, want.Subjects); d != "" {
		return have, &streamConfigError{fmt.Sprintf("recorder: stream %s exists with subjects %v, want %v (%s)",
			want.Name, have.Subjects, want.Subjects, d)}
	}
	if problems := weaknesses(have, want); len(problems) > 0 {
		return have, &streamConfigError{fmt.Sprintf("recorder: stream %s is weaker than airlock requires: %s (fix the stream with the nats CLI, e.g. nats stream edit %s, or set the recorder limits it was given on purpose; see docs/recorder.md)",
			want.Name, strings.Join(problems, "; "), want.Name)}
	}
	if have.Duplicates < time.Second {
		log.Warn("recorder stream has a short duplicate window; a republished event may be stored twice",
			"stream", want.Name, "duplicate_window", have.Duplicates)
	}
	return have, nil
}

// setupStandby finds or creates the standby stream, trying again while
// its requests go unanswered (the cluster electing, a leader moving) until
// ctx ends. Without permission to (the gateway's NATS user predates
// failover, see deploy/nats) it reports false: the recorder works as
// before, without failover, and says so in the log.
func setupStandby(ctx context.Context, js jetstream.JetStream, o Options) (bool, error) {
	name := StandbyStream(o.Stream)
	for {
		actx, cancel := context.WithTimeout(ctx, setupAttempt)
		_, err := ensureStream(actx, js, standbyConfig(o), o.Logger)
		cancel()
		switch {
		case err == nil:
			return true, nil
		case natsconn.Denied(js.Conn(), name):
			o.Logger.Warn("recorder failover off: the gateway's NATS user may not use the standby stream (see deploy/nats/accounts.conf)",
				"stream", o.Stream, "standby", name, "err", js.Conn().LastError())
			return false, nil
		case ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded):
			return false, fmt.Errorf("%w (the standby for failover, as recorder.replicas > 1)", err)
		}
	}
}

// failover makes the lane after from the active one, unless another
// session did so already, and returns the active lane.
func (r *Recorder) failover(from int32, cause string) int32 {
	if len(r.lanes) < 2 {
		return 0
	}
	to := (from + 1) % int32(len(r.lanes))
	if r.active.CompareAndSwap(from, to) {
		r.log.Warn("recorder failing over", "from", r.lanes[from].stream, "to", r.lanes[to].stream, "cause", cause)
	}
	return r.active.Load()
}

// subjectOn is subj, an events-stream subject, on lane i.
func (r *Recorder) subjectOn(subj string, i int32) string {
	if i == 0 {
		return subj
	}
	return r.lanes[i].prefix + subj[len(r.prefix):]
}

// monitor keeps the two streams' leaders on different servers, and makes
// the events stream the active lane again once it has a leader that is not
// the standby's (twice in a row, so a leader that is still settling is not
// taken at once).
func (r *Recorder) monitor(ctx context.Context) {
	defer close(r.monitorDone)
	t := time.NewTicker(monitorEvery)
	defer t.Stop()
	healthy := 0
	var lastErr string
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		cctx, cancel := context.WithTimeout(ctx, monitorTimeout)
		l, err := natsconn.KeepApart(cctx, r.js, r.lanes[0].stream, r.lanes[1].stream)
		cancel()
		if err != nil {
			if msg := err.Error(); msg != lastErr && ctx.Err() == nil {
				r.log.Debug("recorder streams: leader lookup failed", "err", err)
				lastErr = msg
			}
		} else {
			lastErr = ""
		}
		if l.Moved != "" {
			r.log.Info("recorder standby leader moved off the events stream's leader",
				"stream", r.lanes[1].stream, "from", l.Primary, "to", l.Moved)
		}
		if l.Primary != "" && l.Primary != l.Standby {
			healthy++
		} else {
			healthy = 0
		}
		if healthy >= 2 && r.active.Load() != 0 && r.active.CompareAndSwap(1, 0) {
			r.log.Info("recorder back on its events stream", "stream", r.lanes[0].stream, "leader", l.Primary)
		}
	}
}

// watchConnection follows the connection's reconnects: a publish sent
// before one, and not acknowledged, went into a dead connection (a killed
// server's, or a silent one's found by pings) and is sent again at once
// rather than after retryAfter.
func (r *Recorder) watchConnection() {
	ch := make(chan struct{})
	r.reconnected.Store(&ch)
	nc := r.js.Conn()
	r.statusCh = nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	r.statusDone = make(chan struct{})
	go func() {
		defer close(r.statusDone)
		for st := range r.statusCh {
			if st == nats.CLOSED {
				return
			}
			r.connEpoch.Add(1)
			next := make(chan struct{})
			close(*r.reconnected.Swap(&next))
		}
	}()
}

// Close stops the recorder's background work. Logs stay usable: a Log's
// publishes never depended on it.
func (r *Recorder) Close() {
	if r.batch != nil {
		r.batch.close()
	}
	if r.stopMonitor != nil {
		r.stopMonitor()
		<-r.monitorDone
	}
	if r.statusCh != nil {
		r.js.Conn().RemoveStatusListener(r.statusCh)
		<-r.statusDone
		r.statusCh = nil
	}
}
