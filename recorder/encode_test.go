package recorder

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/airlockhq/airlock/authz"
)

// awkward strings: every escape encoding/json makes, valid and invalid
// UTF-8, and the empty string omitempty drops.
var awkward = []string{
	"", "plain", `q"uo\te`, "<b>&amp;</b>", "\x00\x01\x1f\x7f", "\b\f\n\r\t",
	"é ü 日本 😀", "line\u2028para\u2029", "bad \xff byte", "cut \xe6\x97", "\xc3", "\\ufffd",
	"select * from t where a = 'x';", `{"hash":"ab","sig":"x"}[`, `,"sig":"`,
}

// fill sets every exported field reachable from v to a random value, so
// that a field added to the event types later is encoded by the test's
// reference and fails it until the encoder writes it too.
func fill(v reflect.Value, r *rand.Rand, pool []string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(pool[r.IntN(len(pool))])
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Int, reflect.Int64, reflect.Int32:
		switch r.IntN(4) {
		case 0:
			v.SetInt(0)
		case 1:
			v.SetInt(-r.Int64N(1 << 40))
		default:
			v.SetInt(r.Int64N(1 << 50))
		}
	case reflect.Uint64, reflect.Uint:
		if r.IntN(4) > 0 {
			v.SetUint(r.Uint64())
		}
	case reflect.Pointer:
		if r.IntN(3) == 0 {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), r, pool)
		v.Set(p)
	case reflect.Slice:
		n := r.IntN(4) - 1 // nil, empty or one to two elements
		if n < 0 {
			v.SetZero()
			return
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fill(s.Index(i), r, pool)
		}
		v.Set(s)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			zones := []*time.Location{time.UTC, time.FixedZone("", 5*3600+1800), time.FixedZone("", -7*3600)}
			t := time.Date(1+r.IntN(9998), time.Month(1+r.IntN(12)), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), 0, zones[r.IntN(3)])
			if r.IntN(2) == 0 {
				t = t.Add(time.Duration(r.IntN(1e9)))
			}
			v.Set(reflect.ValueOf(t))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), r, pool)
			}
		}
	case reflect.Uint8:
		v.SetUint(uint64(r.IntN(256)))
	default:
		panic("fill: add kind " + v.Kind().String())
	}
}

func TestEncoderMatchesJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	// Half the events hold only valid UTF-8 and a valid access level, so
	// that they can be read back.
	var valid []string
	for _, a := range awkward {
		if utf8.ValidString(a) {
			valid = append(valid, a)
		}
	}
	readBack := 0
	for i := range 20000 {
		var ev Event
		pool := awkward
		if i%2 == 1 {
			pool = valid
		}
		fill(reflect.ValueOf(&ev).Elem(), r, pool)
		switch {
		case ev.Statement != nil && i%2 == 1:
			ev.Statement.Class.Required = authz.Access(1 + r.IntN(4))
		case ev.Statement != nil && i%7 == 0:
			ev.Statement.Class.Required = authz.Access(r.IntN(5))
		}
		if checkEncoding(t, &ev) {
			readBack++
		}
	}
	if readBack < 5000 {
		t.Fatalf("the read-back property was checked on only %d events", readBack)
	}
	// The events a session writes, as the tests elsewhere make them.
	checkEncoding(t, &Event{V: Version, Type: TypeSessionStart, Session: "s", Seq: 1, Time: time.Now().UTC(), Meta: Meta{Agent: "a", Resource: "r", Protocol: "postgres", Client: "127.0.0.1:1"}})
	checkEncoding(t, &Event{V: Version, Type: TypeStatement, Time: time.Now().UTC(), Statement: &Statement{Text: "select 1", Class: authz.Classification{Kind: "SELECT", Required: authz.AccessRead}}})
}

