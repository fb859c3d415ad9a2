package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// gcHeadroom is how much the gateway's heap may grow between garbage
// collections at least. Go's default (GOGC=100) lets it grow by the live
// heap, which for a gateway is small (about 10 MB without sessions) while
// it allocates fast: x/crypto/ssh allocates every packet it reads, and
// relaying a bulk SSH transfer then spent a third of the gateway's CPU on
// collections (docs/benchmarks.md). With this headroom a small heap is
// collected several times less often; from a live heap of gcHeadroom up,
// the collector runs as Go's default would.
const gcHeadroom = 64 << 20

// gcPercent is the GOGC the tuner set last (0 before its first collection).
var gcPercent atomic.Int64

// tuneGC sets GOGC after every collection so that the next one comes after
// max(live heap, headroom) bytes of allocation. It leaves an explicit GOGC
// environment variable alone: the operator chose. GOMEMLIMIT still applies
// either way.
func tuneGC(headroom uint64) {
	if os.Getenv("GOGC") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var after func(*gcSentinel)
	after = func(s *gcSentinel) {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			pct := percentFor(sample[0].Value.Uint64(), headroom)
			if gcPercent.Swap(pct) != pct {
				debug.SetGCPercent(int(pct))
			}
		}
		// The sentinel was found unreachable by the collection that just
		// ended; arming its finalizer again keeps it for the next one.
		runtime.SetFinalizer(s, after)
	}
	runtime.SetFinalizer(&gcSentinel{}, after)
}

// gcSentinel is an object nothing references, whose finalizer runs once
// per collection. It holds a pointer so that it is a heap object of its
// own: a zero-sized one is not allocated at all, and a small one without
// pointers goes to the tiny allocator, which packs it into a block with
// other small objects, so its finalizer waits until they all die.
type gcSentinel struct{ _ *byte }

// percentFor is the GOGC that lets a heap of live bytes grow by headroom,
// and never less than Go's default of 100 nor more than 2000.
func percentFor(live, headroom uint64) int64 {
	if live == 0 {
		live = 1
	}
	pct := int64(headroom * 100 / live)
	return min(max(pct, 100), 2000)
}
