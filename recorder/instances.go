package recorder

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Gateway processes and their heartbeats.
//
// Every gateway process has an instance id, written into the
// session.start of each session it serves (Start.Instance), and
// heartbeats under that id in a key-value bucket while it lives. Each
// process also watches the others' heartbeats: one silent for longer than
// the timeout has stopped (a crash, a kill, a lost machine) without
// ending its sessions, so the watcher claims its key, reads which of its
// sessions are still open, and appends a session.interrupted note to each
// (Recorder.Interrupt). A gateway restarted on the same data directory
// knows its previous instance has stopped (the data directory's lock
// says so) and notes that one's sessions at once. See docs/recorder.md,
// "Interrupted sessions".

// Instance states in the bucket.
const (
	instanceLive    = "live"
	instanceStopped = "stopped" // claimed by a gateway that is noting its sessions
)

const (
	// scanMargin widens the window in which a stopped instance's sessions
	// are looked for: its heartbeat says how long its oldest open session
	// had been open, measured on its clock; the window starts that long
	// before the heartbeat's (server) time, and this much earlier.
	scanMargin = 30 * time.Second
	// beatsPerTimeout is how many heartbeats fit in the timeout: a
	// process is declared stopped after missing this many in a row.
	beatsPerTimeout = 5
)

// instanceRecord is an instance's value in the bucket.
type instanceRecord struct {
	Instance string    `json:"instance"`
	Gateway  string    `json:"gateway"`
	PID      int       `json:"pid"`
	Started  time.Time `json:"started"`
	// OldestOpenMS is how long the instance's oldest open session had
	// been open at this heartbeat, in milliseconds (0: none). A duration,
	// so that no two machines' clocks are compared.
	OldestOpenMS int64  `json:"oldest_open_ms"`
	State        string `json:"state"`
	// Set by the gateway that claimed a stopped instance: who, and from
	// when (server time) its sessions are read.
	NoticedBy string    `json:"noticed_by,omitempty"`
	ScanFrom  time.Time `json:"scan_from,omitzero"`
	Reason    string    `json:"reason,omitempty"`
}

var instanceEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewInstanceID returns a fresh gateway process id: "gi_" and 80 random
// bits, usable as a key-value key.
func NewInstanceID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("recorder: no randomness: " + err.Error())
	}
	return "gi_" + instanceEncoding.EncodeToString(b[:])
}

// InstanceOptions configures OpenInstances.
type InstanceOptions struct {
	// Bucket is the key-value bucket (recorder.instances_bucket) and
	// Replicas its replica count.
	Bucket   string
	Replicas int
	// Timeout is how long a process may miss its heartbeat before it is
	// declared stopped (recorder.instance_timeout); it heartbeats five
	// times as often.
	Timeout time.Duration
	// Instance is this process (the Recorder's Options.Instance) and
	// Gateway its host name.
	Instance string
	Gateway  string
	// Previous is the instance this gateway ran as before on the same
	// data directory, known to have stopped; its open sessions are noted
	// at once. Empty: none, or unknown.
	Previous string
	// Recorder writes the notes, Reader finds the sessions.
	Recorder *Recorder
	Reader   *Reader
	// OldestOpen is when the oldest session this process serves started;
	// zero when none.
	OldestOpen func() time.Time
	Logger     *slog.Logger
}

// Instances heartbeats for this process and notes the sessions of
// processes that stopped.
type Instances struct {
	kv  jetstream.KeyValue
	o   InstanceOptions
	log *slog.Logger

	mu      sync.Mutex
	rev     uint64 // of our own key
	started time.Time
	// seen is, per other instance's key, the revision last seen and when
	// (on our clock) it was first seen at that revision.
	seen map[string]sighting
	// blind is set while this process's own heartbeat fails, and
	// reachable is when it last succeeded again: silence from others
	// counts only from then, so that after an outage of NATS itself no
	// gateway takes the others for stopped (they could not heartbeat
	// either). Under mu; seen belongs to the watch goroutine.
	blind     bool
	reachable time.Time

	stop context.CancelFunc
	done chan struct{}
}

type sighting struct {
	rev   uint64
	since time.Time
}

// OpenInstances creates the bucket if needed and registers this process
// in it.
func OpenInstances(ctx context.Context, js jetstream.JetStream, o InstanceOptions) (*Instances, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		return nil, errors.New("recorder: instances: timeout required")
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      o.Bucket,
		Description: "airlock gateway processes and their heartbeats (docs/recorder.md)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(o.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("recorder: instances bucket %q: %w", o.Bucket, err)
	}
	in := &Instances{kv: kv, o: o, log: o.Logger.With("component", "instances"), started: time.Now().UTC(), seen: map[string]sighting{}}
	rev, err := kv.Create(ctx, o.Instance, in.record())
	if errors.Is(err, jetstream.ErrKeyExists) {
		// An earlier attempt of this start registered it already.
		rev, err = kv.Put(ctx, o.Instance, in.record())
	}
	if err != nil {
		return nil, fmt.Errorf("recorder: instances bucket %q: register %s: %w", o.Bucket, o.Instance, err)
	}
	in.rev = rev
	return in, nil
}

