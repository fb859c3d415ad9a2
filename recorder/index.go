package recorder

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Session states a Query may ask for. They are Summary.Status values,
// except that auth_failed is also accepted for StatusAuthFailed (a dot
// reads badly in a URL parameter).
const StateAuthFailedAlias = "auth_failed"

// ErrBadCursor is a Query cursor that this index did not hand out.
var ErrBadCursor = errors.New("bad cursor")

// ErrIndexLoading is returned by Query while the index is still reading
// the stream's history.
var ErrIndexLoading = errors.New("the session index is still reading the event stream")

// Index keeps one small summary per session in memory, following the
// events stream, so that a filtered, paged session list costs a walk over
// memory instead of a read of every start and end in the stream (what
// Reader.Sessions does on each call).
//
// It reads the stream in two steps. First the history of the start, auth,
// end and interrupted subjects, from the stream's first message; then, for
// the sessions that history leaves without an end (open, or interrupted),
// their statements up to that point, to count denials, since only a
// session.end carries totals. From there one consumer (see follow) follows
// the five subjects live, and the batches that carry statements
// (batch.go): a statement adds to its session's counts until the
// session's end replaces them with the end's totals. With a standby
// (IndexOptions.Standby) it follows that too, from its first message (see
// feed).
//
// Memory: one indexEntry per session (about 130 bytes, see
// BenchmarkIndexBuild for the measured total with the id, the client
// address and the map), with the agent, task, grant, approver, resource,
// protocol and gateway of a session shared between the sessions that have
// the same ones.
type Index struct {
	js     jetstream.JetStream
	stream string
	prefix string
	log    *slog.Logger

	mu    sync.RWMutex
	byID  map[string]*indexEntry
	order []*indexEntry // listed sessions, by (start, id) ascending
	metas map[Meta]*indexMeta
	strs  map[string]string
	// feeds are the streams followed: the events stream, then its
	// standby when IndexOptions.Standby names one.
	feeds []*feed
	// pace is followPace (tests set another before Run); takes counts
	// follow's requests that brought messages.
	pace  time.Duration
	takes atomic.Uint64

	ready     chan struct{}
	readyOnce sync.Once
}

// feed is one stream the index follows. On a cluster the standby is one
// too: what a failover sent there reaches the events stream only when
// nats-server has sourced it, seconds and at times minutes later (see
// docs/recorder.md, "Losing a node"), and a list meanwhile would lack the
// sessions that started there. An event read from both streams is applied
// twice, which changes nothing: a start, an auth failure and a statement
// count once per session and seq, and an end sets its totals.
type feed struct {
	stream, prefix string
	// The fields below are guarded by Index.mu.
	//
	// last is the stream sequence of the last message applied.
	last uint64
	// cons is the live consumer, for Sync; stopFollow stops its
	// messages, so that follow returns and Run makes a new one.
	cons       jetstream.Consumer
	stopFollow func()
	// askAgain is when Sync asks the stream again after unapplied
	// failed (stopAsking).
	askAgain time.Time
	// nudge cuts follow's pace short, for a Sync waiting on it.
	nudge chan struct{}
}

func newFeed(stream, prefix string) *feed {
	return &feed{stream: stream, prefix: prefix, nudge: make(chan struct{}, 1)}
}

// subjects are the subjects the index follows on f: the sessions'
// starts, refused logins, ends and interruption notes, their statements
// and the batches that carry statements.
func (f *feed) subjects() []string {
	return []string{
		f.prefix + ".*." + KindStart,
		f.prefix + ".*." + KindAuth,
		f.prefix + ".*." + KindEnd,
		f.prefix + ".*." + KindInterrupted,
		f.prefix + ".*." + KindStmt,
		f.prefix + ".*." + KindBatch,
	}
}

// indexEntry is one session. Times are Unix nanoseconds; 0 is none.
type indexEntry struct {
	id       string
	meta     *indexMeta // shared; Client is empty
	client   string
	instance string // shared
	start    int64
	end      int64
	// endReason is shared (reasons repeat).
	endReason  string
	note       *indexNote
	statements int32
	denied     int32
	// lastStmt is the highest seq of a statement counted, and bit i of
	// seen is set when statement lastStmt-i has been counted (see
	// countStmt).
	lastStmt uint32
	flags    uint8
	seen     uint64
}

const (
	flagStarted uint8 = 1 << iota
	flagAuthed
	flagEnded
	flagListed // in Index.order
)

// indexMeta is a Meta shared by sessions, with its task folded for the
// task filter.
type indexMeta struct {
	Meta
	taskLower string
}

