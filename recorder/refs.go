package recorder

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/airlockhq/airlock/internal/plural"
)

// Chunk is one chunk message as stored: a piece of a value an event
// references (see chunk.go). Blob, Part, Parts and Seq are what its
// headers say, which no hash covers; Data is its body.
type Chunk struct {
	// Blob is the hex SHA-256 of the whole value (Airlock-Blob).
	Blob string `json:"blob"`
	// Part is the piece's place, 1..Parts (Airlock-Part "Part/Parts").
	Part  int `json:"part"`
	Parts int `json:"parts"`
	// Seq is the event that references it (Airlock-Seq).
	Seq  uint64 `json:"seq,omitempty"`
	Data []byte `json:"data"`
}

// chunkOf reads a chunk message's headers; false when they do not name a
// piece of a value.
func chunkOf(h nats.Header, data []byte) (Chunk, bool) {
	c := Chunk{Blob: h.Get(HeaderBlob), Data: data}
	if len(c.Blob) != 2*sha256.Size {
		return c, false
	}
	if _, err := hex.DecodeString(c.Blob); err != nil {
		return c, false
	}
	i, n, ok := strings.Cut(h.Get(HeaderPart), "/")
	if !ok {
		return c, false
	}
	var err1, err2 error
	c.Part, err1 = strconv.Atoi(i)
	c.Parts, err2 = strconv.Atoi(n)
	if err1 != nil || err2 != nil || c.Part < 1 || c.Part > c.Parts {
		return c, false
	}
	c.Seq, _ = strconv.ParseUint(h.Get(HeaderSeq), 10, 64)
	return c, true
}

// dedupChunks drops byte-identical copies (a republish after the stream's
// duplicate window, or the same value referenced twice), keeping order.
func dedupChunks(cs []Chunk) []Chunk {
	type key struct {
		blob        string
		part, parts int
	}
	seen := map[key][][]byte{}
	out := cs[:0]
	for _, c := range cs {
		k := key{c.Blob, c.Part, c.Parts}
		dup := false
		for _, d := range seen[k] {
			if bytes.Equal(d, c.Data) {
				dup = true
				break
			}
		}
		if !dup {
			seen[k] = append(seen[k], c.Data)
			out = append(out, c)
		}
	}
	return out
}

// chunkIndex finds the chunks of a value by its SHA-256.
type chunkIndex map[string][]*Chunk

// resolveAll puts the values kept in chunks back into evs, for reading. A
// value whose chunks are missing or altered stays as stored (a text's
// first bytes and its reference); verification says what is wrong.
func resolveAll(evs []Event, chunks []Chunk) {
	if len(chunks) == 0 {
		return
	}
	idx := indexChunks(chunks)
	for i := range evs {
		_, _ = resolve(&evs[i], idx)
	}
}

func indexChunks(cs []Chunk) chunkIndex {
	idx := chunkIndex{}
	for i := range cs {
		idx[cs[i].Blob] = append(idx[cs[i].Blob], &cs[i])
	}
	return idx
}

// assemble puts a referenced value together from its chunks and checks it
// against the reference. Its errors say what is wrong with the record.
func (idx chunkIndex) assemble(ref *Ref) ([]byte, error) {
	cs := idx[ref.SHA256]
	if len(cs) == 0 {
		return nil, errors.New("no chunk of it is stored: chunks were removed")
	}
	n := cs[0].Parts
	parts := make([]*Chunk, n+1)
	for _, c := range cs {
		if c.Parts != n {
			return nil, fmt.Errorf("its chunks disagree on the number of parts (%d and %d): chunks were altered", n, c.Parts)
		}
		if p := parts[c.Part]; p != nil && !bytes.Equal(p.Data, c.Data) {
			return nil, fmt.Errorf("part %d of %d is stored twice with different content: a chunk was altered or added", c.Part, n)
		}
		parts[c.Part] = c
	}
	size := 0
	for i := 1; i <= n; i++ {
		if parts[i] == nil {
			return nil, fmt.Errorf("part %d of %d is missing: a chunk was removed", i, n)
		}
		size += len(parts[i].Data)
	}
	if int64(size) != ref.Size {
		return nil, fmt.Errorf("its %s hold %d bytes, not %d: a chunk was altered", plural.N(n, "chunk"), size, ref.Size)
	}
	out := make([]byte, 0, size)
	for i := 1; i <= n; i++ {
		out = append(out, parts[i].Data...)
	}
	if sum := sha256.Sum256(out); hex.EncodeToString(sum[:]) != ref.SHA256 {
		return nil, fmt.Errorf("its %s hash to %s, not to the reference: a chunk was altered", plural.N(n, "chunk"), hex.EncodeToString(sum[:]))
	}
	return out, nil
}

