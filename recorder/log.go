package recorder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/internal/plural"
)

var (
	// appendStall is how long Append lets the JetStream context stall when
	// its async window (shared by all sessions) is full. Append must not
	// wait on the network; a publish refused here stays queued and the
	// next Commit republishes it.
	appendStall = jetstream.WithStallWait(time.Millisecond)
	// commitStall is the same for a republish in Commit, which runs under
	// the Log's lock, so it is kept short too.
	commitStall = jetstream.WithStallWait(10 * time.Millisecond)
	// noRetry reports "no response from stream" (no leader) at once
	// instead of after the client's own retries (2 x 250ms): Commit plans
	// the next publish itself, on the other stream when there is one.
	noRetry = jetstream.WithRetryAttempts(0)
)

// Log is one session's ordered event writer. It is safe for concurrent
// use: a proxy session appends from its client-reading and its
// upstream-reading goroutines.
//
// Every appended event stays in the outbox until JetStream acknowledges
// it, so a publish that fails is never forgotten: Commit republishes it
// with the same Nats-Msg-Id (the stream drops the copy if the first one
// was stored after all) and reports failure until it is acknowledged.
type Log struct {
	r        *Recorder
	session  string
	meta     Meta
	log      *slog.Logger
	subjects [len(kinds)]string

	// chunkSubject is where the session's chunks go (see chunk.go).
	chunkSubject string
	// maxEvent is the largest message body the log publishes (an event,
	// or a chunk), and inline the longest statement text or parameter
	// encoding it keeps inside an event; both follow from the server's
	// max_payload and the stream's max_msg_size when the session opens.
	maxEvent, inline int

	mu      sync.Mutex
	seq     uint64
	prev    string   // Hash of the event with seq
	outbox  []*entry // in seq order; acknowledged entries are removed by compactLocked
	unacked int      // events in outbox not yet acknowledged (chunks not counted)
	// held counts outbox entries not yet published, and inflight the
	// bytes of chunks published and not yet acknowledged (pumpLocked).
	// Both stay zero for a session without large values.
	held, inflight int
	// blobs are the SHA-256s of the values this session stored in chunks:
	// a value referenced again (a large prepared statement executed many
	// times) is not stored again; its reference finds the same chunks.
	blobs map[string]struct{}
	// broken is set when an event can never be published (an invalid
	// session id, an event that does not encode). The log can then never
	// be complete, so Commit fails for the rest of the session.
	broken error
	// unsignedSince is when the oldest event not yet covered by a
	// signature was appended; zero when the last event is signed.
	unsignedSince time.Time
	// ckpt appends a checkpoint when unsigned events wait too long;
	// ckptArmed says it is running.
	ckpt      *time.Timer
	ckptArmed bool
	// ended is set by session.end (or auth.failed): no checkpoint after it.
	ended bool
	// results are outcomes waiting for the session's next event.
	results []Result
}

// entry is one appended event, or one chunk of a large value of the event
// with seq.
type entry struct {
	seq   uint64
	msg   *nats.Msg // kept for republishing, with its Nats-Msg-Id header
	att   *attempt  // the latest publish; earlier ones are no longer watched
	acked bool
	chunk bool
	// held: not published yet, waiting for earlier entries (pumpLocked).
	held bool
	// lone: never batched (batch.go): a session's first event, its end,
	// a refused authentication.
	lone bool
	// base is the event's subject on the events stream; msg carries it on
	// lane, where it has been published since laneSince.
	base      string
	lane      int32
	laneSince time.Time
}

// attempt is one publish of an entry. Its future's Ok and Err channels
// deliver one value to one receiver only, so whoever receives it records
// the outcome here and closes done, which wakes any other Commit waiting
// on the same attempt.
type attempt struct {
	ok      <-chan *jetstream.PubAck
	errc    <-chan error
	sent    time.Time
	first   bool   // the entry's first publish; see ackResult
	chunk   bool   // of a chunk entry
	sync    bool   // refused by the client on the spot, not by a server
	epoch   uint64 // Recorder.connEpoch when sent
	done    chan struct{}
	settled bool  // under Log.mu; done is closed when set
	err     error // valid once settled; nil means acknowledged
}

// Session is the id this log writes.
func (l *Log) Session() string { return l.session }

// Meta is what every event of the session carries: who, where, under which
// grant.
func (l *Log) Meta() Meta { return l.meta }

