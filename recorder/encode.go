package recorder

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/airlockhq/airlock/authz"
)

// canonical is an event's canonical encoding as the writer makes it, with
// what it needs next: where the stored message puts hash and sig, and
// whether a string held invalid UTF-8.
type canonical struct {
	b []byte
	// hashAt is where hash goes (after prev, or after time when there is
	// no prev), sigAt where sig goes (after key): struct order.
	hashAt, sigAt int
	// replaced is set when a string held invalid UTF-8, written as the
	// escape \ufffd (see sealLocked).
	replaced bool
}

// canonicalFast is Canonical without reflection: the same bytes, which the
// writer needs for every event (encoding/json was 5% of the gateway's CPU
// under pgbench). Canonical, with encoding/json, stays the reference the
// verifier uses, so an encoder that drifted from it would make a record
// fail verification, never pass; TestEncoderMatchesJSON and
// FuzzEncoderMatchesJSON hold the two to the same bytes.
func canonicalFast(ev *Event) (canonical, error) {
	if err := encodable(ev); err != nil {
		return canonical{}, err
	}
	return canonicalAppend(make([]byte, 0, 1024), ev), nil
}

// encodable refuses an event whose time JSON cannot hold.
func encodable(ev *Event) error {
	if y := ev.Time.Year(); y < 0 || y > 9999 {
		return fmt.Errorf("recorder: event time %s: the year is outside 0..9999, which JSON cannot hold", ev.Time)
	}
	return nil
}

// canonicalAppend is canonicalFast writing into buf (from its length
// on), for an event encodable accepts.
func canonicalAppend(buf []byte, ev *Event) canonical {
	e := encoder{b: buf}
	e.event(ev)
	return canonical{b: e.b, hashAt: e.hashAt, sigAt: e.sigAt, replaced: e.replaced}
}

// encodeBufs are the buffers the writer encodes events in before sealing
// them: the sealed message is a copy (canonical.sealed), so one buffer
// serves event after event instead of a new one each (a fresh kilobyte to
// zero and to bring into the cache). Buffers that grew past
// maxPooledEncode are left to the collector.
var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2<<10); return &b }}

const maxPooledEncode = 64 << 10

// sealed is the stored message: the canonical bytes with hash (hex) and
// sig (base64), which need no escaping, put in their places: what
// encoding the sealed event would give.
func (c canonical) sealed(hash, sig string) []byte {
	out := make([]byte, 0, len(c.b)+len(hash)+len(sig)+20)
	out = append(out, c.b[:c.hashAt]...)
	out = append(out, `,"hash":"`...)
	out = append(out, hash...)
	out = append(out, '"')
	out = append(out, c.b[c.hashAt:c.sigAt]...)
	if sig != "" {
		out = append(out, `,"sig":"`...)
		out = append(out, sig...)
		out = append(out, '"')
	}
	return append(out, c.b[c.sigAt:]...)
}

// encoder appends JSON as encoding/json.Marshal writes it: members in
// struct order, omitempty as it defines emptiness, strings with its HTML
// escaping.
type encoder struct {
	b     []byte
	comma bool // a member was written in the current object
	// hashAt, sigAt and replaced are canonical's.
	hashAt, sigAt int
	replaced      bool
}

func (e *encoder) open() {
	e.b = append(e.b, '{')
	e.comma = false
}

func (e *encoder) close() {
	e.b = append(e.b, '}')
	e.comma = true // for the object that holds this one
}

// key writes `"name":` after a comma when needed. Names are plain ASCII.
func (e *encoder) key(name string) {
	if e.comma {
		e.b = append(e.b, ',')
	}
	e.b = append(e.b, '"')
	e.b = append(e.b, name...)
	e.b = append(e.b, '"', ':')
	e.comma = true
}

func (e *encoder) str(name, v string) {
	e.key(name)
	e.string(v)
}

func (e *encoder) strOmit(name, v string) {
	if v != "" {
		e.str(name, v)
	}
}

func (e *encoder) int(name string, v int64) {
	e.key(name)
	e.b = strconv.AppendInt(e.b, v, 10)
}

