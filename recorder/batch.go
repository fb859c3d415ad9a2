package recorder

import (
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Group commit. Every event is a message of its own when the gateway is
// quiet; when it is busy, one publisher per gateway process puts the
// events of all its sessions that arrive while a publish is in flight into
// one message, <prefix>.<instance>.batch, so the stream stores, and
// acknowledges, many statements at the cost of one. A batch's body is a
// JSON array of the events' stored bodies, each exactly as it would have
// been stored alone (docs/events.md, "Batches"):
//
//	[{"v":5,"type":"statement",...},{"v":5,"type":"statement",...}]
//
// What stays as it was:
//
//   - Strict mode: a Commit returns when the message carrying the event is
//     acknowledged, as before; the batch's acknowledgement is each of its
//     events'.
//   - Chains and signatures are per session and per event, sealed before
//     an event is batched: a batch adds no hash and no signature, and the
//     verifier sees the same events whatever message carried them.
//   - Order: everything a gateway publishes for the first time goes
//     through the publisher in the order appended, so the stream holds a
//     session's events in seq order.
//   - A session's start, end, refused authentication and interruption note
//     are always messages of their own on the session's subjects, so the
//     session list and the index read them as before, and a session's
//     batched events lie between its start and its end in the stream:
//     readers look for them there, on the batch subject of the instance its
//     start names.
//   - A republish (a Commit retrying an event not acknowledged in time) and
//     anything sent to the failover standby goes alone, with the event's
//     own Nats-Msg-Id, as before. A batch that was stored but whose
//     acknowledgement was lost can so leave a second copy of an event;
//     readers keep one of identical copies, as they do for failover.
//   - Large values (chunks) and the events that wait for them are not
//     batched.
const (
	// KindBatch is the subject token of batch messages:
	// <prefix>.<instance>.batch.
	KindBatch = "batch"
	// maxBatchEvents bounds the events of one batch.
	maxBatchEvents = 1024
)

// batchable reports whether events of type t may share a message.
func batchable(t string) bool {
	switch t {
	case TypeSessionStart, TypeSessionEnd, TypeAuthFailed, TypeSessionInterrupted:
		return false
	}
	return true
}

// batcher is a gateway's group-commit publisher.
type batcher struct {
	r       *Recorder
	subject string
	idBase  string

	mu     sync.Mutex
	busy   bool // a flight is out, or being sent
	closed bool
	queue  []*batchItem
	n      uint64 // batches sent, for their Nats-Msg-Ids

	// flights hands the flight an idle publisher's caller sent to the
	// goroutine that waits for its acknowledgements.
	flights chan []flightMsg
	// sent counts the messages sent and the events they carried.
	sentMsgs, sentEvents atomic.Uint64
	stop                 chan struct{}
	done                 chan struct{}
	timer                *time.Timer
}

// batchItem is one event waiting for, or in, a flight. Its channels carry
// the outcome of the message that carried it, as a publish future's would.
type batchItem struct {
	msg  *nats.Msg
	lone bool
	ok   chan *jetstream.PubAck
	errc chan error
}

// flightMsg is one message of a flight: a batch, or one event alone.
type flightMsg struct {
	items []*batchItem
	fut   jetstream.PubAckFuture
	err   error // refused by the client on the spot
}

func newBatcher(r *Recorder) *batcher {
	b := &batcher{
		r:       r,
		subject: r.prefix + "." + r.instance + "." + KindBatch,
		idBase:  r.instance + "-b",
		flights: make(chan []flightMsg, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		timer:   time.NewTimer(time.Hour),
	}
	b.timer.Stop()
	go b.run()
	return b
}

// submit hands msg, an event's first publish, to the publisher: sent at
// once when nothing is in flight, else queued for the next flight. It
// returns the channels the outcome will come on, or err when the client
// refused the message on the spot. handled is false once the publisher is
// closed: the caller publishes msg itself.
func (b *batcher) submit(msg *nats.Msg, lone bool, stall jetstream.PublishOpt) (ok <-chan *jetstream.PubAck, errc <-chan error, err error, handled bool) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, nil, nil, false
	}
	it := &batchItem{msg: msg, lone: lone, ok: make(chan *jetstream.PubAck, 1), errc: make(chan error, 1)}
	if b.busy {
		b.queue = append(b.queue, it)
		b.mu.Unlock()
		return it.ok, it.errc, nil, true
	}
	b.busy = true
	b.mu.Unlock()
	fut, err := b.r.js.PublishMsgAsync(msg, stall, noRetry)
	if err != nil {
		// The goroutine still takes the (empty) flight: it sends what
		// others queued meanwhile, or marks the publisher idle.
		b.flights <- nil
		return nil, nil, err, true
	}
	b.sentMsgs.Add(1)
	b.sentEvents.Add(1)
	b.flights <- []flightMsg{{items: []*batchItem{it}, fut: fut}}
	return it.ok, it.errc, nil, true
}

// GroupCommitStats returns how many messages the group-commit publisher
// has sent and how many events they carried (both 0 without group
// commit): their ratio is the average batch.
func (r *Recorder) GroupCommitStats() (messages, events uint64) {
	if r.batch == nil {
		return 0, 0
	}
	return r.batch.sentMsgs.Load(), r.batch.sentEvents.Load()
}