// Broken is why the log can never be complete again (an invalid session id,
// the session id used by another writer, a message the server refuses for
// good), or nil: every later Commit fails with it.
func (l *Log) Broken() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.broken
}

// Append fills the event's envelope (V, Session, Seq, Time when zero, Meta),
// chains it to the previous event (Prev, Hash) and signs it when the
// signing policy says so (see sealLocked), starts publishing it and returns
// its seq. Seqs are 1, 2, 3, ... with no gaps, even when publishing fails.
// It does not wait for the network.
func (l *Log) Append(ev Event) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appendLocked(ev)
}

func (l *Log) appendLocked(ev Event) uint64 {
	l.seq++
	seq := l.seq
	ev.V = Version
	ev.Session = l.session
	ev.Seq = seq
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time = ev.Time.UTC()
	ev.Meta = l.meta
	if ev.Type == TypeSessionStart && ev.Start == nil && l.r.instance != "" {
		ev.Start = &Start{Instance: l.r.instance}
	}
	if len(l.results) > 0 {
		// The outcomes are encoded from where they wait, then dropped:
		// nothing keeps ev once it is sealed.
		if len(ev.Results) == 0 {
			ev.Results = l.results
		} else {
			ev.Results = append(ev.Results, l.results...)
		}
		defer l.dropResults()
	}
	if ev.Type == TypeSessionEnd || ev.Type == TypeAuthFailed {
		l.ended = true
		if l.ckpt != nil {
			l.ckpt.Stop()
		}
	}
	if l.broken != nil {
		l.unacked++
		return seq
	}
	var blobs []blob
	if ev.Statement != nil {
		blobs = l.externalize(&ev)
	}
	data, body, err := l.sealLocked(&ev)
	if err != nil {
		l.broken = fmt.Errorf("event %d (%s): encode: %w", seq, ev.Type, err)
		l.unacked++
		return seq
	}
	if body != nil {
		blobs = append(blobs, *body)
	}
	hdr := nats.Header{jetstream.MsgIDHeader: []string{l.session + "-" + strconv.FormatUint(seq, 10)}}
	lane := l.r.active.Load()
	if seq == 1 {
		// The session's subjects must be empty when it starts: a second
		// writer under the same session id is refused by the stream, not
		// just detected by the verifier. Later events do not carry it; see
		// docs/recorder.md for why.
		hdr[jetstream.ExpectedLastSubjSeqHeader] = []string{"0"}
		hdr[jetstream.ExpectedLastSubjSeqSubjHeader] = []string{l.r.lanes[lane].prefix + "." + l.session + ".>"}
	}
	base := l.subjectFor(ev.Type)
	e := &entry{
		seq:  seq,
		msg:  &nats.Msg{Subject: l.r.subjectOn(base, lane), Data: data, Header: hdr},
		base: base,
		lane: lane,
		lone: seq == 1 || !batchable(ev.Type),
	}
	if len(blobs) == 0 && l.held == 0 {
		l.outbox = append(l.outbox, e)
		l.unacked++
		l.publishLocked(e, appendStall)
		return seq
	}
	// Its chunks go first, then the event, after everything held before.
	k := 0
	for _, b := range blobs {
		if _, ok := l.blobs[b.ref.SHA256]; ok {
			continue
		}
		if l.blobs == nil {
			l.blobs = map[string]struct{}{}
		}
		l.blobs[b.ref.SHA256] = struct{}{}
		chunks := l.chunkEntries(seq, b, &k)
		l.outbox = append(l.outbox, chunks...)
		l.held += len(chunks)
	}
	e.held = true
	l.held++
	l.outbox = append(l.outbox, e)
	l.unacked++
	l.pumpLocked(appendStall)
	return seq
}

// dropResults forgets the outcomes an event carried, keeping their room.
func (l *Log) dropResults() {
	clear(l.results)
	l.results = l.results[:0]
}

// Result records the outcome of one of the session's statements. It
// does not publish anything: the outcome rides on the session's next event
// (in strict mode, the next statement's, which is acknowledged before that
// statement runs), or on a checkpoint when the session stays quiet for
// SignInterval. An outcome after the session's end cannot be recorded; it
// is logged.
func (l *Log) Result(r Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		l.log.Warn("statement outcome after the session's end not recorded", "statement", r.ID, "executed", r.Executed)
		return
	}
	l.results = append(l.results, r)
	l.armLocked(l.r.signEvery)
}

