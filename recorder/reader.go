package recorder

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotFound is returned by Events for a session with no events.
var ErrNotFound = errors.New("session not found")

// Session statuses in a Summary.
const (
	StatusOpen       = "open"
	StatusEnded      = "ended"
	StatusAuthFailed = "auth.failed"
	// StatusInterrupted: no end, but a gateway found the process writing
	// the session stopped and recorded a session.interrupted note.
	StatusInterrupted = "interrupted"
)

const (
	// defaultReadTimeout bounds a read whose ctx has no deadline: a read
	// against an unreachable server would otherwise retry forever.
	defaultReadTimeout = 30 * time.Second
	// consumerIdle lets the server remove a read's consumer if our
	// explicit delete is lost (the server's default is 5 minutes, which
	// piles up consumers under a console that refreshes a list).
	consumerIdle = 30 * time.Second
	// readStall is how long a read waits for its consumer, or for a
	// message it knows is pending, before it starts a new consumer after
	// the last message it got; readRetry is the pause before that.
	readStall = 3 * time.Second
	readRetry = 250 * time.Millisecond
	// readBatch is how many messages a read pulls per request.
	readBatch = 512
)

// Reader reads recorded events back from the stream.
type Reader struct {
	js     jetstream.JetStream
	stream string
	prefix string
	// seqOnly decodes only each event's seq and session (Stored).
	seqOnly bool
	// until, when set, ends a read at the first message past this
	// stream sequence.
	until uint64
}

// NewReader reads stream, whose event subjects start with subjectPrefix
// (empty means DefaultSubjectPrefix).
func NewReader(js jetstream.JetStream, stream, subjectPrefix string) *Reader {
	if subjectPrefix == "" {
		subjectPrefix = DefaultSubjectPrefix
	}
	return &Reader{js: js, stream: stream, prefix: subjectPrefix}
}

// Summary is one session as listed: who, where, when and how it ended.
type Summary struct {
	Session string `json:"session"`
	Meta
	Start time.Time  `json:"start"`
	End   *time.Time `json:"end,omitempty"`
	// Status is StatusOpen (started, no end yet), StatusEnded,
	// StatusInterrupted (its gateway process stopped; End is when that was
	// noticed) or StatusAuthFailed (refused before it started).
	Status    string `json:"status"`
	EndReason string `json:"end_reason,omitempty"`
	// Statements and Denied are the counts from the end event.
	Statements int `json:"statements"`
	Denied     int `json:"denied"`
	// Instance is the gateway process that wrote the session (its
	// session.start's start.instance); empty in older records.
	Instance string `json:"instance,omitempty"`
	// Interrupted is the session.interrupted note, if a gateway wrote one,
	// and InterruptedBy the host of that gateway. A session that ended
	// after all (its gateway had lost NATS, not stopped) keeps its note
	// and is StatusEnded.
	Interrupted   *Interruption `json:"interrupted,omitempty"`
	InterruptedBy string        `json:"interrupted_by,omitempty"`
}

// ListOptions narrows Sessions.
type ListOptions struct {
	// Since: only sessions started (or refused) at or after it.
	Since time.Time
	// Agent and Resource, when set, must equal the session's.
	Agent, Resource string
	// Limit keeps the newest Limit sessions; 0 keeps all.
	Limit int
}