// indexNote is a session.interrupted note: rare, so kept apart.
type indexNote struct {
	n     Interruption
	by    string
	noted int64
}

// IndexOptions configures NewIndex.
type IndexOptions struct {
	Stream string
	// SubjectPrefix of event subjects; empty means DefaultSubjectPrefix.
	SubjectPrefix string
	// Standby is the events stream's standby (StandbyStream), followed
	// as well; empty when the recorder has none (Recorder.Standby).
	Standby string
	Logger  *slog.Logger
}

// NewIndex makes an empty index of the stream; Run fills it.
func NewIndex(js jetstream.JetStream, o IndexOptions) *Index {
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = DefaultSubjectPrefix
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	x := &Index{
		js: js, stream: o.Stream, prefix: o.SubjectPrefix, log: o.Logger,
		byID:  make(map[string]*indexEntry),
		metas: make(map[Meta]*indexMeta),
		strs:  make(map[string]string),
		ready: make(chan struct{}),
		feeds: []*feed{newFeed(o.Stream, o.SubjectPrefix)},
		pace:  followPace,
	}
	if o.Standby != "" {
		x.feeds = append(x.feeds, newFeed(o.Standby, StandbySubjects(o.SubjectPrefix)))
	}
	return x
}

// Ready is closed once the index has read the stream's history; from
// then on Query answers.
func (x *Index) Ready() <-chan struct{} { return x.ready }

// Wait blocks until the index is ready or ctx ends.
func (x *Index) Wait(ctx context.Context) error {
	select {
	case <-x.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("recorder: %w: %w", ErrIndexLoading, context.Cause(ctx))
	}
}