// checkpoint runs when a session's oldest unsigned event has waited
// SignInterval for a signature and no later event carried one, or an
// outcome has waited that long for an event to ride on: it appends a
// signed checkpoint event, which carries the outcomes and covers the
// unsigned events through the chain. Its acknowledgement is awaited by the
// session's next Commit.
func (l *Log) checkpoint() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ckptArmed = false
	if l.ended || l.broken != nil || l.unsignedSince.IsZero() && len(l.results) == 0 {
		return
	}
	if wait := l.r.signEvery - time.Since(l.unsignedSince); !l.unsignedSince.IsZero() && wait > 0 && len(l.results) == 0 {
		l.armLocked(wait)
		return
	}
	l.appendLocked(Event{Type: TypeCheckpoint})
}

// armLocked starts the checkpoint timer unless it runs already.
func (l *Log) armLocked(d time.Duration) {
	if l.ckptArmed || l.ended {
		return
	}
	l.ckptArmed = true
	if l.ckpt == nil {
		l.ckpt = time.AfterFunc(d, l.checkpoint)
		return
	}
	l.ckpt.Reset(d)
}

// normalize replaces ev by the decoding of its canonical encoding and
// returns the encoding of that.
func normalize(ev *Event, c canonical) (canonical, error) {
	var n Event
	if err := json.Unmarshal(c.b, &n); err != nil {
		return canonical{}, err
	}
	*ev = n
	return canonicalFast(ev)
}

// sealLocked links ev to the chain, signs it when the policy says so and
// returns the message body, with the blob of ev's body when the event was
// too large for a message even so (see bodyBlob). The policy (docs/recorder.md, "Signing"):
// events that open or close a session and checkpoints are always signed;
// any other event is signed when the session's oldest event not yet
// covered by a signature is half of SignInterval old or older. Otherwise the next
// signature covers it through the chain: a later event's, or a
// checkpoint's the timer appends when the session goes quiet.
func (l *Log) sealLocked(ev *Event) ([]byte, *blob, error) {
	ev.Prev, ev.Hash, ev.Key, ev.Sig = l.prev, "", "", ""
	now := time.Now()
	// Half the interval, so a busy session signs its own events and the
	// timer, at the full interval, only fires for a quiet one.
	signed := MustSign(ev) || l.r.signEvery <= 0 ||
		!l.unsignedSince.IsZero() && now.Sub(l.unsignedSince) >= l.r.signEvery/2
	if signed {
		ev.Key = l.r.signer.Fingerprint()
	}
	if err := encodable(ev); err != nil {
		return nil, nil, err
	}
	bp := encodeBufs.Get().(*[]byte)
	canon := canonicalAppend((*bp)[:0], ev)
	defer func() {
		if cap(canon.b) <= maxPooledEncode {
			*bp = canon.b[:0]
		}
		encodeBufs.Put(bp)
	}()
	var err error
	if canon.replaced {
		// A string held invalid UTF-8, which encoding/json writes as the
		// escape \ufffd but decodes to U+FFFD, which it writes as is: the
		// event would not encode the same after a read. Record what a
		// reader will see.
		if canon, err = normalize(ev, canon); err != nil {
			return nil, nil, err
		}
	}
	var body *blob
	if len(canon.b)+sealOverhead > l.maxEvent {
		// Too large even with long values in chunks: decided here,
		// before the event takes its place in the chain, so that every
		// sealed event can be published.
		b := bodyBlob(ev)
		body = &b
		if canon, err = canonicalFast(ev); err != nil {
			return nil, nil, err
		}
		if len(canon.b)+sealOverhead > l.maxEvent {
			return nil, nil, fmt.Errorf("%d bytes without its body, more than the %d a message may hold", len(canon.b)+sealOverhead, l.maxEvent)
		}
	}
	sum := sha256.Sum256(canon.b)
	ev.Hash = hex.EncodeToString(sum[:])
	if signed {
		ev.Sig = l.r.signer.sign(&sum)
	}
	data := canon.sealed(ev.Hash, ev.Sig)
	l.prev = ev.Hash
	switch {
	case signed:
		l.unsignedSince = time.Time{}
	case l.unsignedSince.IsZero():
		l.unsignedSince = now
		l.armLocked(l.r.signEvery)
	}
	return data, body, nil
}

