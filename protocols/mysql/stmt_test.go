package mysql

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
)

// executePacket builds a COM_STMT_EXECUTE as a client does; types nil
// means the types are not sent again.
func executePacket(id uint32, n int, nulls []int, types []byte, values []byte) []byte {
	b := []byte{comStmtExecute}
	b = binary.LittleEndian.AppendUint32(b, id)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 1)
	if n == 0 {
		return b
	}
	bitmap := make([]byte, (n+7)/8)
	for _, i := range nulls {
		bitmap[i/8] |= 1 << (i % 8)
	}
	b = append(b, bitmap...)
	if types != nil {
		b = append(b, 1)
		b = append(b, types...)
	} else {
		b = append(b, 0)
	}
	return append(b, values...)
}

func TestParseExecute(t *testing.T) {
	types := []byte{0x08, 0, 0xfd, 0, 0x06, 0, 0x0c, 0, 0x05, 0, 0x01, 0x80, 0x0b, 0, 0x03, 0}
	var vals []byte
	vals = binary.LittleEndian.AppendUint64(vals, uint64(1<<63-1)^(1<<63-1)|uint64(math.MaxUint64-41)) // -42
	vals = appendLenencBytes(vals, []byte("Ada 'Lovelace'"))
	// NULL has no bytes.
	vals = append(vals, 11, 0xea, 0x07, 11, 26, 8, 30, 5, 0x40, 0xe2, 0x01, 0x00) // 2026-11-26 08:30:05.123456
	vals = binary.LittleEndian.AppendUint64(vals, math.Float64bits(2.5))
	vals = append(vals, 200) // unsigned tiny
	vals = append(vals, 8, 1, 1, 0, 0, 0, 2, 3, 4)
	// parameter 8 (LONG) comes by long data
	st := &stmt{params: 8, long: map[int]*longData{7: {size: 100000, head: []byte("head")}}}
	got, err := parseExecute(executePacket(1, 8, []int{2}, types, vals), st)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ, val string
		null     bool
	}{
		{"LONGLONG", "-42", false},
		{"VAR_STRING", "Ada 'Lovelace'", false},
		{"NULL", "", true},
		{"DATETIME", "2026-11-26 08:30:05.123456", false},
		{"DOUBLE", "2.5", false},
		{"UNSIGNED TINY", "200", false},
		{"TIME", "-26:03:04", false},
		{"LONG", "head", false},
	}
	for i, w := range want {
		if got[i].typ != w.typ || string(got[i].value) != w.val || got[i].null != w.null {
			t.Errorf("parameter %d: got %s %q null=%v, want %s %q null=%v", i+1, got[i].typ, got[i].value, got[i].null, w.typ, w.val, w.null)
		}
	}
	if got[7].long == nil || got[7].long.size != 100000 {
		t.Errorf("long data parameter: %+v", got[7])
	}

	// A second execution may leave the types out; they are remembered.
	st.long = nil
	vals2 := binary.LittleEndian.AppendUint64(nil, 7)
	vals2 = appendLenencBytes(vals2, []byte("x"))
	vals2 = append(vals2, 0)
	vals2 = binary.LittleEndian.AppendUint64(vals2, math.Float64bits(1))
	vals2 = append(vals2, 1, 0)
	vals2 = binary.LittleEndian.AppendUint32(vals2, 9)
	got, err = parseExecute(executePacket(1, 8, []int{2}, nil, vals2), st)
	if err != nil || string(got[0].value) != "7" || string(got[3].value) != "0000-00-00" || string(got[6].value) != "00:00:00" || string(got[7].value) != "9" {
		t.Fatalf("execution without types: %v %+v", err, got)
	}

	for _, c := range []struct {
		name string
		st   *stmt
		in   []byte
		want string
	}{
		{"types never sent", &stmt{params: 1}, executePacket(1, 1, nil, nil, []byte{1}), "never sent"},
		{"value cut short", &stmt{params: 1}, executePacket(1, 1, nil, []byte{0x08, 0}, []byte{1, 2}), "bytes left"},
		{"unknown type", &stmt{params: 1}, executePacket(1, 1, nil, []byte{0x42, 0}, []byte{1}), "unknown type"},
		{"string longer than the packet", &stmt{params: 1}, executePacket(1, 1, nil, []byte{0xfd, 0}, []byte{0xfc, 0xff, 0xff}), "length-encoded"},
		{"no bitmap", &stmt{params: 9}, executePacket(1, 0, nil, nil, nil), "NULL bitmap"},
		{"date of odd length", &stmt{params: 1}, executePacket(1, 1, nil, []byte{0x0a, 0}, []byte{3, 1, 2, 3}), "date of 3 bytes"},
	} {
		if _, err := parseExecute(c.in, c.st); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}