// close stops the publisher once what it holds is sent; later events are
// published by their logs directly.
func (b *batcher) close() {
	b.mu.Lock()
	was := b.closed
	b.closed = true
	b.mu.Unlock()
	if !was {
		close(b.stop)
	}
	<-b.done
}

func (b *batcher) run() {
	defer close(b.done)
	for {
		var f []flightMsg
		select {
		case f = <-b.flights:
		case <-b.stop:
			b.mu.Lock()
			busy := b.busy
			b.mu.Unlock()
			if !busy {
				return
			}
			// A caller found the publisher idle just before it closed:
			// its flight is on the way.
			f = <-b.flights
		}
		for {
			b.await(f)
			b.mu.Lock()
			q := b.queue
			b.queue = nil
			if len(q) == 0 {
				b.busy = false
				b.mu.Unlock()
				break
			}
			b.mu.Unlock()
			f = b.send(q)
		}
	}
}

// await passes each message's outcome to its events. It waits at most
// the recorder's retryAfter, and not past a reconnect: the events of a
// message not answered by then stay unsettled, and their sessions'
// Commits publish them again (alone) as they would any event whose
// acknowledgement was lost.
func (b *batcher) await(f []flightMsg) {
	if len(f) == 0 {
		return
	}
	reconnected := *b.r.reconnected.Load()
	b.timer.Reset(b.r.retryAfter)
	defer b.timer.Stop()
	for _, m := range f {
		if m.err != nil {
			for _, it := range m.items {
				it.errc <- m.err
			}
			continue
		}
		select {
		case pa := <-m.fut.Ok():
			for _, it := range m.items {
				it.ok <- pa
			}
		case err := <-m.fut.Err():
			for _, it := range m.items {
				it.errc <- err
			}
		case <-b.timer.C:
			return
		case <-reconnected:
			return
		}
	}
}

// send publishes the queued events in order: runs of batchable events as
// batches (one event alone as itself), the others alone.
func (b *batcher) send(q []*batchItem) []flightMsg {
	limit := max(b.r.messageLimit(), minPayload) - headerReserve
	var f []flightMsg
	for i := 0; i < len(q); {
		j, size := i+1, 2+len(q[i].msg.Data)
		if !q[i].lone {
			for j < len(q) && !q[j].lone && j-i < maxBatchEvents && size+1+len(q[j].msg.Data) <= limit {
				size += 1 + len(q[j].msg.Data)
				j++
			}
		}
		items := q[i:j:j]
		msg := items[0].msg
		if len(items) > 1 {
			msg = b.batchMsg(items, size)
		}
		fut, err := b.r.js.PublishMsgAsync(msg, commitStall, noRetry)
		f = append(f, flightMsg{items: items, fut: fut, err: err})
		if err == nil {
			b.sentMsgs.Add(1)
			b.sentEvents.Add(uint64(len(items)))
		}
		i = j
	}
	return f
}

func (b *batcher) batchMsg(items []*batchItem, size int) *nats.Msg {
	body := make([]byte, 0, size)
	body = append(body, '[')
	for i, it := range items {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, it.msg.Data...)
	}
	body = append(body, ']')
	b.n++
	return &nats.Msg{
		Subject: b.subject,
		Data:    body,
		Header:  nats.Header{jetstream.MsgIDHeader: []string{b.idBase + strconv.FormatUint(b.n, 10)}},
	}
}

// errBatch is a batch message whose body is not a JSON array of objects.
var errBatch = errors.New("not a batch of events")

// splitBatch returns the stored bodies of a batch's events, exactly as
// they are in it (slices of data, not copies). It checks the array's
// structure only: strings (with their escapes) and nesting, so that each
// element is one whole JSON object; what is inside an event is for the
// event's reader to judge, as for an event stored alone.
func splitBatch(data []byte) ([]json.RawMessage, error) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, errBatch
	}
	var out []json.RawMessage
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		if skipSpace(data, i+1) != len(data) {
			return nil, errBatch
		}
		return out, nil
	}
	for {
		if i >= len(data) || data[i] != '{' {
			return nil, errBatch
		}
		end, ok := objectEnd(data, i)
		if !ok {
			return nil, errBatch
		}
		out = append(out, json.RawMessage(data[i:end:end]))
		i = skipSpace(data, end)
		if i >= len(data) {
			return nil, errBatch
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case ']':
			if skipSpace(data, i+1) != len(data) {
				return nil, errBatch
			}
			return out, nil
		default:
			return nil, errBatch
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// objectEnd returns the index just past the JSON object that starts at
// b[i] ('{'), following strings and nesting.
func objectEnd(b []byte, i int) (int, bool) {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if i >= len(b) {
				return 0, false
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				if b[i] != '}' {
					return 0, false
				}
				return i + 1, true
			}
		}
	}
	return 0, false
}

// isBatch reports whether subject is a batch message's.
func isBatch(subject string) bool {
	return len(subject) > len(KindBatch) && subject[len(subject)-len(KindBatch)-1] == '.' &&
		subject[len(subject)-len(KindBatch):] == KindBatch
}

// peekType reads the type of an event stored as the gateway writes it
// ({"v":N,"type":"T",...}); "" for any other body.
func peekType(b []byte) string {
	typ, _, _ := canonicalHead(b)
	return string(typ)
}