func (l *Log) subjectFor(eventType string) string {
	k := Kind(eventType)
	for i, kk := range kinds {
		if kk == k {
			return l.subjects[i]
		}
	}
	return l.subjects[len(kinds)-1]
}

// publishLocked starts a new attempt for e. A synchronous failure (closed
// connection, full reconnect buffer, stalled window) settles the attempt
// at once with that error.
func (l *Log) publishLocked(e *entry, stall jetstream.PublishOpt) {
	a := &attempt{sent: time.Now(), first: e.att == nil, chunk: e.chunk, epoch: l.r.connEpoch.Load(), done: make(chan struct{})}
	if e.laneSince.IsZero() {
		e.laneSince = a.sent
	}
	first := a.first
	e.att = a
	if first && !e.chunk && e.lane == 0 && l.r.batch != nil {
		// A first publish goes through the gateway's group-commit
		// publisher (batch.go), in the order appended; republishes and
		// chunks go directly.
		ok, errc, err, handled := l.r.batch.submit(e.msg, e.lone, stall)
		if handled {
			if err != nil {
				l.syncFailLocked(e, a, err)
				return
			}
			a.ok, a.errc = ok, errc
			return
		}
	}
	fut, err := l.r.js.PublishMsgAsync(e.msg, stall, noRetry)
	if err != nil {
		l.syncFailLocked(e, a, err)
		return
	}
	// Ask for both channels now: the future only buffers the outcome for
	// channels that exist, and we want to poll without blocking later.
	a.ok, a.errc = fut.Ok(), fut.Err()
}

// syncFailLocked settles a with err, a publish the client refused on the
// spot (closed connection, full reconnect buffer, stalled window, too
// large).
func (l *Log) syncFailLocked(e *entry, a *attempt, err error) {
	if errors.Is(err, nats.ErrMaxPayload) {
		err = l.oversize(e, err)
		if l.broken == nil {
			l.broken = err
		}
	}
	a.settled, a.err, a.sync = true, err, true
	close(a.done)
}

// settle records the outcome of a; the first outcome wins.
func (l *Log) settle(e *entry, a *attempt, err error) {
	l.mu.Lock()
	l.settleLocked(e, a, err)
	l.mu.Unlock()
}

// errSessionReused marks an event the stream dropped as a duplicate of
// another log's event with the same session id and seq.
var errSessionReused = errors.New("session id already used in the stream")

// errOversize marks a message the stream refused as larger than its
// max_msg_size: republishing cannot help.
var errOversize = errors.New("larger than the stream's max_msg_size")

// ackResult is the outcome an ack means. A duplicate ack on an entry's
// first publish means the stream already held another event with this
// session id and seq (a session id reused within the duplicate window):
// ours was dropped, not stored. Later publishes are republishes, whose
// duplicate ack means our own earlier copy was stored.
func (a *attempt) ackResult(session string, seq uint64, pa *jetstream.PubAck) error {
	if a.first && pa != nil && pa.Duplicate {
		return fmt.Errorf("event %d dropped as a duplicate of %s-%d: %w", seq, session, seq, errSessionReused)
	}
	return nil
}

// errResult is the outcome a publish error means. The stream refusing a
// session's first event for its expected last sequence means the session's
// subjects already hold events: another writer uses this session id.
func (a *attempt) errResult(session string, seq uint64, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return fmt.Errorf("%w: %w", errOversize, err)
	}
	if a.first && seq == 1 && errors.As(err, &apiErr) && !a.chunk &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("event 1 refused: the stream already holds events of session %s: %w", session, errSessionReused)
	}
	return err
}

func (l *Log) settleLocked(e *entry, a *attempt, err error) {
	if a.settled {
		return
	}
	a.settled, a.err = true, err
	close(a.done)
	if errors.Is(err, errSessionReused) && l.broken == nil {
		// Republishing cannot help: the stream keeps dropping the id.
		l.broken = err
	}
	if errors.Is(err, errOversize) && l.broken == nil {
		l.broken = l.oversize(e, err)
	}
	// An ack from any attempt proves the event is stored, and a duplicate
	// ack (PubAck.Duplicate) means an earlier attempt stored it: both count.
	if err == nil && !e.acked {
		e.acked = true
		if e.chunk {
			l.inflight -= len(e.msg.Data)
		} else {
			l.unacked--
		}
	}
}

