package postgres

import (
	"encoding/binary"
	"math"
	"testing"
)

func TestBinaryText(t *testing.T) {
	be := func(n int, v uint64) []byte {
		b := make([]byte, 8)
		binary.BigEndian.PutUint64(b, v)
		return b[8-n:]
	}
	for _, c := range []struct {
		oid  uint32
		v    []byte
		want string
		ok   bool
	}{
		{oidBool, []byte{1}, "t", true},
		{oidBool, []byte{2}, "", false},
		{oidInt2, be(2, uint64(uint16(0xffff))), "-1", true},
		{oidInt4, be(4, 3), "3", true},
		{oidInt4, be(8, 3), "", false}, // wrong length: kept as bytes
		{oidInt8, be(8, uint64(math.MaxInt64)), "9223372036854775807", true},
		{oidOID, be(4, 0xffffffff), "4294967295", true},
		{oidFloat8, be(8, math.Float64bits(0.1)), "0.1", true},
		{oidFloat4, be(4, uint64(math.Float32bits(1.5))), "1.5", true},
		{oidText, []byte("héllo"), "héllo", true},
		{oidText, []byte{0xff}, "", false},
		{oidJSONB, append([]byte{1}, `{"a":1}`...), `{"a":1}`, true},
		{oidBytea, []byte{0xde, 0xad}, `\xdead`, true},
		{oidUUID, []byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8}, "12345678-9abc-def0-0102-030405060708", true},
		{oidDate, be(4, uint64(uint32(0xffffffff))), "1999-12-31", true},
		{oidDate, be(4, 9473), "2025-12-08", true},
		{oidTimestamp, be(8, 1_500_000), "2000-01-01 00:00:01.5", true},
		{oidTimestamptz, be(8, uint64(1<<64-1_000_000)), "1999-12-31 23:59:59Z", true},
		{oidTimestamp, be(8, uint64(math.MaxInt64)), "infinity", true},
		{1700, []byte{0, 1}, "", false}, // numeric is not read
	} {
		got, _, ok := binaryText(nil, c.oid, c.v)
		if ok != c.ok || string(got) != c.want {
			t.Errorf("binaryText(%d, %x) = %q, %v; want %q, %v", c.oid, c.v, got, ok, c.want, c.ok)
		}
		// It appends to what the buffer holds, and leaves it be when
		// it cannot read the value.
		got, _, _ = binaryText([]byte("v1|"), c.oid, c.v)
		if string(got) != "v1|"+c.want {
			t.Errorf("binaryText after %q (%d, %x) = %q; want %q", "v1|", c.oid, c.v, got, "v1|"+c.want)
		}
	}
}
