package recorder

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"runtime"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Large values (format v4). A NATS server refuses a message larger than
// its max_payload (1 MiB unless the operator set it), and a stream one
// larger than its max_msg_size, yet a statement may be 64 MiB and more.
// So a statement's text longer than the event keeps inline, its parameters
// when their encoding is long, and as a last resort the whole body of an
// event that is still too large, are stored as chunk messages on
// <prefix>.<session>.chunk in the same stream; the event carries a Ref
// (size and SHA-256) in their place, which its hash, and so the chain and
// the signatures, cover. Everything is decided before the event is sealed,
// so an event that takes a seq can always be published.
//
// A chunk message's body is a piece of the value's bytes, as they are
// (statement text as the client sent it; the JSON of parameters or of a
// body), and its headers say which value and which piece:
//
//	Airlock-Blob: <hex SHA-256 of the whole value>
//	Airlock-Part: <i>/<n>          (1-based)
//	Airlock-Seq:  <seq of the event that references it>
//
// The headers are not covered by any hash; they only help to find and
// order the pieces, and a wrong one makes the pieces hash to something
// else, which verification reports.
const (
	// KindChunk is the subject token of chunk messages.
	KindChunk = "chunk"

	HeaderBlob = "Airlock-Blob"
	HeaderPart = "Airlock-Part"
	HeaderSeq  = "Airlock-Seq"

	// minPayload is the smallest message limit the recorder works with:
	// below it an event's envelope, meta and references may not fit.
	minPayload = 64 << 10
	// headerReserve is kept free in every message for its NATS headers
	// (Nats-Msg-Id, the first event's expectations, the chunk headers),
	// which count toward max_payload.
	headerReserve = 1 << 10
	// maxInline is the longest statement text, or parameter encoding,
	// kept inside an event: longer ones go to chunks, so that an event
	// stays small whatever the server's limit.
	maxInline = 64 << 10
	// InlineText is the longest statement text that stays inside its
	// event whatever the server's limit: the event is encoded from it
	// during Append, and the recorder keeps no reference to it after.
	// A caller may hand Append such a text as a view of a buffer it
	// reuses once Append returns; a longer one may go to chunks, which
	// refer to it until they are published.
	InlineText = (minPayload - headerReserve) / 8
	// textPrefix is how much of an externalized text the event keeps in
	// Statement.Text, so that a reader without the chunks (the nats CLI)
	// sees how the statement begins.
	textPrefix = 1 << 10
	// chunkWindow bounds the bytes of one session's chunks published and
	// not yet acknowledged, so a very large statement is not queued whole
	// in the NATS client and server at once.
	chunkWindow = 2 << 20
	// sealOverhead is what sealing adds to the canonical encoding:
	// `,"hash":"<64 hex>"` and `,"sig":"<88 base64>"`.
	sealOverhead = 9 + 64 + 1 + 8 + 88 + 1
)

// blob is a value stored in chunks: ref stands for it in the event.
type blob struct {
	ref  *Ref
	data []byte
}

// bytesOf views s as bytes without copying. The bytes are only read (hashed
// and handed to the NATS client, which copies them into its buffer), never
// written: a statement's text can be hundreds of megabytes, and a copy
// would double what the gateway holds for it.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{ref: &Ref{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}, data: data}
}