// pollLocked settles a if its outcome has arrived, without blocking.
func (l *Log) pollLocked(e *entry, a *attempt) {
	if a.settled {
		return
	}
	select {
	case pa := <-a.ok:
		l.settleLocked(e, a, a.ackResult(l.session, e.seq, pa))
	case err := <-a.errc:
		l.settleLocked(e, a, a.errResult(l.session, e.seq, err))
	default:
	}
}

// compactLocked drops acknowledged entries, keeping seq order.
func (l *Log) compactLocked() {
	n := 0
	for _, e := range l.outbox {
		if !e.acked {
			l.outbox[n] = e
			n++
		}
	}
	clear(l.outbox[n:])
	l.outbox = l.outbox[:n]
}

// Pending reports how many appended events are not yet acknowledged.
func (l *Log) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.outbox {
		if !e.acked {
			l.pollLocked(e, e.att)
		}
	}
	l.compactLocked()
	return l.unacked
}

// waitItem is an attempt Commit waits on, with its entry.
type waitItem struct {
	e *entry
	a *attempt
}

// Commit waits until every event appended before the call is acknowledged,
// or until ctx is done or the PublishTimeout passes. Events whose publish
// failed are republished first, in seq order, with the same Nats-Msg-Id;
// an event whose republish fails again in the same Commit stays queued for
// the next one. On failure the error wraps ErrUnavailable and the cause.
func (l *Log) Commit(ctx context.Context) error {
	l.mu.Lock()
	if l.broken != nil {
		err := l.failLocked(l.broken)
		l.mu.Unlock()
		return err
	}
	if l.unacked == 0 {
		l.mu.Unlock()
		return nil
	}
	if l.unacked > MaxUnacknowledged {
		// Acks may have arrived that nobody has looked at yet.
		for _, e := range l.outbox {
			if !e.acked {
				l.pollLocked(e, e.att)
			}
		}
		l.compactLocked()
		if l.unacked > MaxUnacknowledged {
			err := l.failLocked(fmt.Errorf("more than %d events unacknowledged", MaxUnacknowledged))
			l.mu.Unlock()
			return err
		}
	}
	target := l.seq
	l.mu.Unlock()

	deadline := time.Now().Add(l.r.timeout)
	timer := commitTimers.Get().(*time.Timer)
	timer.Reset(l.r.timeout)
	defer func() {
		timer.Stop() // no stale tick is received after (Go 1.23)
		commitTimers.Put(timer)
	}()
	var (
		buf     [4]waitItem
		retried map[*entry]int
	)
	for {
		waits, wake, more, err := l.prepare(target, buf[:0], &retried)
		if err != nil {
			return l.fail(err)
		}
		if len(waits) == 0 && wake.IsZero() {
			if more {
				return l.fail(errors.New("events held back with nothing in flight"))
			}
			return nil
		}
		// Wake up for the next retry or failover prepare planned, or at
		// the deadline, or when the connection is back.
		if !wake.IsZero() && wake.Before(deadline) {
			timer.Reset(time.Until(wake))
		} else {
			timer.Reset(time.Until(deadline))
		}
		reconnected := *l.r.reconnected.Load()
		woke := len(waits) == 0
		for _, w := range waits {
			select {
			case <-w.a.done:
			case pa := <-w.a.ok:
				l.settle(w.e, w.a, w.a.ackResult(l.session, w.e.seq, pa))
			case err := <-w.a.errc:
				l.settle(w.e, w.a, w.a.errResult(l.session, w.e.seq, err))
			case <-ctx.Done():
				return l.fail(context.Cause(ctx))
			case <-timer.C:
				woke = true
			case <-reconnected:
				woke = true
			}
			// done is closed by now unless the timer woke us, so a.err is
			// safe to read. On a failure go back to prepare, which plans
			// what to do about it (and any other failed event).
			if woke || w.a.err != nil {
				break
			}
			if more {
				// A large value's chunks go out a window at a time: go
				// back to prepare to publish more. The timeout bounds
				// the wait for each acknowledgement, not for all of
				// them, so a large statement is not refused for taking
				// longer to store than a small one.
				deadline = time.Now().Add(l.r.timeout)
				l.r.collect()
				break
			}
		}
		if len(waits) == 0 {
			select {
			case <-ctx.Done():
				return l.fail(context.Cause(ctx))
			case <-timer.C:
			case <-reconnected:
			}
		}
		if woke && !time.Now().Before(deadline) {
			return l.fail(l.timeoutCause())
		}
	}
}

