package postgres

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// TestMaskedCacheOracle: every message of the corpora (the Postgres
// corpus with its evasion cases, psql's catalog queries, the fuzz seeds,
// the elision scanner's literal cases, maskOracleExtra) and random
// substitutions of its constants, under several grants, get from a
// session on a shared cache, warmed with them in random order, the very
// verdict (reflect.DeepEqual) a session without a cache gives.
func TestMaskedCacheOracle(t *testing.T) {
	msgs := maskSamples(t)
	msgs = append(msgs, fuzzSeeds(t, "FuzzPostgres")...)
	n := 6
	if testing.Short() {
		n = 2
	}
	o := runMaskedOracle(t, msgs, n, false)
	for _, m := range o.mismatches[:min(len(o.mismatches), 5)] {
		t.Error(m)
	}
	if len(o.mismatches) > 0 {
		t.Fatalf("%d of %d verdicts differ", len(o.mismatches), o.decided)
	}
	t.Logf("%d messages (%d with a masked key), %d verdicts compared, %d from a masked key", o.messages, o.keyed, o.decided, o.maskedHits)
	if o.maskedHits < o.decided/4 {
		t.Fatalf("only %d of %d verdicts came from a masked key", o.maskedHits, o.decided)
	}
}

// TestMaskedCacheOracleCatches: the oracle has teeth. A cache that keeps
// verdicts under the masked key even when a decision read a constant
// (Session.maskAll) gives verdicts the oracle finds wrong.
func TestMaskedCacheOracleCatches(t *testing.T) {
	o := runMaskedOracle(t, maskOracleExtra, 4, true)
	if len(o.mismatches) == 0 {
		t.Fatalf("a cache that ignores what decisions read gave no wrong verdict in %d", o.decided)
	}
	t.Logf("%d of %d verdicts wrong, e.g. %s", len(o.mismatches), o.decided, o.mismatches[0])
}

type maskOracle struct {
	messages, keyed, decided, maskedHits int
	mismatches                           []string
}

// oracleGrants are the grants the oracle decides under.
func oracleGrants() map[string]*authz.Grant {
	scoped := authztest.NewGrant(authz.AccessWrite)
	scoped.Scope.Tables = []string{"public.orders", "public.pgbench_accounts", "public.t", "pg_catalog.*"}
	scoped.Scope.Functions = []string{"f", "public.g", "set_config", "pg_sleep"}
	scoped.Scope.MaxTables = 2
	files := authztest.NewGrant(authz.AccessDDL)
	files.Scope.AllowServerFiles, files.Scope.AllowDrop, files.Scope.AllowUnfiltered = true, true, true
	return map[string]*authz.Grant{
		"read":   authztest.NewGrant(authz.AccessRead),
		"write":  authztest.NewGrant(authz.AccessWrite),
		"admin":  authztest.NewGrant(authz.AccessAdmin),
		"scoped": scoped,
		"files":  files,
	}
}

func runMaskedOracle(t *testing.T, msgs []string, n int, maskAll bool) maskOracle {
	t.Helper()
	r := rand.New(rand.NewPCG(20, uint64(n)))
	cache := authz.NewDecisionCache(1 << 16)
	grants := oracleGrants()
	names := slices.Sorted(maps.Keys(grants))
	var o maskOracle
	for _, msg := range msgs {
		o.messages++
		group := []string{msg}
		if _, consts, ok := maskPG(msg, nil, nil); ok && len(msg) <= authz.MaxCachedText {
			o.keyed++
			for range n {
				v := substituteConsts(msg, consts, func(k byte) string { return oracleConst(r, k) })
				if _, _, ok := maskPG(v, nil, nil); !ok {
					t.Fatalf("%q: its substitution %q has no key", msg, v)
				}
				group = append(group, v)
			}
		}
		for _, name := range names {
			g := grants[name]
			// Warm the cache in random order, then ask again: each
			// verdict is compared both times.
			for pass := range 2 {
				r.Shuffle(len(group), func(i, j int) { group[i], group[j] = group[j], group[i] })
				for _, sql := range group {
					for _, parse := range []bool{false, true} {
						if parse && (pass == 1 || name != "read") {
							continue
						}
						o.decide(t, cache, g, name, sql, parse, maskAll)
					}
				}
			}
		}
	}
	return o
}