// Interval is how often this process heartbeats and looks at the others.
func (in *Instances) Interval() time.Duration { return in.o.Timeout / beatsPerTimeout }

// record is this process's heartbeat value.
func (in *Instances) record() []byte {
	r := instanceRecord{Instance: in.o.Instance, Gateway: in.o.Gateway, PID: os.Getpid(), Started: in.started, State: instanceLive}
	if in.o.OldestOpen != nil {
		if t := in.o.OldestOpen(); !t.IsZero() {
			r.OldestOpenMS = time.Since(t).Milliseconds()
		}
	}
	b, _ := json.Marshal(&r)
	return b
}

// Start runs the heartbeat and the watch until Close. The previous
// instance on this data directory, if any, is noted first.
func (in *Instances) Start() {
	ctx, cancel := context.WithCancel(context.Background()) // lives until Close
	in.stop, in.done = cancel, make(chan struct{})
	go in.run(ctx)
}

func (in *Instances) run(ctx context.Context) {
	defer close(in.done)
	// Heartbeats go on their own, so that noting a stopped gateway's
	// many sessions never makes this one look stopped.
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		t := time.NewTicker(in.Interval())
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				in.beat(ctx)
			}
		}
	}()
	defer func() { <-beats }()
	if p := in.o.Previous; p != "" && p != in.o.Instance {
		in.notePrevious(ctx, p)
	}
	t := time.NewTicker(in.Interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			in.watch(ctx)
		}
	}
}

// Close stops the heartbeat. With cleanly it also removes this process
// from the bucket, which a gateway does once all its sessions have ended;
// otherwise the others note what is left open once it is silent.
func (in *Instances) Close(ctx context.Context, cleanly bool) {
	if in.stop != nil {
		in.stop()
		<-in.done
	}
	if !cleanly {
		return
	}
	in.mu.Lock()
	rev := in.rev
	in.mu.Unlock()
	if err := in.kv.Delete(ctx, in.o.Instance, jetstream.LastRevision(rev)); err != nil {
		in.log.Warn("could not remove this gateway from the instances bucket; others will find it stopped", "instance", in.o.Instance, "err", err)
	}
}

// beat renews this process's key. If another gateway claimed it (this
// one could not reach NATS for longer than the timeout), it says so and
// registers again: it is alive, and its sessions carry on.
func (in *Instances) beat(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, in.Interval())
	defer cancel()
	in.mu.Lock()
	rev := in.rev
	in.mu.Unlock()
	nrev, err := in.kv.Update(cctx, in.o.Instance, in.record(), rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// A heartbeat whose acknowledgement was lost (sent just before a
		// disconnect, delivered after) moved the revision on: the key
		// still says live and is ours.
		if e, gerr := in.kv.Get(cctx, in.o.Instance); gerr == nil {
			var r instanceRecord
			if json.Unmarshal(e.Value(), &r) == nil && r.Instance == in.o.Instance && r.State == instanceLive {
				nrev, err = in.kv.Update(cctx, in.o.Instance, in.record(), e.Revision())
			}
		}
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		in.log.Warn("another gateway declared this one stopped (no heartbeat reached NATS within recorder.instance_timeout); its open sessions may carry a session.interrupted note; registering again",
			"instance", in.o.Instance, "timeout", in.o.Timeout)
		nrev, err = in.kv.Put(cctx, in.o.Instance, in.record())
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if err != nil {
		in.log.Debug("heartbeat failed", "instance", in.o.Instance, "err", err)
		in.blind = true
		return
	}
	if in.blind || in.reachable.IsZero() {
		in.blind, in.reachable = false, time.Now()
	}
	in.rev = nrev
}