// Sessions lists sessions newest first. It reads only the start, auth,
// end and interrupted subjects, so its cost grows with the number of
// sessions, not statements. Sessions that started before Since are left
// out even when they ended after it.
func (r *Reader) Sessions(ctx context.Context, o ListOptions) ([]Summary, error) {
	filters := []string{
		r.prefix + ".*." + KindStart,
		r.prefix + ".*." + KindAuth,
		r.prefix + ".*." + KindEnd,
		r.prefix + ".*." + KindInterrupted,
	}
	var since *time.Time
	if !o.Since.IsZero() {
		since = &o.Since
	}
	byID := make(map[string]*summarizer)
	err := r.read(ctx, filters, since, nil, func(_ []byte, ev *Event, _ uint64) {
		a := byID[ev.Session]
		if a == nil {
			a = &summarizer{s: Summary{Session: ev.Session}}
			byID[ev.Session] = a
		}
		a.add(ev)
	})
	if err != nil {
		return nil, err
	}
	out := make([]Summary, 0, len(byID))
	for _, a := range byID {
		// Without its start (it began before Since) a session has no
		// meta to filter on or show.
		s, ok := a.summary()
		if !ok {
			continue
		}
		if since != nil && s.Start.Before(*since) {
			continue
		}
		if o.Agent != "" && s.Agent != o.Agent {
			continue
		}
		if o.Resource != "" && s.Resource != o.Resource {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Summary) int {
		if c := b.Start.Compare(a.Start); c != 0 {
			return c
		}
		return cmp.Compare(b.Session, a.Session)
	})
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out, nil
}

// Events returns every event of one session ordered by Seq. A seq stored
// twice with the same content (a republish after the stream's duplicate
// window) is returned once, as first stored; two different events with one
// seq are both returned, and gaps are left, for the verifier to report.
//
// Values stored in chunks are put back in place (Resolve): a statement's
// whole text, its parameters, an event's body. So these events are for
// reading; their hashes cover the stored form, which Stored returns and
// VerifyStored checks.
func (r *Reader) Events(ctx context.Context, session string) ([]Event, error) {
	var (
		evs    []Event
		chunks []Chunk
	)
	err := r.session(ctx, session, keepChunk(&chunks), func(_ []byte, ev *Event, _ uint64, _ bool) {
		evs = append(evs, *ev)
	})
	if err != nil {
		return nil, err
	}
	evs = onceBySeq(evs, func(e *Event) uint64 { return e.Seq }, sameEvent)
	resolveAll(evs, chunks)
	return evs, nil
}

// onceBySeq orders xs by seq, first stored first among equal seqs, and
// keeps one of each set of copies that same says are identical: a read
// meets a seq twice when it was published again after the stream's
// duplicate window, or when it is in the standby as well as in the events
// stream. Different events with one seq are all kept, for the verifier.
func onceBySeq[T any](xs []T, seq func(*T) uint64, same func(a, b *T) bool) []T {
	slices.SortStableFunc(xs, func(a, b T) int { return cmp.Compare(seq(&a), seq(&b)) })
	out := xs[:0]
	group := 0 // where out's run of the current seq starts
	for i := range xs {
		if len(out) > 0 && seq(&out[len(out)-1]) != seq(&xs[i]) {
			group = len(out)
		}
		dup := false
		for j := group; j < len(out) && !dup; j++ {
			dup = same(&out[j], &xs[i])
		}
		if !dup {
			out = append(out, xs[i])
		}
	}
	return out
}

// sameEvent compares two events with one seq by their whole encoding, not
// their hash field, so an altered copy under the original's hash is kept
// for the verifier to see.
func sameEvent(a, b *Event) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// RawEvents returns one session's message bodies exactly as stored,
// ordered by seq, with byte-identical copies of a seq returned once: what
// an export file holds and VerifyRaw checks.
func (r *Reader) RawEvents(ctx context.Context, session string) ([]json.RawMessage, error) {
	st, err := r.Stored(ctx, session)
	if err != nil {
		return nil, err
	}
	return st.Events, nil
}

// Stored is one session as the stream holds it: its event bodies, and the
// chunks of values stored outside them (format v4).
type Stored struct {
	Events []json.RawMessage
	Chunks []Chunk
}

// Agent is the agent of a stored session: its first readable event's.
func (st *Stored) Agent() string {
	for _, raw := range st.Events {
		var ev struct {
			Agent string `json:"agent"`
		}
		if json.Unmarshal(raw, &ev) == nil && ev.Agent != "" {
			return ev.Agent
		}
	}
	return ""
}