// Sync waits until the index has applied every event of its subjects
// that its streams held when Sync was called, so a list made right after
// a session ended shows it ended (read your writes). For each stream it
// asks the server how far the live consumer has got and, once the
// consumer has nothing pending, whether the stream holds a message of the
// index's subjects the index has not applied (see unapplied); on ctx's
// end it returns ctx's error and the index answers with what it has.
func (x *Index) Sync(ctx context.Context) error {
	if err := x.Wait(ctx); err != nil {
		return err
	}
	if len(x.feeds) == 1 {
		return x.syncFeed(ctx, x.feeds[0])
	}
	// At once on both: while the events stream elects a leader, its wait
	// takes all of ctx, and the standby is where the news is.
	errs := make([]error, len(x.feeds))
	var wg sync.WaitGroup
	for i, f := range x.feeds {
		wg.Go(func() { errs[i] = x.syncFeed(ctx, f) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// syncFeed is Sync on one stream.
func (x *Index) syncFeed(ctx context.Context, f *feed) error {
	// The stream and its last message when the consumer first reported
	// nothing pending: Sync waits for no later message, so messages
	// stored meanwhile do not hold it up on a busy gateway.
	var st jetstream.Stream
	var upTo uint64
	for {
		x.mu.RLock()
		cons, last := f.cons, f.last
		x.mu.RUnlock()
		if cons == nil {
			// The live consumer is being made, just after the history.
			if !sleepCtx(ctx, 5*time.Millisecond) {
				return context.Cause(ctx)
			}
			continue
		}
		info, err := cons.Info(ctx)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			// Lost with its server (a memory consumer does not outlive a
			// restart): follow may not notice before its heartbeat is
			// missed, so it is told to start over now, and this waits
			// for the new consumer to catch up.
			x.restartFollow(f, cons)
			if !sleepCtx(ctx, 5*time.Millisecond) {
				return fmt.Errorf("recorder: index sync: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("recorder: index sync: %w", err)
		}
		if info.NumPending == 0 && last >= info.Delivered.Stream {
			if !x.asksStream(f) {
				return nil
			}
			if st == nil {
				if st, err = x.js.Stream(ctx, f.stream); err != nil {
					return fmt.Errorf("recorder: index sync: %w", err)
				}
				upTo = st.CachedInfo().State.LastSeq
			}
			behind, err := x.unapplied(ctx, f, st, last, upTo)
			switch {
			case err != nil && ctx.Err() != nil:
				return context.Cause(ctx)
			case err != nil:
				x.stopAsking(f, err)
				return nil
			case !behind:
				return nil
			}
		}
		select {
		case f.nudge <- struct{}{}: // follow takes what is pending now
		default:
		}
		if !sleepCtx(ctx, 5*time.Millisecond) {
			return context.Cause(ctx)
		}
	}
}

// unapplied reports whether st, f's stream, holds a message of the
// index's subjects after last, the sequence applied, and no later than
// upTo. The live consumer's count of pending messages cannot tell: the
// server adds a stored message to it only when the stream's signal
// reaches the consumer, which happens after the store is acknowledged, so
// for a moment after a store the consumer reports nothing pending while
// the stream holds a message it has not delivered (a list right after a
// session ended missed it: TestIndexPaging, rarely).
//
// The server answers within milliseconds; one that does not answer within
// unappliedWait is taken for a NATS user without the permission to read
// single messages (a refused request gets no answer), see stopAsking.
func (x *Index) unapplied(ctx context.Context, f *feed, st jetstream.Stream, last, upTo uint64) (bool, error) {
	if last >= upTo {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, unappliedWait)
	defer cancel()
	for _, subj := range f.subjects() {
		m, err := st.GetMsg(ctx, last+1, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if m.Sequence <= upTo {
			return true, nil
		}
	}
	return false, nil
}

// unappliedWait bounds unapplied's reads.
const unappliedWait = 250 * time.Millisecond

// unappliedOff is how long Sync trusts the consumer's count alone after
// unapplied failed.
const unappliedOff = time.Minute

// asksStream reports whether Sync asks f's stream (unapplied), which it
// does unless that failed within the last unappliedOff.
func (x *Index) asksStream(f *feed) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return time.Now().After(f.askAgain)
}

// stopAsking makes Sync trust the consumer's count alone for
// unappliedOff after err: a gateway whose NATS user predates the
// permission (deploy/nats/accounts.conf) or a stream between leaders
// still lists, at worst without a session that ended a moment ago.
func (x *Index) stopAsking(f *feed, err error) {
	x.mu.Lock()
	f.askAgain = time.Now().Add(unappliedOff)
	x.mu.Unlock()
	x.log.Warn("session index: cannot read single messages of the stream; for a minute lists go by the consumer's count and may miss a session that ended a moment ago (the stream may be electing a leader, or the gateway's NATS user lacks $JS.API.STREAM.MSG.GET on it, whose requests get no answer: docs/recorder.md, \"NATS users\")",
		"stream", f.stream, "err", err)
}

// Waits of List: for the stream's history to be read (a starting
// gateway), and for the index to catch up with the stream.
const (
	listLoadWait = 10 * time.Second
	listSyncWait = time.Second
)

// List is Query for a person or a client waiting on an answer: it waits
// up to 10 s for the stream's history to be read (then fails with
// ErrIndexLoading), and up to a second for the index to apply what the
// stream holds now, so a session that just ended is listed as ended; past
// that second it answers with what it has.
func (x *Index) List(ctx context.Context, q Query) (Page, error) {
	wctx, cancel := context.WithTimeout(ctx, listLoadWait)
	defer cancel()
	if err := x.Wait(wctx); err != nil {
		return Page{}, err
	}
	sctx, scancel := context.WithTimeout(ctx, listSyncWait)
	defer scancel()
	if err := x.Sync(sctx); err != nil && ctx.Err() == nil && sctx.Err() == nil {
		x.log.Warn("session index: list answered before catching up", "err", err)
	}
	return x.Query(q)
}

// Run reads the stream's history, then follows it until ctx ends. A read
// that fails is tried again after a pause; Run returns only with ctx.
func (x *Index) Run(ctx context.Context) error {
	rd := NewReader(x.js, x.stream, x.prefix)
	for {
		err := x.load(ctx, rd)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		x.log.Warn("session index: reading the stream's history failed; trying again", "stream", x.stream, "err", err)
		if !sleepCtx(ctx, 2*time.Second) {
			return context.Cause(ctx)
		}
	}
	x.readyOnce.Do(func() { close(x.ready) })
	// The standby has no history step: it holds only what failovers sent
	// there, and its follow starts from its first message.
	var wg sync.WaitGroup
	for _, f := range x.feeds[1:] {
		wg.Go(func() { x.keepFollowing(ctx, f) })
	}
	x.keepFollowing(ctx, x.feeds[0])
	wg.Wait()
	return context.Cause(ctx)
}

// keepFollowing follows f until ctx ends, with a new consumer each time
// one fails.
func (x *Index) keepFollowing(ctx context.Context, f *feed) {
	for {
		err := x.follow(ctx, f)
		if ctx.Err() != nil {
			return
		}
		x.log.Warn("session index: following the stream stopped; following again", "stream", f.stream, "err", err)
		// Short: a list may be waiting (Sync) for the new consumer.
		if !sleepCtx(ctx, followRetry) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// load reads the history: summaries, then the denials of sessions that
// have no end yet, each counted up to the last summary message read, where
// follow takes over.
func (x *Index) load(ctx context.Context, rd *Reader) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	filters := []string{
		x.prefix + ".*." + KindStart,
		x.prefix + ".*." + KindAuth,
		x.prefix + ".*." + KindEnd,
		x.prefix + ".*." + KindInterrupted,
	}
	// last bounds the history: the reads below skip what comes after
	// it, and follow starts right after it.
	st, err := x.js.Stream(ctx, x.stream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	// startSeq is where each session's first message is, for the
	// statements read below.
	startSeq := map[string]uint64{}
	// One consumer per subject: the server answers a consumer of one
	// wildcard filter far faster than one of several, when every session
	// has subjects of its own (BenchmarkIndexLoad at 100,000 sessions:
	// 36 s with the four filters in one consumer, 19 s this way). A session's events may so be applied out of order
	// (its end before its start), which applyEvent allows.
	for _, f := range filters {
		err := rd.readAfter(ctx, []string{f}, nil, 0, nil, func(data []byte, ev *Event, seq uint64) {
			if seq > last {
				return
			}
			x.mu.Lock()
			x.applyEvent(ev)
			x.mu.Unlock()
			if _, ok := startSeq[ev.Session]; !ok && ev.Type == TypeSessionStart {
				startSeq[ev.Session] = seq
			}
		})
		if err != nil {
			return err
		}
	}
	x.mu.Lock()
	type open struct {
		id, instance string
	}
	var (
		unended []open
		from    = last
	)
	for id, e := range x.byID {
		if e.flags&flagStarted != 0 && e.flags&flagEnded == 0 {
			unended = append(unended, open{id, e.instance})
			from = min(from, startSeq[id])
		}
	}
	x.mu.Unlock()
	// A session's statements are counted once per seq and in seq order,
	// so its own statement subject and the batches that carry its other
	// statements (batch.go) are read together, in stream order.
	count := func(session string) func(data []byte, ev *Event, seq uint64) {
		return func(data []byte, ev *Event, seq uint64) {
			if seq > last || ev.Type != TypeStatement || session != "" && ev.Session != session {
				return
			}
			x.mu.Lock()
			if e := x.byID[ev.Session]; e != nil && e.flags&flagEnded == 0 {
				x.applyEvent(ev)
			}
			x.mu.Unlock()
		}
	}
	if len(unended) > loadPerSession {
		// Many sessions without an end: one read of every statement
		// since the oldest of them beats a consumer per session.
		filters := []string{x.prefix + ".*." + KindStmt, x.prefix + ".*." + KindBatch}
		if err := rd.readAfter(ctx, filters, nil, max(from, 1)-1, nil, count("")); err != nil {
			return err
		}
	} else {
		for _, s := range unended {
			filters := []string{x.prefix + "." + s.id + "." + KindStmt}
			if ValidSessionID(s.instance) {
				filters = append(filters, x.prefix+"."+s.instance+"."+KindBatch)
			}
			if err := rd.readAfter(ctx, filters, nil, max(startSeq[s.id], 1)-1, nil, count(s.id)); err != nil {
				return err
			}
		}
	}
	x.mu.Lock()
	x.feeds[0].last = last
	x.mu.Unlock()
	return nil
}

// Bounds of follow's consumer: the pause before a new one when one
// ended, how long making it may take, the heartbeat the server sends
// while a wait for the next message finds nothing to deliver (two
// missed, and follow starts over with a new consumer), and how long one
// such wait lasts.
const (
	followRetry      = 250 * time.Millisecond
	followCreateWait = 5 * time.Second
	followHeartbeat  = 5 * time.Second
	followWait       = 30 * time.Second
)

// followPace is how long follow lets messages gather, once one has
// arrived, before it takes all of them in one request. Messages taken as
// they are stored were delivered, parsed and applied one by one right
// after each statement's acknowledgement, on the cores the statement's
// database and client needed next (docs/architecture.md, "The session
// index's pace"). Sync does not wait for the pace: it cuts it short.
const followPace = 50 * time.Millisecond

// follow applies the messages of f after f.last until ctx ends or its
// consumer fails; Run then makes a new one after f.last. It waits for the next
// message with a long pull request of one; once one has arrived, it
// takes what gathered meanwhile every followPace, without waiting, until
// a request finds nothing, and waits again.
//
// Its consumer is made here, with a new name each time, rather than by
// the library's ordered consumer: that one, when its server is lost, makes
// itself again under the same name, retrying without end and holding the
// lock its Info takes, so Sync, and the List waiting on it, blocked for as
// long as the retries went on, and for good once that name had been
// placed on the lost server (TestIndexListWhileLeaderLost).
func (x *Index) follow(ctx context.Context, f *feed) error {
	x.mu.RLock()
	from := f.last + 1
	x.mu.RUnlock()
	cctx, cancel := context.WithTimeout(ctx, followCreateWait)
	cons, err := x.js.CreateConsumer(cctx, f.stream, jetstream.ConsumerConfig{
		FilterSubjects: f.subjects(),
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
		// As an ordered consumer is: nothing to acknowledge, one
		// replica in memory, since a lost one is made again from f.last.
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: consumerIdle,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("recorder: session index consumer: %w", err)
	}
	defer x.deleteConsumer(f, cons)
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	x.mu.Lock()
	f.cons, f.stopFollow = cons, stop
	x.mu.Unlock()
	defer func() {
		// Sync waits for the next consumer rather than asking this one.
		x.mu.Lock()
		if f.cons == cons {
			f.cons, f.stopFollow = nil, nil
		}
		x.mu.Unlock()
	}()
	// delivered is the consumer's count of messages sent: with nothing
	// acknowledged, a message lost on the way is not sent again, so a
	// jump in it means one is missing, and follow starts over after the
	// last applied.
	var delivered uint64
	// take makes one request, a long wait for one message or a take of
	// what is there now, and applies what it brings.
	take := func(wait bool) (int, error) {
		var b jetstream.MessageBatch
		var err error
		if wait {
			wctx, cancel := context.WithTimeout(fctx, followWait)
			defer cancel()
			b, err = cons.Fetch(1, jetstream.FetchContext(wctx), jetstream.FetchHeartbeat(followHeartbeat))
		} else {
			b, err = cons.FetchNoWait(readBatch)
		}
		if err != nil {
			return 0, err
		}
		n := 0
		for msg := range b.Messages() {
			md, err := msg.Metadata()
			if err != nil {
				return n, err
			}
			if md.Sequence.Consumer != delivered+1 {
				return n, fmt.Errorf("message %d after %d", md.Sequence.Consumer, delivered)
			}
			delivered = md.Sequence.Consumer
			x.apply(f, msg.Subject(), msg.Data(), md.Sequence.Stream)
			n++
		}
		if n > 0 {
			x.takes.Add(1)
		}
		return n, b.Error()
	}
	wait := true
	for {
		if fctx.Err() != nil {
			return fmt.Errorf("recorder: session index consumer: %w", context.Cause(fctx))
		}
		n, err := take(wait)
		if err != nil {
			return fmt.Errorf("recorder: session index consumer: %w", err)
		}
		// Nothing came: wait for the next. A full take: more are waiting.
		if wait = n == 0; wait || n == readBatch {
			continue
		}
		t := time.NewTimer(x.pace)
		select {
		case <-t.C:
		case <-f.nudge:
		case <-fctx.Done():
		}
		t.Stop()
	}
}

// restartFollow makes follow give up cons, f's consumer, which its
// server no longer has, unless it has moved on already.
func (x *Index) restartFollow(f *feed, cons jetstream.Consumer) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if f.cons != cons {
		return
	}
	f.cons = nil
	if f.stopFollow != nil {
		f.stopFollow()
		f.stopFollow = nil
	}
}

// deleteConsumer removes a consumer follow is done with, in the
// background (its server may be the one lost, and Run goes on at once);
// consumerIdle removes it if this does not.
func (x *Index) deleteConsumer(f *feed, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = x.js.DeleteConsumer(ctx, f.stream, info.Name)
	}()
}

// loadPerSession is how many sessions without an end load reads the
// statements of one by one; past it, it reads all statements from the
// oldest one's start.
const loadPerSession = 32

// stmtPeek is what the index reads of a statement event.
type stmtPeek struct {
	Session   string `json:"session"`
	Seq       uint64 `json:"seq"`
	Statement *struct {
		Decision string `json:"decision"`
	} `json:"statement"`
}

// peekStmt reads a statement event's session, seq and whether it was
// denied. A body as the gateway writes it (canonical, docs/events.md) is
// scanned, not decoded: in JSON a quote inside a string is escaped, so the
// bytes "statement":{ and "decision":"deny" occur only as the members they
// name, and the statement's decision is the event's only one. Any other
// body is decoded. false: the body holds no statement (it is kept in
// chunks, or unreadable).
func peekStmt(data []byte) (stmt indexStmt, ok bool) {
	if session, seq, ok := peekSessionSeq(data); ok {
		if !bytes.Contains(data, []byte(`"statement":{`)) {
			return stmt, false
		}
		return indexStmt{session: string(session), seq: seq, denied: bytes.Contains(data, []byte(`"decision":"deny"`))}, true
	}
	var p stmtPeek
	if json.Unmarshal(data, &p) != nil || p.Statement == nil {
		return stmt, false
	}
	return indexStmt{session: p.Session, seq: p.Seq, denied: p.Statement.Decision == "deny"}, true
}

// indexStmt is what the index counts of a statement.
type indexStmt struct {
	session string
	seq     uint64
	denied  bool
}

// Apply applies one message of the events stream to the index: its
// subject, body and stream sequence. Messages at or before the last one
// applied are ignored, so a consumer restarted from an earlier point does
// no harm.
func (x *Index) Apply(subject string, data []byte, streamSeq uint64) {
	x.apply(x.feeds[0], subject, data, streamSeq)
}

// apply is Apply for a message of f's stream.
func (x *Index) apply(f *feed, subject string, data []byte, streamSeq uint64) {
	kind := subject[strings.LastIndexByte(subject, '.')+1:]
	if kind == KindBatch {
		x.applyBatch(f, subject, data, streamSeq)
		return
	}
	if kind == KindStmt {
		// A statement is read only for its seq and decision: statements
		// are most of the stream, and every gateway's index reads every
		// one, so they are not decoded.
		p, ok := peekStmt(data)
		x.mu.Lock()
		defer x.mu.Unlock()
		if ok && (streamSeq == 0 || streamSeq > f.last) {
			x.applyStmt(p)
		}
		f.last = max(f.last, streamSeq)
		return
	}
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		x.log.Warn("session index: unreadable event skipped", "stream", f.stream, "seq", streamSeq, "subject", subject, "err", err)
		x.skip(f, streamSeq)
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if streamSeq != 0 && streamSeq <= f.last {
		return
	}
	x.applyEvent(&ev)
	f.last = max(f.last, streamSeq)
}

// applyBatch counts the statements a batch carries (batch.go); the
// batch's other events are not what the index follows.
func (x *Index) applyBatch(f *feed, subject string, data []byte, streamSeq uint64) {
	raws, err := splitBatch(data)
	if err != nil {
		x.log.Warn("session index: unreadable batch skipped", "stream", f.stream, "seq", streamSeq, "subject", subject, "err", err)
		x.skip(f, streamSeq)
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if streamSeq != 0 && streamSeq <= f.last {
		return
	}
	for _, raw := range raws {
		if t, _, ok := canonicalHead(raw); ok && string(t) != TypeStatement {
			continue
		}
		if p, ok := peekStmt(raw); ok {
			x.applyStmt(p)
		}
	}
	f.last = max(f.last, streamSeq)
}

func (x *Index) skip(f *feed, streamSeq uint64) {
	x.mu.Lock()
	f.last = max(f.last, streamSeq)
	x.mu.Unlock()
}

// applyEvent folds one event into its session's entry (x.mu held).
func (x *Index) applyEvent(ev *Event) {
	if !ValidSessionID(ev.Session) {
		return
	}
	e := x.byID[ev.Session]
	if e == nil {
		e = &indexEntry{id: ev.Session}
		x.byID[ev.Session] = e
	}
	switch ev.Type {
	case TypeSessionStart:
		if e.flags&flagStarted != 0 {
			return // a republished start
		}
		e.flags |= flagStarted
		x.setMeta(e, ev)
		if ev.Start != nil {
			e.instance = x.intern(ev.Start.Instance)
		}
	case TypeAuthFailed:
		if e.flags&flagStarted == 0 && e.flags&flagAuthed == 0 {
			x.setMeta(e, ev)
		}
		e.flags |= flagAuthed
	case TypeSessionEnd:
		e.flags |= flagEnded
		e.end = ev.Time.UnixNano()
		if ev.End != nil {
			e.endReason = x.intern(ev.End.Reason)
			e.statements, e.denied = int32(ev.End.Statements), int32(ev.End.Denied)
		}
	case TypeSessionInterrupted:
		if ev.Interrupted != nil {
			e.note = &indexNote{n: *ev.Interrupted, by: ev.Gateway, noted: ev.Time.UnixNano()}
		}
	case TypeStatement:
		if ev.Statement != nil {
			x.countStmt(e, indexStmt{seq: ev.Seq, denied: ev.Statement.Decision == "deny"})
		}
	}
	if e.flags&(flagStarted|flagAuthed) != 0 && e.flags&flagListed == 0 {
		e.flags |= flagListed
		x.insert(e)
	}
}

// applyStmt counts a statement for its session (x.mu held); a session
// seen first through a statement is listed once its start arrives.
func (x *Index) applyStmt(st indexStmt) {
	if !ValidSessionID(st.session) {
		return
	}
	e := x.byID[st.session]
	if e == nil {
		e = &indexEntry{id: st.session}
		x.byID[st.session] = e
	}
	x.countStmt(e, st)
}

// countStmt adds a statement to an open session's counts, once per seq;
// an ended session's counts are its end's totals. A statement stored
// twice (a republish; the standby's copy, sourced into the events stream)
// counts once. One read after a later one of its session counts too, if
// it is within stmtWindow of the latest counted: with a standby the
// index reads two streams at once, and when the recorder goes back to the
// events stream after a failover, the events stream's next statements may
// be read before the standby's last ones (its follow takes every
// followPace). One further back is taken for a copy already counted.
func (x *Index) countStmt(e *indexEntry, st indexStmt) {
	if e.flags&flagEnded != 0 {
		return
	}
	if seq := uint32(st.seq); seq > e.lastStmt {
		// A shift of stmtWindow or more leaves only the new bit.
		e.seen = e.seen<<(seq-e.lastStmt) | 1
		e.lastStmt = seq
	} else if back := e.lastStmt - seq; back < stmtWindow && e.seen&(1<<back) == 0 {
		e.seen |= 1 << back
	} else {
		return
	}
	e.statements++
	if st.denied {
		e.denied++
	}
}

// stmtWindow is how many statement seqs up to a session's latest the
// index tells apart (indexEntry.seen): a session's statements are
// consecutive seqs but for a checkpoint now and then, and strict mode
// records one statement at a time, so 64 covers a followPace of
// statements at 0.8 ms or more each (a failover needs a cluster, whose
// acknowledgements alone take most of that). It is the width of seen.
const stmtWindow = 64

// setMeta sets who, where and when from the session's first event.
func (x *Index) setMeta(e *indexEntry, ev *Event) {
	m := ev.Meta
	e.client = m.Client
	m.Client = ""
	p := x.metas[m]
	if p == nil {
		for _, s := range []*string{&m.Agent, &m.Task, &m.Grant, &m.Approver, &m.Access, &m.Resource, &m.Protocol, &m.Gateway} {
			*s = x.intern(*s)
		}
		p = &indexMeta{Meta: m, taskLower: strings.ToLower(m.Task)}
		x.metas[m] = p
	}
	e.meta = p
	e.start = ev.Time.UnixNano()
	if e.flags&flagListed != 0 {
		// The start moved (an auth.failed came first): re-sort.
		i := slices.Index(x.order, e)
		x.order = slices.Delete(x.order, i, i+1)
		x.insert(e)
	}
}

func (x *Index) intern(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := x.strs[s]; ok {
		return v
	}
	x.strs[s] = s
	return s
}

func entryCmp(a *indexEntry, start int64, id string) int {
	if c := cmp.Compare(a.start, start); c != 0 {
		return c
	}
	return strings.Compare(a.id, id)
}

// insert puts e in order: sessions mostly arrive newest last, so this is
// usually an append.
func (x *Index) insert(e *indexEntry) {
	n := len(x.order)
	if n == 0 || entryCmp(x.order[n-1], e.start, e.id) < 0 {
		x.order = append(x.order, e)
		return
	}
	i, _ := slices.BinarySearchFunc(x.order, e, func(a, b *indexEntry) int { return entryCmp(a, b.start, b.id) })
	x.order = slices.Insert(x.order, i, e)
}

// summary is the Summary an entry stands for.
func (e *indexEntry) summary() Summary {
	s := Summary{Session: e.id, Start: time.Unix(0, e.start).UTC(), Instance: e.instance,
		Statements: int(e.statements), Denied: int(e.denied), EndReason: e.endReason}
	if e.meta != nil {
		s.Meta = e.meta.Meta
	}
	s.Client = e.client
	if e.note != nil {
		n := e.note.n
		s.Interrupted, s.InterruptedBy = &n, e.note.by
	}
	s.Status = e.status()
	switch {
	case e.flags&flagEnded != 0:
		t := time.Unix(0, e.end).UTC()
		s.End = &t
	case s.Status == StatusInterrupted:
		interrupted(&s, time.Unix(0, e.note.noted).UTC())
	}
	return s
}

func (e *indexEntry) status() string {
	return statusOf(e.flags&flagStarted != 0, e.flags&flagAuthed != 0, e.flags&flagEnded != 0, e.note != nil)
}

// Query is a filtered, paged session list: newest first.
type Query struct {
	// Agent, Resource and Grant, when set, must equal the session's.
	Agent, Resource, Grant string
	// Task, when set, must be in the session's task text (case folded).
	Task string
	// State, when set, is one of StatusOpen, StatusEnded,
	// StatusInterrupted, StatusAuthFailed (or StateAuthFailedAlias).
	State string
	// Since and Until bound the session's start: Since <= start < Until.
	Since, Until time.Time
	// Denied keeps only sessions with at least one denied statement.
	Denied bool
	// Cursor continues a list after the last session of a previous page
	// (Page.Next); the sessions that started since do not shift it.
	Cursor string
	// Limit is the page size; 0 lists every match.
	Limit int
}

// Page is one page of a Query.
type Page struct {
	Sessions []Summary
	// Next is the cursor of the next page; empty on the last page.
	Next string
}

// ValidState reports whether s can be a Query.State.
func ValidState(s string) bool {
	switch s {
	case "", StatusOpen, StatusEnded, StatusInterrupted, StatusAuthFailed, StateAuthFailedAlias:
		return true
	}
	return false
}

// Query answers q from memory; ErrIndexLoading until the history is read.
func (x *Index) Query(q Query) (Page, error) {
	select {
	case <-x.ready:
	default:
		return Page{}, ErrIndexLoading
	}
	return x.query(q)
}

func (x *Index) query(q Query) (Page, error) {
	if !ValidState(q.State) {
		return Page{}, fmt.Errorf("recorder: state %q: want open, ended, interrupted or auth_failed", q.State)
	}
	if q.State == StateAuthFailedAlias {
		q.State = StatusAuthFailed
	}
	task := strings.ToLower(q.Task)
	x.mu.RLock()
	defer x.mu.RUnlock()
	// hi: one past the newest session that may be listed.
	hi := len(x.order)
	if q.Cursor != "" {
		start, id, err := decodeCursor(q.Cursor)
		if err != nil {
			return Page{}, err
		}
		hi, _ = slices.BinarySearchFunc(x.order, id, func(a *indexEntry, id string) int { return entryCmp(a, start, id) })
	}
	if !q.Until.IsZero() {
		until := q.Until.UnixNano()
		u, _ := slices.BinarySearchFunc(x.order, until, func(a *indexEntry, t int64) int { return cmp.Compare(a.start, t) })
		hi = min(hi, u)
	}
	since := int64(0)
	if !q.Since.IsZero() {
		since = q.Since.UnixNano()
	}
	var (
		page Page
		last *indexEntry
	)
	for i := hi - 1; i >= 0; i-- {
		e := x.order[i]
		if e.start < since {
			break
		}
		if !e.match(&q, task) {
			continue
		}
		if q.Limit > 0 && len(page.Sessions) == q.Limit {
			// One more matches: there is a next page.
			page.Next = encodeCursor(last.start, last.id)
			break
		}
		page.Sessions = append(page.Sessions, e.summary())
		last = e
	}
	return page, nil
}

func (e *indexEntry) match(q *Query, task string) bool {
	m := e.meta
	if m == nil {
		m = &indexMeta{}
	}
	switch {
	case q.Agent != "" && m.Agent != q.Agent,
		q.Resource != "" && m.Resource != q.Resource,
		q.Grant != "" && m.Grant != q.Grant,
		q.Denied && e.denied == 0,
		q.State != "" && e.status() != q.State:
		return false
	case task != "" && !strings.Contains(m.taskLower, task):
		return false
	}
	return true
}

// Get returns one session's summary, if the index has it listed.
func (x *Index) Get(id string) (Summary, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.byID[id]
	if e == nil || e.flags&flagListed == 0 {
		return Summary{}, false
	}
	return e.summary(), true
}

// Len is how many sessions the index lists.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.order)
}

// A cursor is the start and id of the last session of a page: the next
// page begins with the session before it in (start, id) order, wherever
// sessions that arrived since have been put.
func encodeCursor(start int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(start, 36) + "." + id))
}

func decodeCursor(c string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", fmt.Errorf("recorder: %w %q", ErrBadCursor, c)
	}
	t, id, ok := bytes.Cut(b, []byte("."))
	start, err := strconv.ParseInt(string(t), 36, 64)
	if !ok || err != nil || !ValidSessionID(string(id)) {
		return 0, "", fmt.Errorf("recorder: %w %q", ErrBadCursor, c)
	}
	return start, string(id), nil
}
