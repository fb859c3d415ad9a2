package recorder

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlockhq/airlock/testenv"
)

// BenchmarkSign is one ed25519 signature over an event hash: the cost
// Append adds to each signed event.
func BenchmarkSign(b *testing.B) {
	s := testSigner(b)
	sum := sha256.Sum256([]byte("event"))
	for b.Loop() {
		s.sign(&sum)
	}
}

// BenchmarkVerifyEvent is the verifier's cost per signed event (hash and
// signature check), what verify --all spends.
func BenchmarkVerifyEvent(b *testing.B) {
	s := testSigner(b)
	kr, _ := NewKeyring(s.Public())
	ev := stmtEvent(1, "SELECT id, total FROM orders WHERE customer_id = $1")
	ev.V, ev.Type, ev.Session, ev.Seq, ev.Meta = Version, TypeSessionStart, "s", 1, testMeta("a", "r")
	ev.Statement = nil
	ev.Key = s.Fingerprint()
	sum, _ := hashEvent(&ev)
	ev.Hash = fmt.Sprintf("%x", sum[:])
	ev.Sig = s.sign(&sum)
	evs := []Event{ev}
	for b.Loop() {
		if r := Verify("s", evs, kr); r.Status != VerifyUnterminated {
			b.Fatal(r)
		}
	}
}

// BenchmarkStatement is what the recorder adds to one statement on the
// strict path, against the embedded server: its statement event appended
// (chained) and acknowledged before it may be forwarded, then its result
// appended (chained; its acknowledgement is awaited by the next
// statement's Commit). sign=interval is the default policy (a signature
// at most every DefaultSignInterval while statements keep coming);
// sign=every-event signs both events of every statement.
func BenchmarkStatement(b *testing.B) {
	for _, every := range []bool{false, true} {
		name := "sign=interval"
		if every {
			name = "sign=every-event"
		}
		b.Run(name, func(b *testing.B) {
			h := newHarness(b, harnessOptions{})
			if every {
				h.rec.signEvery = -1
			}
			ctx := context.Background()
			l := h.rec.Open("bench", testMeta("agent-1", "orders-db"))
			stmt := stmtEvent(1, "INSERT INTO orders (customer_id, total) VALUES ($1, $2)")
			res := *resultEvent(1).Result
			b.ReportAllocs()
			for b.Loop() {
				l.Append(stmt)
				if err := l.Commit(ctx); err != nil {
					b.Fatal(err)
				}
				l.Result(res)
			}
		})
	}
}

// processCPU is the user and system time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sessionSeq numbers benchmark sessions across runs, since a session id
// can be used once per stream.
var sessionSeq atomic.Int64

// BenchmarkThroughput runs many sessions at once, each doing statements
// as BenchmarkStatement does, against the embedded server (stream R1) and
// a 3-node cluster of separate nats-server processes (stream R3). It
// reports statement events acknowledged per second and the latency of a
// statement's Commit (p50, p99): sessions must not wait for each other.
func BenchmarkThroughput(b *testing.B) {
	embedded := newHarness(b, harnessOptions{})
	embeddedGC := newHarness(b, harnessOptions{GroupCommit: true})
	c := testenv.StartNATSCluster(b, testenv.NATSClusterOptions{})
	cluster := newHarness(b, harnessOptions{URL: c.URL, Replicas: 3})
	clusterGC := newHarness(b, harnessOptions{URL: c.URL, Replicas: 3, GroupCommit: true})
	for _, tc := range []struct {
		name string
		h    *harness
	}{{"embedded-R1", embedded}, {"embedded-R1-group", embeddedGC}, {"cluster-R3", cluster}, {"cluster-R3-group", clusterGC}} {
		for _, sessions := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/sessions=%d", tc.name, sessions), func(b *testing.B) {
				throughput(b, tc.h, sessions)
			})
		}
	}
}

func throughput(b *testing.B, h *harness, sessions int) {
	ctx := context.Background()
	stmt := stmtEvent(1, "INSERT INTO orders (customer_id, total) VALUES ($1, $2)")
	res := *resultEvent(1).Result
	var (
		next atomic.Int64
		mu   sync.Mutex
		lat  []time.Duration
		wg   sync.WaitGroup
	)
	n := int64(b.N)
	cpu0 := processCPU()
	start := time.Now()
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := h.rec.Open(fmt.Sprintf("tp-%d", sessionSeq.Add(1)), testMeta("agent-1", "orders-db"))
			var mine []time.Duration
			for next.Add(1) <= n {
				t0 := time.Now()
				l.Append(stmt)
				if err := l.Commit(ctx); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
				l.Result(res)
			}
			if err := l.Commit(ctx); err != nil {
				b.Error(err)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	slices.Sort(lat)
	if len(lat) == 0 {
		return
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "statements/s")
	// The process's CPU: the recorder and, for R1, the embedded server.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/statement")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