// Stored returns one session's message bodies exactly as stored, ordered
// by seq, with byte-identical copies of a seq returned once, and its
// chunks in stream order, identical copies once: what an export file holds
// and VerifyStored checks.
func (r *Reader) Stored(ctx context.Context, session string) (*Stored, error) {
	type raw struct {
		seq  uint64
		data json.RawMessage
	}
	var (
		out    []raw
		chunks []Chunk
	)
	r2 := *r
	r2.seqOnly = true // the bodies are kept as stored; only their seq is needed
	err := r2.session(ctx, session, keepChunk(&chunks), func(data []byte, ev *Event, _ uint64, _ bool) {
		out = append(out, raw{ev.Seq, slices.Clone(data)})
	})
	if err != nil {
		return nil, err
	}
	out = onceBySeq(out, func(r *raw) uint64 { return r.seq }, func(a, b *raw) bool { return bytes.Equal(a.data, b.data) })
	raws := make([]json.RawMessage, len(out))
	for i := range out {
		raws[i] = out[i].data
	}
	return &Stored{Events: raws, Chunks: dedupChunks(chunks)}, nil
}

// session reads every message of one session: its own subjects in stream
// order (chunks to chunk, events to fn), then the events of it that
// batches carry (batched true), then the standby's copies. A session's
// batched events are in the batches of the gateway instance its start
// names, between its start and its end in the stream (batch.go), so only
// those are read.
func (r *Reader) session(ctx context.Context, session string, chunk func(c Chunk, ok bool, streamSeq uint64), fn func(data []byte, ev *Event, streamSeq uint64, batched bool)) error {
	if !ValidSessionID(session) {
		return fmt.Errorf("recorder: %w: invalid session id %q", ErrNotFound, session)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultReadTimeout)
		defer cancel()
	}
	own := []string{r.prefix + "." + session + ".>"}
	var (
		n                int
		inst             string
		startSeq, endSeq uint64
	)
	bounds := func(data []byte, ev *Event, streamSeq uint64, events bool) {
		typ := ev.Type
		if typ == "" {
			typ = peekType(data)
		}
		switch typ {
		case TypeSessionStart:
			if inst == "" {
				var p struct {
					Start *Start `json:"start"`
				}
				if json.Unmarshal(data, &p) == nil && p.Start != nil && ValidSessionID(p.Start.Instance) {
					inst = p.Start.Instance
				}
			}
			if events && startSeq == 0 {
				startSeq = streamSeq
			}
		case TypeSessionEnd, TypeAuthFailed:
			if events {
				endSeq = max(endSeq, streamSeq)
			}
		}
	}
	err := r.readStream(ctx, r.stream, own, nil, 0, chunk, func(data []byte, ev *Event, streamSeq uint64) {
		n++
		bounds(data, ev, streamSeq, true)
		fn(data, ev, streamSeq, false)
	})
	if err != nil {
		return err
	}
	var standby []func()
	err = r.readStandby(ctx, own, nil, chunk, func(data []byte, ev *Event, streamSeq uint64) {
		n++
		bounds(data, ev, streamSeq, false)
		// Delivered after the batches, as the events stream's own
		// copies were delivered before them.
		ev2, data := *ev, slices.Clone(data)
		standby = append(standby, func() { fn(data, &ev2, streamSeq, false) })
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("recorder: %w: %s", ErrNotFound, session)
	}
	if inst != "" {
		// From the start on (the whole stream when the start is only
		// in the standby so far), to the end when there is one.
		after := uint64(0)
		if startSeq > 0 {
			after = startSeq - 1
		}
		rb := *r
		rb.until = endSeq
		err := rb.readStream(ctx, r.stream, []string{r.prefix + "." + inst + "." + KindBatch}, nil, after, nil, func(data []byte, ev *Event, streamSeq uint64) {
			if ev.Session == session {
				fn(data, ev, streamSeq, true)
			}
		})
		if err != nil {
			return err
		}
	}
	for _, f := range standby {
		f()
	}
	return nil
}