// eventBody is what a BodyRef stands for: the body members of an event,
// as bodyBlob writes them.
type eventBody struct {
	Statement *Statement   `json:"statement,omitempty"`
	Result    *Result      `json:"result,omitempty"`
	Results   []Result     `json:"results,omitempty"`
	Auth      *AuthFailure `json:"auth,omitempty"`
	End       *End         `json:"end,omitempty"`
	Data      *Data        `json:"data,omitempty"`
}

// resolve puts the values ev references back in place: its body, then its
// statement's text and parameters. The references stay, so a reader can
// tell a value came from chunks. It stops at the first value it cannot
// resolve and says which one and why; what says which value it was.
func resolve(ev *Event, idx chunkIndex) (what string, err error) {
	if r := ev.BodyRef; r != nil {
		data, err := idx.assemble(r)
		if err != nil {
			return refName("body", r), err
		}
		var b eventBody
		if err := json.Unmarshal(data, &b); err != nil {
			return refName("body", r), fmt.Errorf("it is not a readable event body: %w", err)
		}
		ev.Statement, ev.Result, ev.Results, ev.Auth, ev.End, ev.Data = b.Statement, b.Result, b.Results, b.Auth, b.End, b.Data
	}
	st := ev.Statement
	if st == nil {
		return "", nil
	}
	if r := st.TextRef; r != nil && !r.Omitted {
		data, err := idx.assemble(r)
		if err != nil {
			return refName("statement text", r), err
		}
		st.Text = string(data)
	}
	if r := st.ParamsRef; r != nil {
		data, err := idx.assemble(r)
		if err != nil {
			return refName("statement parameters", r), err
		}
		var ps []Param
		if err := json.Unmarshal(data, &ps); err != nil {
			return refName("statement parameters", r), fmt.Errorf("they are not readable parameters: %w", err)
		}
		st.Params = ps
	}
	return "", nil
}

func refName(what string, r *Ref) string {
	return fmt.Sprintf("its %s (%d bytes, sha256 %.12s…)", what, r.Size, r.SHA256)
}

// hasRefs reports whether ev references values stored in chunks.
func hasRefs(ev *Event) bool {
	return ev.BodyRef != nil || ev.Statement != nil && (ev.Statement.TextRef != nil && !ev.Statement.TextRef.Omitted || ev.Statement.ParamsRef != nil)
}

// checkRefs extends a report on evs, the events as stored, with the check
// of every value they store in chunks: each must be there, whole and
// unaltered. A value that fails is reported like an altered event, at
// its event's seq; only events before a failure the report already names
// are checked.
func checkRefs(r Report, evs []Event, chunks []Chunk) Report {
	if r.Status == VerifyFailed && r.FirstBad == 0 {
		return r
	}
	var idx chunkIndex
	for i := range evs {
		ev := &evs[i]
		if r.Status == VerifyFailed && ev.Seq >= r.FirstBad {
			break
		}
		if !hasRefs(ev) {
			continue
		}
		if idx == nil {
			idx = indexChunks(chunks)
		}
		c := *ev
		if c.Statement != nil {
			st := *c.Statement
			c.Statement = &st
		}
		if what, err := resolve(&c, idx); err != nil {
			r.Status, r.FirstBad = VerifyFailed, ev.Seq
			r.Problem = fmt.Sprintf("seq %d (%s): %s is stored in chunks, and %v", ev.Seq, ev.Type, what, err)
			r.Unauthenticated = 0
			return r
		}
	}
	return r
}

// VerifyStored is VerifyRaw over a session as stored (Reader.Stored, an
// export file): its event bodies and the chunks of the values they
// reference, each of which must be present and unaltered.
func VerifyStored(session string, raws []json.RawMessage, chunks []Chunk, keys Keyring) Report {
	r, _ := VerifyStoredEvents(session, raws, chunks, keys)
	return r
}

// VerifyStoredEvents is VerifyStored, also returning the events decoded
// for reading (as Stored.Decoded returns them), from the one decoding
// verification does: the console shows a session and its verification
// without reading it twice.
func VerifyStoredEvents(session string, raws []json.RawMessage, chunks []Chunk, keys Keyring) (Report, []Event) {
	evs, f := decodeStored(raws)
	r := checkRefs(verify(session, evs, f, keys), evs, chunks)
	// Values are put back in place after verification, which checks
	// the stored form.
	resolveAll(evs, chunks)
	return r, evs
}