// watch looks at every other process's key, and claims and notes each one
// whose revision has not changed for the timeout, by this process's
// clock, while this process could reach NATS itself.
func (in *Instances) watch(ctx context.Context) {
	in.mu.Lock()
	blind, reachable := in.blind || in.reachable.IsZero(), in.reachable
	in.mu.Unlock()
	if blind {
		return // it cannot tell the others' silence from its own
	}
	cctx, cancel := context.WithTimeout(ctx, in.o.Timeout)
	defer cancel()
	keys, err := in.kv.Keys(cctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return
	}
	if err != nil {
		in.log.Debug("listing gateway instances failed", "err", err)
		return
	}
	now := time.Now()
	live := map[string]bool{}
	for _, k := range keys {
		if k == in.o.Instance {
			continue
		}
		live[k] = true
		e, err := in.kv.Get(cctx, k)
		if err != nil {
			continue // deleted meanwhile, or NATS trouble: next round
		}
		s, ok := in.seen[k]
		if !ok || s.rev != e.Revision() {
			in.seen[k] = sighting{rev: e.Revision(), since: now}
			continue
		}
		silent := now.Sub(s.since)
		if s.since.Before(reachable) {
			silent = now.Sub(reachable)
		}
		if silent < in.o.Timeout {
			continue
		}
		var r instanceRecord
		if err := json.Unmarshal(e.Value(), &r); err != nil || r.Instance != k {
			in.log.Warn("unreadable gateway instance record", "key", k, "err", err)
			continue
		}
		if r.State == instanceLive {
			r.Reason = fmt.Sprintf("gateway process %s on %s sent no heartbeat for %s (last at %s)",
				k, r.Gateway, silent.Round(time.Second), e.Created().UTC().Format(time.RFC3339))
			r.ScanFrom = e.Created().Add(-time.Duration(r.OldestOpenMS)*time.Millisecond - scanMargin)
		}
		// A stopped record that stays as it is for the timeout was
		// claimed by a gateway that did not finish: take it over.
		in.claim(ctx, e, r)
		delete(in.seen, k)
	}
	for k := range in.seen {
		if !live[k] {
			delete(in.seen, k)
		}
	}
}

// notePrevious notes the sessions of the instance this gateway ran as
// before on this data directory, without waiting for the timeout: the
// data directory's lock proves it has stopped.
func (in *Instances) notePrevious(ctx context.Context, prev string) {
	cctx, cancel := context.WithTimeout(ctx, in.o.Timeout)
	defer cancel()
	e, err := in.kv.Get(cctx, prev)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return // it stopped cleanly, or was noted already
	}
	if err != nil {
		in.log.Warn("could not read this gateway's previous instance; others will note its sessions once it has been silent long enough", "previous", prev, "err", err)
		return
	}
	var r instanceRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		in.log.Warn("unreadable gateway instance record", "key", prev, "err", err)
		return
	}
	if r.State == instanceLive {
		r.Reason = fmt.Sprintf("gateway process %s on %s ended without closing its sessions (its successor on the same data directory noticed at start)", prev, r.Gateway)
		r.ScanFrom = e.Created().Add(-time.Duration(r.OldestOpenMS)*time.Millisecond - scanMargin)
	}
	in.claim(ctx, e, r)
}

// claim takes a stopped instance's key (only one gateway's claim on a
// revision succeeds), notes its open sessions and removes the key once
// all are noted. On failure the claim stays and is taken over after the
// timeout, by this gateway or another.
func (in *Instances) claim(ctx context.Context, e jetstream.KeyValueEntry, r instanceRecord) {
	k := e.Key()
	r.State, r.NoticedBy = instanceStopped, in.o.Instance
	if r.ScanFrom.IsZero() {
		r.ScanFrom = e.Created().Add(-scanMargin)
	}
	b, _ := json.Marshal(&r)
	cctx, cancel := context.WithTimeout(ctx, in.o.Timeout)
	defer cancel()
	rev, err := in.kv.Update(cctx, k, b, e.Revision())
	if err != nil {
		// It heartbeat after all, or another gateway claimed it first.
		in.log.Debug("claim of a silent gateway instance not taken", "instance", k, "err", err)
		return
	}
	in.log.Warn("gateway instance stopped; marking its open sessions interrupted", "instance", k, "gateway", r.Gateway, "reason", r.Reason)
	sctx, scancel := context.WithTimeout(ctx, 10*in.o.Timeout)
	defer scancel()
	noted, failed := in.noteSessions(sctx, r)
	if failed > 0 {
		in.log.Warn("some sessions of a stopped gateway instance could not be marked interrupted; trying again later", "instance", k, "noted", noted, "failed", failed)
		return
	}
	if err := in.kv.Delete(cctx, k, jetstream.LastRevision(rev)); err != nil {
		in.log.Debug("removing a stopped gateway instance", "instance", k, "err", err)
	}
	in.log.Info("stopped gateway instance handled", "instance", k, "sessions_marked", noted)
}

// noteSessions appends a note to each session of r.Instance that has
// neither an end nor a note.
func (in *Instances) noteSessions(ctx context.Context, r instanceRecord) (noted, failed int) {
	sums, err := in.o.Reader.Sessions(ctx, ListOptions{Since: r.ScanFrom})
	if err != nil {
		in.log.Warn("reading the sessions of a stopped gateway instance", "instance", r.Instance, "err", err)
		return 0, 1
	}
	for _, s := range sums {
		if s.Instance != r.Instance || s.Status != StatusOpen {
			continue
		}
		out, err := in.o.Recorder.Interrupt(ctx, in.o.Reader, s.Session, r.Instance, in.o.Instance, r.Reason)
		if err != nil {
			in.log.Warn("could not mark a session interrupted", "session", s.Session, "instance", r.Instance, "err", err)
			if !errors.Is(err, ErrSessionActive) {
				failed++
			}
			continue
		}
		if out == NoteWritten {
			noted++
		}
	}
	return noted, failed
}