// read delivers every message matching filters (from since, if set) that
// is in the stream when the read starts, in stream order: chunk messages to
// chunk (skipped when nil; ok is false for one whose headers cannot be
// read: it stands for no value, but it is in the stream), events to fn with their stream sequence. It stops at the count the
// consumer reported on creation, so it terminates on an empty result and
// does not chase events appended while it reads.
func (r *Reader) read(ctx context.Context, filters []string, since *time.Time, chunk func(c Chunk, ok bool, streamSeq uint64), fn func([]byte, *Event, uint64)) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultReadTimeout)
		defer cancel()
	}
	if err := r.readStream(ctx, r.stream, filters, since, 0, chunk, fn); err != nil {
		return err
	}
	return r.readStandby(ctx, filters, since, chunk, fn)
}

// readStandby is read on the standby stream, for filters of the events
// stream's subjects.
//
// Events a failover sent to the standby reach the events stream through
// its source, but not at once: nats-server checks a stalled source every
// 10 s and retries it with a backoff of up to 2 minutes, so for that long
// after a node is lost the events stream can lack them, and a read of it
// alone would show a gap where nothing was removed. So a read takes the
// standby's copies too; the callers keep one of identical copies.
func (r *Reader) readStandby(ctx context.Context, filters []string, since *time.Time, chunk func(c Chunk, ok bool, streamSeq uint64), fn func([]byte, *Event, uint64)) error {
	standby := make([]string, len(filters))
	for i, f := range filters {
		standby[i] = StandbySubjects(r.prefix) + strings.TrimPrefix(f, r.prefix)
	}
	err := r.readStream(ctx, StandbyStream(r.stream), standby, since, 0, chunk, fn)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // no failover: a single server, or recorder.replicas 1
	}
	return err
}

// readAfter is read on the events stream alone, from the message after
// its stream sequence after (since is then unused): for the session index,
// which follows the events stream and sees a failover's events when the
// stream has sourced them.
func (r *Reader) readAfter(ctx context.Context, filters []string, since *time.Time, after uint64, chunk func(c Chunk, ok bool, streamSeq uint64), fn func([]byte, *Event, uint64)) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultReadTimeout)
		defer cancel()
	}
	return r.readStream(ctx, r.stream, filters, since, after, chunk, fn)
}

// readStream is read on one stream.
func (r *Reader) readStream(ctx context.Context, stream string, filters []string, since *time.Time, after uint64, chunk func(c Chunk, ok bool, streamSeq uint64), fn func([]byte, *Event, uint64)) error {
	// A consumer made while the stream elects a leader, or whose server
	// dies, can stop delivering for good; a read that hears nothing for
	// readStall starts a new one after the last message it got.
	last := after
	for {
		done, err := r.readFrom(ctx, stream, filters, since, &last, chunk, fn)
		switch {
		case done:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("recorder: read stream %s: %w", stream, context.Cause(ctx))
		case !errors.Is(err, errReadStalled):
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(readRetry):
		}
	}
}

// errReadStalled is a read's consumer that went readStall without a
// message while some were pending, or could not be made in that time.
var errReadStalled = errors.New("read stalled")