// PrefixOf is the first bytes of a text, at most n, not ending inside a
// UTF-8 sequence: what an event keeps of a text stored elsewhere.
func PrefixOf(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > n-utf8.UTFMax && i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// externalize moves a statement's long text and long parameters out of ev
// into blobs, before ev is encoded. The statement is copied, not changed:
// it belongs to the caller.
func (l *Log) externalize(ev *Event) []blob {
	st := ev.Statement
	long := len(st.Text) > l.inline && st.TextRef == nil
	paramsLong := len(st.Params) > 0 && paramsSize(st.Params) > l.inline
	if !long && !paramsLong {
		return nil
	}
	c := *st
	ev.Statement = &c
	var out []blob
	if long {
		b := newBlob(bytesOf(c.Text))
		c.TextRef, c.Text = b.ref, PrefixOf(c.Text, textPrefix)
		out = append(out, b)
	}
	if paramsLong {
		e := encoder{b: make([]byte, 0, paramsSize(c.Params))}
		e.params(c.Params)
		b := newBlob(e.b)
		c.ParamsRef, c.Params = b.ref, nil
		out = append(out, b)
	}
	return out
}

// paramsSize is about the length of params' encoding (exact for plain
// text values).
func paramsSize(ps []Param) int {
	n := 2
	for i := range ps {
		n += len(ps[i].Value) + len(ps[i].Type) + 64
	}
	return n
}

// bodyBlob moves ev's whole body into a blob: for an event still larger
// than a message may be with its statement's text and parameters in
// chunks (a statement naming thousands of tables, the outcomes of a
// message of thousands of statements).
func bodyBlob(ev *Event) blob {
	e := encoder{b: make([]byte, 0, 4096)}
	e.open()
	e.body(ev)
	e.close()
	b := newBlob(e.b)
	ev.Statement, ev.Result, ev.Results, ev.Auth, ev.End, ev.Data = nil, nil, nil, nil, nil, nil
	ev.BodyRef = b.ref
	return b
}

// chunkEntries cuts a blob of the event with seq into held outbox entries
// of at most l.maxEvent bytes each.
func (l *Log) chunkEntries(seq uint64, b blob, k *int) []*entry {
	size := l.maxEvent
	n := (len(b.data) + size - 1) / size
	if n == 0 {
		n = 1 // an empty value is one empty chunk
	}
	out := make([]*entry, 0, n)
	for i := range n {
		piece := b.data[min(i*size, len(b.data)):min((i+1)*size, len(b.data))]
		*k++
		hdr := nats.Header{
			jetstream.MsgIDHeader: []string{l.session + "-" + strconv.FormatUint(seq, 10) + "-c" + strconv.Itoa(*k)},
			HeaderBlob:            []string{b.ref.SHA256},
			HeaderPart:            []string{strconv.Itoa(i+1) + "/" + strconv.Itoa(n)},
			HeaderSeq:             []string{strconv.FormatUint(seq, 10)},
		}
		out = append(out, &entry{
			seq: seq, chunk: true, held: true,
			msg:  &nats.Msg{Subject: l.chunkSubject, Data: piece, Header: hdr},
			base: l.chunkSubject,
		})
	}
	return out
}

// pumpLocked publishes held entries in outbox order, as far as allowed: a
// chunk while the session's chunk bytes in flight stay within chunkWindow,
// an event once every chunk before it is acknowledged. So the stream never
// holds an event whose chunks it may not hold (a crash in between leaves
// unreferenced chunks, not a reference to nothing), and events are still
// published in seq order.
func (l *Log) pumpLocked(stall jetstream.PublishOpt) {
	if l.held == 0 {
		return
	}
	chunksAcked := true
	for _, e := range l.outbox {
		if !e.held {
			if e.chunk && !e.acked {
				chunksAcked = false
			}
			continue
		}
		if e.chunk {
			if l.inflight > 0 && l.inflight+len(e.msg.Data) > chunkWindow {
				return
			}
			l.inflight += len(e.msg.Data)
			chunksAcked = false
		} else if !chunksAcked {
			return
		}
		e.held = false
		l.held--
		// Held entries go to the stream events go to now (failover.go).
		if active := l.r.active.Load(); e.lane != active {
			l.moveLocked(e, active, time.Now())
		}
		l.publishLocked(e, stall)
		if e.chunk {
			l.chunkPublishedLocked(len(e.msg.Data))
		}
		if l.broken != nil {
			return
		}
	}
}

// collectEvery is how many bytes of chunks the recorder publishes between
// garbage collections it asks for. An embedded NATS server copies each
// message it takes twice on its way to the store, in the gateway's own
// heap; left to the pacer, which lets the heap grow by what is live (and
// a large statement being recorded is live), that garbage would double
// what the statement costs before the next collection. Collections this
// far apart cost a few milliseconds each (the statement's bytes hold no
// pointers, so marking does not scan them).
const collectEvery = chunkWindow

// chunkPublishedLocked counts the bytes of a chunk just published, for
// collect.
func (l *Log) chunkPublishedLocked(n int) {
	l.r.chunkBytes.Add(int64(n))
}

// collect runs a garbage collection when collectEvery bytes of chunks were
// published since the last one it ran. It is called outside any lock.
func (r *Recorder) collect() {
	done := r.chunkBytes.Load()
	if last := r.collectedAt.Load(); done-last >= collectEvery && r.collectedAt.CompareAndSwap(last, done) {
		runtime.GC()
	}
}

// oversize is the error of a publish that can never succeed: the message is
// larger than the server or the stream takes. The recorder sizes every
// message to fit, so this means the limit shrank after the session
// started (a reconnect to a server with a smaller max_payload).
func (l *Log) oversize(e *entry, err error) error {
	return fmt.Errorf("event %d: a message of %d bytes is refused as too large (%w); the limit the session started with was %d bytes: the NATS servers' max_payload or the stream's max_msg_size must not shrink while the gateway runs",
		e.seq, len(e.msg.Data), err, l.maxEvent+headerReserve)
}