func (e *encoder) intOmit(name string, v int64) {
	if v != 0 {
		e.int(name, v)
	}
}

func (e *encoder) uint(name string, v uint64) {
	e.key(name)
	e.b = strconv.AppendUint(e.b, v, 10)
}

func (e *encoder) bool(name string, v bool) {
	e.key(name)
	e.b = strconv.AppendBool(e.b, v)
}

func (e *encoder) boolOmit(name string, v bool) {
	if v {
		e.bool(name, v)
	}
}

func (e *encoder) strings(name string, vs []string) {
	if len(vs) == 0 {
		return // every []string member is omitempty
	}
	e.key(name)
	e.b = append(e.b, '[')
	for i, v := range vs {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.string(v)
	}
	e.b = append(e.b, ']')
}

// event writes ev without hash and sig, as Canonical does.
func (e *encoder) event(ev *Event) {
	e.open()
	e.int("v", int64(ev.V))
	e.str("type", ev.Type)
	e.str("session", ev.Session)
	e.uint("seq", ev.Seq)
	e.key("time")
	e.b = append(e.b, '"')
	e.b = ev.Time.AppendFormat(e.b, time.RFC3339Nano)
	e.b = append(e.b, '"')
	e.strOmit("prev", ev.Prev)
	e.hashAt = len(e.b)
	e.strOmit("key", ev.Key)
	e.sigAt = len(e.b)
	m := &ev.Meta
	e.str("agent", m.Agent)
	e.strOmit("task", m.Task)
	e.strOmit("grant", m.Grant)
	e.strOmit("approver", m.Approver)
	e.strOmit("approval_comment", m.ApprovalComment)
	e.strOmit("access", m.Access)
	e.str("resource", m.Resource)
	e.str("protocol", m.Protocol)
	e.str("client", m.Client)
	e.strOmit("gateway", m.Gateway)
	e.body(ev)
	// A session.start's and a note's own members are small and never
	// part of a body a BodyRef stands for.
	if x := ev.Start; x != nil {
		e.key("start")
		e.open()
		e.str("instance", x.Instance)
		e.close()
	}
	if x := ev.Interrupted; x != nil {
		e.key("interrupted")
		e.open()
		e.str("instance", x.Instance)
		e.uint("last_seq", x.LastSeq)
		e.str("by", x.By)
		e.str("reason", x.Reason)
		e.close()
	}
	if ev.BodyRef != nil {
		e.key("body_ref")
		e.ref(ev.BodyRef)
	}
	e.close()
}

// body writes the members of ev's body, the part a BodyRef stands for.
func (e *encoder) body(ev *Event) {
	if s := ev.Statement; s != nil {
		e.key("statement")
		e.statement(s)
	}
	if ev.Result != nil {
		e.key("result")
		e.result(ev.Result)
	}
	if len(ev.Results) > 0 {
		e.key("results")
		e.b = append(e.b, '[')
		for i := range ev.Results {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.result(&ev.Results[i])
		}
		e.b = append(e.b, ']')
	}
	if a := ev.Auth; a != nil {
		e.key("auth")
		e.open()
		e.str("user", a.User)
		e.str("reason", a.Reason)
		e.close()
	}
	if x := ev.End; x != nil {
		e.key("end")
		e.open()
		e.str("reason", x.Reason)
		e.int("statements", int64(x.Statements))
		e.int("denied", int64(x.Denied))
		e.int("duration_ms", x.DurationMS)
		if x.ExitStatus != nil {
			e.int("exit_status", int64(*x.ExitStatus))
		}
		e.strOmit("exit_signal", x.ExitSignal)
		if x.Stop != nil {
			e.key("stop")
			e.stop(x.Stop)
		}
		e.close()
	}
	if d := ev.Data; d != nil {
		e.key("data")
		e.open()
		e.uint("id", d.ID)
		e.str("stream", d.Stream)
		e.strOmit("text", d.Text)
		if len(d.B64) > 0 {
			e.key("b64")
			e.b = append(e.b, '"')
			e.b = base64.StdEncoding.AppendEncode(e.b, d.B64)
			e.b = append(e.b, '"')
		}
		e.intOmit("cols", int64(d.Cols))
		e.intOmit("rows", int64(d.Rows))
		e.strOmit("term", d.Term)
		e.close()
	}
}