// readFrom reads, through one consumer, the messages after stream sequence
// *last (all, or from since, when *last is 0), advancing *last. done is
// true once everything in the stream when the consumer was made is read.
func (r *Reader) readFrom(ctx context.Context, stream string, filters []string, since *time.Time, last *uint64, chunk func(c Chunk, ok bool, streamSeq uint64), fn func([]byte, *Event, uint64)) (done bool, _ error) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: consumerIdle,
	}
	switch {
	case *last > 0:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = *last + 1
	case since != nil:
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = since
	}
	cctx, cancel := context.WithTimeout(ctx, readStall)
	cons, err := r.js.OrderedConsumer(cctx, stream, cfg)
	cancel()
	if err != nil {
		if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse)) {
			return false, errReadStalled
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return false, err
		}
		return false, fmt.Errorf("recorder: read stream %s: %w", stream, err)
	}
	defer r.deleteConsumer(ctx, stream, cons)
	info := cons.CachedInfo()
	if info == nil {
		return false, fmt.Errorf("recorder: read stream %s: no consumer info", stream)
	}
	left := info.NumPending
	if left == 0 {
		return true, nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(readBatch))
	if err != nil {
		return false, fmt.Errorf("recorder: read stream %s: %w", stream, err)
	}
	defer it.Stop()
	for left > 0 {
		nctx, cancel := context.WithTimeout(ctx, readStall)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return false, errReadStalled
			}
			return false, fmt.Errorf("recorder: read stream %s: %w", stream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return false, fmt.Errorf("recorder: read stream %s: %w", stream, err)
		}
		if r.until > 0 && md.Sequence.Stream > r.until {
			return true, nil
		}
		*last = md.Sequence.Stream
		left--
		if strings.HasSuffix(msg.Subject(), "."+KindChunk) {
			if chunk != nil {
				c, ok := chunkOf(msg.Headers(), msg.Data())
				chunk(c, ok, md.Sequence.Stream)
			}
		} else if isBatch(msg.Subject()) {
			raws, err := splitBatch(msg.Data())
			if err != nil {
				return false, fmt.Errorf("recorder: stream %s seq %d (%s): %w", stream, md.Sequence.Stream, msg.Subject(), err)
			}
			for i, raw := range raws {
				ev, err := r.decode(raw)
				if err != nil {
					return false, fmt.Errorf("recorder: stream %s seq %d (%s) event %d: decode event: %w",
						stream, md.Sequence.Stream, msg.Subject(), i+1, err)
				}
				fn(raw, &ev, md.Sequence.Stream)
			}
		} else {
			ev, err := r.decode(msg.Data())
			if err != nil {
				// A record we cannot read is reported, not skipped:
				// skipping would hide exactly the kind of damage a
				// reviewer looks for.
				return false, fmt.Errorf("recorder: stream %s seq %d (%s): decode event: %w",
					stream, md.Sequence.Stream, msg.Subject(), err)
			}
			fn(msg.Data(), &ev, md.Sequence.Stream)
		}
		if md.NumPending == 0 {
			break
		}
	}
	return true, nil
}

// decode reads one stored event body: whole, or with seqOnly only its
// session and seq.
func (r *Reader) decode(data []byte) (Event, error) {
	var ev Event
	if !r.seqOnly {
		err := json.Unmarshal(data, &ev)
		return ev, err
	}
	if session, seq, ok := peekSessionSeq(data); ok {
		ev.Seq, ev.Session = seq, string(session)
		return ev, nil
	}
	var p struct {
		Session string `json:"session"`
		Seq     uint64 `json:"seq"`
	}
	err := json.Unmarshal(data, &p)
	ev.Session, ev.Seq = p.Session, p.Seq
	return ev, err
}

// deleteConsumer removes the read's consumer now rather than after
// consumerIdle; best effort, since a reviewer may not be allowed to.
func (r *Reader) deleteConsumer(ctx context.Context, stream string, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = r.js.DeleteConsumer(ctx, stream, info.Name)
}

// keepChunk is a chunk callback that collects the readable chunks.
func keepChunk(chunks *[]Chunk) func(Chunk, bool, uint64) {
	return func(c Chunk, ok bool, _ uint64) {
		if ok {
			*chunks = append(*chunks, c)
		}
	}
}

// Decoded is the stored session for reading, as Events returns it:
// decoded, with values kept in chunks put back in place. A body that does
// not decode becomes an event holding only a seq (verification says what
// is wrong with it).
func (st *Stored) Decoded() []Event {
	evs, _ := DecodeRaw(st.Events)
	resolveAll(evs, st.Chunks)
	return evs
}