// commitTimers are the stopped timers of Commits not running: a Commit
// per statement would otherwise make one each.
var commitTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// retrySpacing is the least time between two publishes of one event
// after failures the server answered at once (no stream leader), so a
// Commit does not spin while a cluster elects.
const retrySpacing = 100 * time.Millisecond

// prepare returns the attempts to wait for so that every event up to
// target is acknowledged, and when to look at them again (zero: no need),
// publishing again first those that need it (see plan). retried counts
// the publishes this Commit made per entry. more reports entries still
// held back (chunks beyond the window, events waiting for their chunks):
// the caller comes back once one of the waits is settled.
func (l *Log) prepare(target uint64, waits []waitItem, retried *map[*entry]int) (_ []waitItem, wake time.Time, more bool, _ error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	defer l.compactLocked()
	if l.broken != nil {
		return nil, time.Time{}, false, l.broken
	}
	l.pumpLocked(commitStall)
	if l.broken != nil {
		return nil, time.Time{}, false, l.broken
	}
	var now time.Time
	connected := -1 // unknown; asked at most once
	isConnected := func() bool {
		if connected < 0 {
			connected = 0
			if l.r.js.Conn().IsConnected() {
				connected = 1
			}
		}
		return connected == 1
	}
	soon := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	for _, e := range l.outbox {
		if e.seq > target {
			break
		}
		if e.acked {
			continue
		}
		if e.held {
			more = true
			break
		}
		a := e.att
		l.pollLocked(e, a)
		if l.broken != nil {
			// The outcome just polled may be one no republish can mend
			// (a reused session id): republishing would store it anyway.
			return nil, time.Time{}, false, l.broken
		}
		if e.acked {
			continue
		}
		if now.IsZero() {
			now = time.Now()
		}
		n := (*retried)[e]
		to, at, err := l.plan(e, a, n, now, isConnected)
		if err != nil {
			return nil, time.Time{}, false, err
		}
		if to < 0 {
			soon(at)
			if !a.settled {
				waits = append(waits, waitItem{e, a})
			}
			continue
		}
		if *retried == nil {
			*retried = make(map[*entry]int)
		}
		(*retried)[e] = n + 1
		l.moveLocked(e, to, now)
		l.publishLocked(e, commitStall)
		a = e.att
		if a.settled {
			return nil, time.Time{}, false, fmt.Errorf("event %d: republish: %w", e.seq, a.err)
		}
		soon(a.sent.Add(l.r.retryAfter))
		waits = append(waits, waitItem{e, a})
	}
	if len(waits) == 0 && wake.IsZero() && l.held > 0 {
		// Acknowledgements polled above may have opened the window.
		l.pumpLocked(commitStall)
		for _, e := range l.outbox {
			if e.seq > target {
				break
			}
			if !e.acked && !e.held {
				waits = append(waits, waitItem{e, e.att})
			}
		}
	}
	return waits, wake, l.heldUpToLocked(target), nil
}

// heldUpToLocked reports whether an entry up to target is held back.
func (l *Log) heldUpToLocked(target uint64) bool {
	if l.held == 0 {
		return false
	}
	for _, e := range l.outbox {
		if e.seq > target {
			return false
		}
		if e.held {
			return true
		}
	}
	return false
}

