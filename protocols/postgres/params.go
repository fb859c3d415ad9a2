package postgres

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Type OIDs of the binary parameter formats binaryText reads.
const (
	oidBool        = 16
	oidBytea       = 17
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidUnknown     = 705
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidUUID        = 2950
	oidJSONB       = 3802
)

// pgEpoch is where PostgreSQL's binary dates and timestamps count from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// binaryText appends to dst the text form of a parameter sent in binary
// format as type oid, as PostgreSQL would print it, and returns the type's
// name; ok is false for a type it does not read (or a value that is not
// of it), which is then recorded as its bytes.
func binaryText(dst []byte, oid uint32, v []byte) (text []byte, name string, ok bool) {
	switch oid {
	case oidBool:
		if len(v) == 1 && v[0] <= 1 {
			return append(dst, "ft"[v[0]]), "bool", true
		}
	case oidInt2:
		if len(v) == 2 {
			return strconv.AppendInt(dst, int64(int16(binary.BigEndian.Uint16(v))), 10), "int2", true
		}
	case oidInt4:
		if len(v) == 4 {
			return strconv.AppendInt(dst, int64(int32(binary.BigEndian.Uint32(v))), 10), "int4", true
		}
	case oidOID:
		if len(v) == 4 {
			return strconv.AppendUint(dst, uint64(binary.BigEndian.Uint32(v)), 10), "oid", true
		}
	case oidInt8:
		if len(v) == 8 {
			return strconv.AppendInt(dst, int64(binary.BigEndian.Uint64(v)), 10), "int8", true
		}
	case oidFloat4:
		if len(v) == 4 {
			return strconv.AppendFloat(dst, float64(math.Float32frombits(binary.BigEndian.Uint32(v))), 'g', -1, 32), "float4", true
		}
	case oidFloat8:
		if len(v) == 8 {
			return strconv.AppendFloat(dst, math.Float64frombits(binary.BigEndian.Uint64(v)), 'g', -1, 64), "float8", true
		}
	case oidText, oidVarchar, oidBpchar, oidName, oidUnknown, oidJSON:
		if utf8.Valid(v) {
			return append(dst, v...), typeName(oid), true
		}
	case oidJSONB:
		// A version byte (1), then the JSON text.
		if len(v) > 0 && v[0] == 1 && utf8.Valid(v[1:]) {
			return append(dst, v[1:]...), "jsonb", true
		}
	case oidBytea:
		return hex.AppendEncode(append(dst, `\x`...), v), "bytea", true
	case oidUUID:
		if len(v) == 16 {
			for i, part := range [][]byte{v[:4], v[4:6], v[6:8], v[8:10], v[10:]} {
				if i > 0 {
					dst = append(dst, '-')
				}
				dst = hex.AppendEncode(dst, part)
			}
			return dst, "uuid", true
		}
	case oidDate:
		if len(v) == 4 {
			days := int32(binary.BigEndian.Uint32(v))
			switch days {
			case math.MaxInt32:
				return append(dst, "infinity"...), "date", true
			case math.MinInt32:
				return append(dst, "-infinity"...), "date", true
			}
			return pgEpoch.AddDate(0, 0, int(days)).AppendFormat(dst, time.DateOnly), "date", true
		}
	case oidTimestamp, oidTimestamptz:
		if len(v) == 8 {
			name := "timestamp"
			if oid == oidTimestamptz {
				name = "timestamptz"
			}
			us := int64(binary.BigEndian.Uint64(v))
			switch us {
			case math.MaxInt64:
				return append(dst, "infinity"...), name, true
			case math.MinInt64:
				return append(dst, "-infinity"...), name, true
			}
			t := time.Unix(pgEpoch.Unix()+us/1e6, us%1e6*1e3).UTC()
			layout := "2006-01-02 15:04:05.999999"
			if oid == oidTimestamptz {
				layout += "Z07:00"
			}
			return t.AppendFormat(dst, layout), name, true
		}
	}
	return dst, "", false
}

func typeName(oid uint32) string {
	switch oid {
	case oidText:
		return "text"
	case oidVarchar:
		return "varchar"
	case oidBpchar:
		return "bpchar"
	case oidName:
		return "name"
	case oidJSON:
		return "json"
	}
	return "unknown"
}