// Follow delivers every event of one session in stream order, first
// those stored, then each as it is stored, until ctx ends or fn returns
// false. Chunks are not delivered (a live view shows events as they come).
func (r *Reader) Follow(ctx context.Context, session string, fn func(ev *Event) bool) error {
	if !ValidSessionID(session) {
		return fmt.Errorf("recorder: %w: invalid session id %q", ErrNotFound, session)
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{r.prefix + "." + session + ".>"},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: consumerIdle,
	}
	// The session's batched events (batch.go) are on its instance's
	// batch subject, from its start on.
	inst, startSeq, err := r.startOf(ctx, session)
	if err != nil {
		return fmt.Errorf("recorder: follow %s: %w", session, err)
	}
	if inst != "" {
		cfg.FilterSubjects = append(cfg.FilterSubjects, r.prefix+"."+inst+"."+KindBatch)
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, startSeq
	}
	cons, err := r.js.OrderedConsumer(ctx, r.stream, cfg)
	if err != nil {
		return fmt.Errorf("recorder: follow %s: %w", session, err)
	}
	defer r.deleteConsumer(ctx, r.stream, cons)
	it, err := cons.Messages(jetstream.PullMaxMessages(readBatch))
	if err != nil {
		return fmt.Errorf("recorder: follow %s: %w", session, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("recorder: follow %s: %w", session, err)
		}
		if strings.HasSuffix(msg.Subject(), "."+KindChunk) {
			continue
		}
		if isBatch(msg.Subject()) {
			raws, err := splitBatch(msg.Data())
			if err != nil {
				continue
			}
			for _, raw := range raws {
				var ev Event
				if json.Unmarshal(raw, &ev) != nil || ev.Session != session {
					continue
				}
				if !fn(&ev) {
					return nil
				}
			}
			continue
		}
		var ev Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			continue
		}
		if !fn(&ev) {
			return nil
		}
	}
}

// startOf returns the instance a session's start names and the start's
// stream sequence; "" when the stream holds no start of it (yet) or the
// start names none (records written before instances).
func (r *Reader) startOf(ctx context.Context, session string) (inst string, streamSeq uint64, err error) {
	rctx, cancel := context.WithTimeout(ctx, defaultReadTimeout)
	defer cancel()
	err = r.readStream(rctx, r.stream, []string{r.prefix + "." + session + "." + KindStart}, nil, 0, nil, func(data []byte, ev *Event, seq uint64) {
		if inst == "" && ev.Start != nil && ValidSessionID(ev.Start.Instance) {
			inst, streamSeq = ev.Start.Instance, seq
		}
	})
	return inst, streamSeq, err
}

// canonicalHead reads {"v":N,"type":"T" at the start of a body as the
// gateway writes it: T, and where the body goes on after it.
func canonicalHead(b []byte) (typ []byte, next int, ok bool) {
	const vPrefix = `{"v":`
	if !bytes.HasPrefix(b, []byte(vPrefix)) {
		return nil, 0, false
	}
	i := len(vPrefix)
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return canonicalString(b, i, `,"type":"`)
}

// canonicalString reads member key (with its opening quote) at b[i:], a
// string without quotes or escapes inside.
func canonicalString(b []byte, i int, key string) ([]byte, int, bool) {
	if !bytes.HasPrefix(b[i:], []byte(key)) {
		return nil, 0, false
	}
	i += len(key)
	j := bytes.IndexByte(b[i:], '"')
	if j < 0 || bytes.IndexByte(b[i:i+j], '\\') >= 0 {
		return nil, 0, false
	}
	return b[i : i+j], i + j + 1, true
}

// peekSessionSeq reads the session and seq of an event stored as the
// gateway writes it: {"v":N,"type":"T","session":"S","seq":N,... with no
// spaces (the canonical encoding, docs/events.md). Anything else is not
// ok, and is decoded in full. Only where a body's seq puts it among the
// session's events depends on this; verification decodes every body.
func peekSessionSeq(b []byte) (session []byte, seq uint64, ok bool) {
	// Members before seq: v (a number), type and session (strings the
	// gateway writes without quotes or escapes inside).
	_, i, ok := canonicalHead(b)
	if !ok {
		return nil, 0, false
	}
	if session, i, ok = canonicalString(b, i, `,"session":"`); !ok {
		return nil, 0, false
	}
	if !bytes.HasPrefix(b[i:], []byte(`,"seq":`)) {
		return nil, 0, false
	}
	i += len(`,"seq":`)
	start := i
	var n uint64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' && i-start < 19 {
		n = n*10 + uint64(b[i]-'0')
		i++
	}
	if i == start || i >= len(b) || (b[i] != ',' && b[i] != '}') {
		return nil, 0, false
	}
	return session, n, true
}