// plan decides about e, whose latest attempt a is neither acknowledged
// nor (when unsettled) answered yet, after n publishes by this Commit:
// publish it again now on lane to (>= 0), or look again at at, or give up
// with an error. The rules:
//
//   - A server's refusal other than "no leader" (an API error), or a
//     publish the client refused on the spot (payload too large, window
//     full), is published once more, in case it was passing, and fails the
//     Commit if it comes again.
//   - While the connection is down nothing is published again: the client
//     buffers for the reconnect, and another copy would only queue behind
//     the first.
//   - Otherwise an event no stream answers (no ack yet, or "no response
//     from stream", which is what a stream without a leader gives) is
//     published again: at once on the active lane when another session
//     switched lanes; at once on its lane when it went out on a
//     connection lost since; with a standby, on the other lane when its
//     lane has not answered for failoverAfter; and after retryAfter on its
//     lane (its publish or its ack may have been lost unnoticed).
func (l *Log) plan(e *entry, a *attempt, n int, now time.Time, connected func() bool) (int32, time.Time, error) {
	// "Duplicate message id is in process": an earlier copy is being
	// stored right now; the next copy will be acknowledged as its
	// duplicate. As good as no answer yet; so is a publish failed because
	// its connection was lost (the stream was never asked).
	answered := a.settled && !inProcess(a.err) && !connectionLost(a.err)
	down := !answered || !a.sync && laneDown(a.err)
	if !down {
		if n > 0 {
			return -1, time.Time{}, fmt.Errorf("event %d: %w", e.seq, a.err)
		}
		return l.r.active.Load(), time.Time{}, nil
	}
	if !connected() {
		// The time without a connection is not the lane's fault.
		e.laneSince = now
		return -1, now.Add(l.r.retryAfter), nil
	}
	if answered && n > 0 && now.Sub(a.sent) < retrySpacing {
		return -1, a.sent.Add(retrySpacing), nil
	}
	active := l.r.active.Load()
	multi := len(l.r.lanes) > 1
	switch {
	case e.lane != active:
		return active, time.Time{}, nil
	case !answered && a.epoch != l.r.connEpoch.Load():
		// Sent into a connection lost since: again, on the new one, at
		// once. Its lane is not to blame.
		e.laneSince = now
		return e.lane, time.Time{}, nil
	case multi && (answered || now.Sub(e.laneSince) >= l.r.failoverAfter):
		cause := "no acknowledgement within " + l.r.failoverAfter.String()
		if answered {
			cause = a.err.Error()
		}
		return l.r.failover(active, cause), time.Time{}, nil
	case answered || now.Sub(a.sent) >= l.r.retryAfter:
		return e.lane, time.Time{}, nil
	}
	at := a.sent.Add(l.r.retryAfter)
	if f := e.laneSince.Add(l.r.failoverAfter); multi && f.Before(at) {
		at = f
	}
	return -1, at, nil
}

// laneDown reports whether a publish error says the stream could not
// take the event at all (no leader, or no answer), as opposed to a refusal.
func laneDown(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout)
}

// errCodeMsgIDInProcess is JetStream's "duplicate message id is in
// process": a copy with this Nats-Msg-Id was received and is not stored
// yet (a replicated stream is still committing it).
const errCodeMsgIDInProcess = 10158

func connectionLost(err error) bool {
	return errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrStaleConnection)
}

func inProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeMsgIDInProcess
}

// moveLocked readies e's message for a publish on lane to: a held entry's
// first, or another. A republish of a first event goes without its
// expectation (see withoutExpectation).
func (l *Log) moveLocked(e *entry, to int32, now time.Time) {
	if e.seq == 1 && !e.chunk && e.att != nil {
		e.msg = withoutExpectation(e.msg)
	}
	if to == e.lane {
		return
	}
	e.msg = &nats.Msg{Subject: l.r.subjectOn(e.base, to), Data: e.msg.Data, Header: e.msg.Header}
	e.lane, e.laneSince = to, now
}

// withoutExpectation is m without the expected-last-sequence headers of a
// session's first event. A republish goes without them: on a single
// server the stream checks them before the Nats-Msg-Id, so the republish
// of a first event that was stored after all would be refused as "wrong
// last sequence" instead of acknowledged as a duplicate. The Msg-Id still
// catches a copy within the duplicate window.
func withoutExpectation(m *nats.Msg) *nats.Msg {
	if m.Header.Get(jetstream.ExpectedLastSubjSeqHeader) == "" {
		return m
	}
	h := nats.Header{}
	for k, v := range m.Header {
		if k != jetstream.ExpectedLastSubjSeqHeader && k != jetstream.ExpectedLastSubjSeqSubjHeader {
			h[k] = v
		}
	}
	return &nats.Msg{Subject: m.Subject, Data: m.Data, Header: h}
}

func (l *Log) timeoutCause() error {
	nc := l.r.js.Conn()
	if !nc.IsConnected() {
		return fmt.Errorf("no acknowledgement within %s (nats connection %s)", l.r.timeout, nc.Status())
	}
	return fmt.Errorf("no acknowledgement within %s", l.r.timeout)
}

func (l *Log) fail(cause error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failLocked(cause)
}

func (l *Log) failLocked(cause error) error {
	l.log.Debug("recording unavailable", "pending", l.unacked, "err", cause)
	return fmt.Errorf("%w: session %s: %s unacknowledged: %w", ErrUnavailable, l.session, plural.N(l.unacked, "event"), cause)
}