func (e *encoder) ref(r *Ref) {
	e.open()
	e.int("size", r.Size)
	e.str("sha256", r.SHA256)
	e.boolOmit("omitted", r.Omitted)
	e.close()
}

func (e *encoder) statement(s *Statement) {
	e.open()
	e.uint("id", s.ID)
	e.int("index", int64(s.Index))
	e.int("count", int64(s.Count))
	e.str("text", s.Text)
	if s.TextRef != nil {
		e.key("text_ref")
		e.ref(s.TextRef)
	}
	e.str("decision", s.Decision)
	e.str("rule", s.Rule)
	e.strOmit("reason", s.Reason)
	e.key("class")
	e.class(&s.Class)
	if len(s.Params) > 0 {
		e.key("params")
		e.params(s.Params)
	}
	if s.ParamsRef != nil {
		e.key("params_ref")
		e.ref(s.ParamsRef)
	}
	e.close()
}

// params writes a statement's parameters as a JSON array.
func (e *encoder) params(ps []Param) {
	e.b = append(e.b, '[')
	for i := range ps {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		p := &ps[i]
		e.open()
		e.strOmit("type", p.Type)
		e.strOmit("value", p.Value)
		e.strOmit("format", p.Format)
		e.boolOmit("null", p.Null)
		e.intOmit("size", int64(p.Size))
		e.boolOmit("truncated", p.Truncated)
		e.boolOmit("redacted", p.Redacted)
		e.close()
	}
	e.b = append(e.b, ']')
}

func (e *encoder) class(c *authz.Classification) {
	e.open()
	e.str("kind", c.Kind)
	e.str("required", c.Required.String()) // its MarshalText
	e.strOmit("why", c.Why)
	e.strings("tables_read", c.TablesRead)
	e.strings("tables_written", c.TablesWritten)
	e.strings("functions", c.Functions)
	e.close()
}

func (e *encoder) result(r *Result) {
	e.open()
	e.uint("id", r.ID)
	e.bool("executed", r.Executed)
	e.strOmit("tag", r.Tag)
	if r.Rows != nil {
		e.int("rows", *r.Rows)
	}
	e.int("duration_us", r.DurationUS)
	e.strOmit("error", r.Error)
	e.strOmit("sqlstate", r.SQLState)
	e.intOmit("file_bytes", r.FileBytes)
	if r.ExitStatus != nil {
		e.int("exit_status", int64(*r.ExitStatus))
	}
	e.strOmit("exit_signal", r.ExitSignal)
	e.intOmit("bytes_in", r.BytesIn)
	e.intOmit("bytes_out", r.BytesOut)
	e.intOmit("bytes_err", r.BytesErr)
	e.boolOmit("output_capped", r.OutputCapped)
	e.strings("stopped", r.Stopped)
	e.close()
}

func (e *encoder) stop(s *Stop) {
	e.open()
	e.key("running")
	if s.Running == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.b = append(e.b, '[')
		for i, r := range s.Running {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.open()
			e.uint("id", r.ID)
			e.str("text", r.Text)
			e.close()
		}
		e.b = append(e.b, ']')
	}
	e.key("methods")
	if s.Methods == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.b = append(e.b, '[')
		for i, m := range s.Methods {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.string(m)
		}
		e.b = append(e.b, ']')
	}
	e.str("outcome", s.Outcome)
	e.strings("errors", s.Errors)
	e.int("duration_ms", s.DurationMS)
	e.close()
}

const hexDigits = "0123456789abcdef"

// plain are the ASCII bytes a JSON string holds as they are.
var plain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// string quotes s as encoding/json does with HTML escaping on:
// ", \ and control bytes escaped (\b \f \n \r \t short, others \u00XX),
// <, > and & as \u003c \u003e \u0026, U+2028 and U+2029 as \u2028 \u2029,
// and each byte of invalid UTF-8 as \ufffd.
func (e *encoder) string(s string) {
	b := append(e.b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			e.replaced = true
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	e.b = append(b, '"')
}