func (o *maskOracle) decide(t *testing.T, cache *authz.DecisionCache, g *authz.Grant, grant, sql string, parse, maskAll bool) {
	plain := NewSession(Options{})
	cached := NewSession(Options{Cache: cache})
	cached.maskAll = maskAll
	var want, got authz.Verdict
	if parse {
		want, got = plain.Parse(g, "", sql), cached.Parse(g, "", sql)
	} else {
		want, got = plain.Query(g, sql), cached.Query(g, sql)
	}
	o.decided++
	o.maskedHits += cached.maskedHits
	if !reflect.DeepEqual(got, want) {
		o.mismatches = append(o.mismatches, fmt.Sprintf("%.300q under %s (parse %v):\n cached %.600v\n   want %.600v", sql, grant, parse, got, want))
	}
}

// oracleStrings are string values to put in constants: names of settings,
// roles, functions and files the authorizer reads, option words, quotes,
// backslashes, non-ASCII, empty and long.
var oracleStrings = []string{
	"", "x", "role", "session_authorization", "pg_read_file", "search_path", "/etc/passwd",
	"application_name", "client_encoding", "statement_timeout", "SJIS", "UTF8", "latin1",
	"it's", `back\slash`, "é ü 日本 🙂", "false", "off", "0", "on", "true", "public.orders",
	"select * from secrets", "postgres", "json", strings.Repeat("x", 5000),
}

// oracleConst is a random constant of kind (maskFloat+1: a number that
// may follow a word, so starts with its point).
func oracleConst(r *rand.Rand, kind byte) string {
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	v := oracleStrings[r.IntN(len(oracleStrings))]
	switch kind {
	case maskString:
		return "'" + strings.ReplaceAll(v, "'", "''") + "'"
	case maskEscape:
		v = strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), "'", "''")
		return pick("E", "e") + "'" + v + pick("", `\n`, `\t\\`, `\"`) + "'"
	case maskDollar:
		tag := pick("$$", "$q$", "$_Z9$")
		return tag + v + tag
	case maskBits:
		return pick("B''", "B'0'", "b'101'", "B'1111000011110000'")
	case maskHex:
		return pick("X''", "X'1F'", "x'dead'", "X'0123456789abcdefABCDEF'")
	case maskInteger:
		return pick("0", "1", "2", "7", "42", "100", "32767", "32768", "2147483647", "007")
	case maskFloat:
		return pick("0.0", "1.5", ".5", "3.", "1e10", "2147483648", "99999999999999999999", "1.5E-3", "4.2e+1")
	case maskFloat + 1:
		return pick(".5", ".0", ".5e3", ".25E-2")
	}
	panic("kind " + string(kind))
}

// fuzzSeeds reads the committed seed corpus of a fuzz target.
func fuzzSeeds(t testing.TB, target string) []string {
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "string("); ok {
				s, err := strconv.Unquote(strings.TrimSuffix(v, ")"))
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no seeds of %s", target)
	}
	return out
}

// FuzzMaskedCache is the oracle for any message: warmed with the message,
// a shared cache gives each extreme substitution of its constants the
// verdict a session without a cache gives it, under each grant.
func FuzzMaskedCache(f *testing.F) {
	for _, sql := range maskSamples(f) {
		f.Add(sql)
	}
	grants := oracleGrants()
	f.Fuzz(func(t *testing.T, sql string) {
		_, consts, ok := maskPG(sql, nil, nil)
		if !ok {
			return
		}
		for name, g := range grants {
			cache := authz.NewDecisionCache(16)
			NewSession(Options{Cache: cache}).Query(g, sql)
			for _, ext := range maskExtremes {
				v := substituteConsts(sql, consts, func(k byte) string { return ext[k] })
				got := NewSession(Options{Cache: cache}).Query(g, v)
				if want := NewSession(Options{}).Query(g, v); !reflect.DeepEqual(got, want) {
					t.Fatalf("%q, warmed with %q, under %s:\n cached %.600v\n   want %.600v", v, sql, name, got, want)
				}
			}
		}
	})
}