// checkEncoding holds canonicalFast to encoding/json for ev, and reports
// whether it could also check the read-back property.
func checkEncoding(t *testing.T, ev *Event) (readBack bool) {
	t.Helper()
	want, err := Canonical(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := canonicalFast(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.b, want) {
		t.Fatalf("canonicalFast differs from encoding/json:\n got %s\nwant %s", got.b, want)
	}
	// The stored message: hash and sig (hex and base64, as the writer
	// makes them) in their places.
	sealedEv := *ev
	sealedEv.Hash, sealedEv.Sig = strings.Repeat("ab", 32), ""
	if ev.Sig != "" {
		sealedEv.Sig = "c2lnbmF0dXJl+/=="
	}
	sealed := got.sealed(sealedEv.Hash, sealedEv.Sig)
	if want, _ := json.Marshal(&sealedEv); !bytes.Equal(sealed, want) {
		t.Fatalf("sealed differs from encoding/json:\n got %s\nwant %s", sealed, want)
	}
	// The verifier hashes the stored encoding without hash and sig.
	if sum, err := sealedSum(sealed, &sealedEv); err != nil || sum != sha256.Sum256(want) {
		t.Fatalf("sealedSum of %s: %x, %v; want the hash of %s", sealed, sum, err, want)
	}
	// Unless a string was replaced, a reader decodes and encodes the
	// same bytes again (what sealLocked's normalize relies on). Events
	// with values no reader takes (a random access level) are left out.
	var back Event
	if got.replaced || json.Unmarshal(got.b, &back) != nil {
		return false
	}
	if again, _ := Canonical(&back); !bytes.Equal(again, got.b) {
		t.Fatalf("not flagged as replaced, but reads back differently:\n got %s\nback %s", got.b, again)
	}
	// The verifier's decoder reads what encoding/json reads.
	var fast Event
	if err := decodeEvent(got.b, &fast); err != nil || !reflect.DeepEqual(fast, back) {
		t.Fatalf("decodeEvent reads %s as\n%+v (%v), encoding/json as\n%+v", got.b, fast, err, back)
	}
	return true
}

func FuzzEncoderMatchesJSON(f *testing.F) {
	for _, s := range awkward {
		f.Add(s, int64(0), uint64(1), true)
	}
	f.Fuzz(func(t *testing.T, s string, n int64, u uint64, b bool) {
		rows := n
		checkEncoding(t, &Event{
			V: int(n), Type: s, Session: s, Seq: u, Time: time.Unix(0, n%(1<<62)).UTC(), Prev: s, Key: s,
			Meta:      Meta{Agent: s, Task: s, Access: s, Resource: s, Client: s},
			Statement: &Statement{ID: u, Index: int(n), Text: s, Reason: s, Class: authz.Classification{Kind: s, Why: s, TablesRead: []string{s, s}}, Params: []Param{{Value: s, Null: b, Size: int(n)}}},
			Results:   []Result{{ID: u, Executed: b, Tag: s, Rows: &rows, Error: s, BytesIn: n}},
			Data:      &Data{ID: u, Stream: s, Text: s, B64: []byte(s), Cols: int(n), Term: s},
		})
	})
}

func BenchmarkCanonical(b *testing.B) {
	rows := int64(1)
	ev := &Event{V: Version, Type: TypeStatement, Session: "0123456789abcdef0123456789abcdef", Seq: 42, Time: time.Now().UTC(),
		Prev: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Meta: Meta{Agent: "agent-1", Task: "investigate slow orders", Grant: "g-123", Approver: "alice", Access: "read", Resource: "orders-db", Protocol: "postgres", Client: "127.0.0.1:53422", Gateway: "gw-1"},
		Statement: &Statement{ID: 41, Count: 1, Text: "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", Decision: "allow", Rule: "grant",
			Class: authz.Classification{Kind: "SELECT", Required: authz.AccessRead, TablesRead: []string{"public.pgbench_accounts"}}},
		Results: []Result{{ID: 40, Executed: true, Tag: "SELECT 1", Rows: &rows, DurationUS: 88}},
	}
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			_, _ = Canonical(ev)
		}
	})
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			_, _ = canonicalFast(ev)
		}
	})
}
