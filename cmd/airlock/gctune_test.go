package main

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	for _, c := range []struct {
		live, headroom uint64
		want           int64
	}{
		{0, 64 << 20, 2000},
		{8 << 20, 64 << 20, 800},
		{32 << 20, 64 << 20, 200},
		{64 << 20, 64 << 20, 100},
		{1 << 30, 64 << 20, 100},
		{1 << 20, 64 << 20, 2000},
	} {
		if got := percentFor(c.live, c.headroom); got != c.want {
			t.Errorf("percentFor(%d, %d) = %d, want %d", c.live, c.headroom, got, c.want)
		}
	}
}

// TestTuneGC: after a collection, the test binary's small heap gets the
// GOGC that gives it the headroom, and the tuner keeps running.
func TestTuneGC(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tuneGC(64 << 20)
	// Long-lived tiny objects allocated right after the sentinel: were the
	// sentinel tiny too, the allocator could pack it with them and its
	// finalizer would never run again while they live.
	var tiny []*[8]byte
	for range 64 {
		tiny = append(tiny, new([8]byte))
	}
	defer runtime.KeepAlive(tiny)
	for range 3 {
		gcPercent.Store(0)
		deadline := time.Now().Add(10 * time.Second)
		for gcPercent.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no collection ran the tuner")
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		if got := gcPercent.Load(); got <= 100 {
			t.Fatalf("tuner set GOGC=%d for a heap well under the headroom", got)
		}
	}
	if cur := debug.SetGCPercent(100); int64(cur) != gcPercent.Load() {
		t.Fatalf("GOGC is %d, the tuner says it set %d", cur, gcPercent.Load())
	}
}
