package bench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// largeStatementMaxBytes is the bench gateway's recorder.max_statement_bytes:
// above the largest statement benchLargeStatements sends.
const largeStatementMaxBytes = 256 << 20

// benchLargeStatements sends one statement of each size (16 MiB and 200
// MiB; AIRLOCK_BENCH_STATEMENT_MIB) through airlock R1 from an agent with a
// read grant, over Postgres and MySQL: SELECT length('<literal>'), so the
// answer is one number and only the statement is large. For each it
// reports what the gateway's memory did, as a multiple of the statement's
// size: its peak resident growth (VmHWM), the peak of its Go heap in use
// (sampled every 20 ms), the bytes it allocated for the statement, and its
// resident growth 5 s after the answer.
func benchLargeStatements(b *testing.B, e *env, r *report) {
	ctx := context.Background()
	warmed := map[string]bool{}
	for _, mib := range envInts("AIRLOCK_BENCH_STATEMENT_MIB", []int{16, 200}) {
		literal := strings.Repeat("airlock ", mib<<20/8)
		for _, proto := range []string{"Postgres", "MySQL"} {
			var run func() (int64, error)
			switch proto {
			case "Postgres":
				c, err := pgconn.Connect(ctx, e.airlock.dsn())
				if err != nil {
					b.Fatal(err)
				}
				sql := "select length('" + literal + "')"
				run = func() (int64, error) {
					res, err := c.Exec(ctx, sql).ReadAll()
					if err != nil {
						return 0, err
					}
					var n int64
					_, err = fmt.Sscan(string(res[0].Rows[0][0]), &n)
					return n, err
				}
				defer c.Close(ctx)
			default:
				db := largeMySQLDB(b, e.my.airlock)
				defer db.Close()
				sql := "SELECT LENGTH('" + literal + "')"
				run = func() (n int64, err error) {
					err = db.QueryRowContext(ctx, sql).Scan(&n)
					return n, err
				}
				// Connect before measuring.
				if err := db.PingContext(ctx); err != nil {
					b.Fatal(err)
				}
			}
			if !warmed[proto] {
				// Once per protocol, a statement that is not measured:
				// the first large value the embedded recorder stores
				// makes it allocate its block buffers (12 MiB) for good,
				// which is no statement's cost.
				warmed[proto] = true
				if _, err := run(); err != nil {
					b.Fatal(err)
				}
			}
			m := e.gw.measureStatement(b, run, int64(len(literal)))
			size := float64(len(literal) + 24)
			name := fmt.Sprintf("%d MiB statement, %s", mib, proto)
			r.add(row{section: "Large statements", metric: name + ": peak resident growth", unit: "× statement", baseline: 0,
				others: []value{{judged, m.peakRSS / size}}, target: "<= 2", met: metPtr(true, m.peakRSS/size <= 2),
				note: fmt.Sprintf("%.0f MB; the statement took %s", m.peakRSS/1e6, m.took.Round(time.Millisecond))})
			r.add(row{section: "Large statements", metric: name + ": peak Go heap growth", unit: "× statement", baseline: 0,
				others: []value{{judged, m.peakHeap / size}}, target: "<= 2", met: metPtr(true, m.peakHeap/size <= 2)})
			r.add(row{section: "Large statements", metric: name + ": bytes allocated", unit: "× statement", baseline: 0,
				others: []value{{judged, m.allocated / size}}})
			r.add(row{section: "Large statements", metric: name + ": resident growth 5 s after", unit: "× statement", baseline: 0,
				others: []value{{judged, m.after / size}}, target: "<= 0.25", met: metPtr(true, m.after/size <= 0.25),
				note: fmt.Sprintf("%.0f MB", m.after/1e6)})
		}
	}
}

// statementMemory is what one statement did to a gateway's memory, in
// bytes (see benchLargeStatements).
type statementMemory struct {
	peakRSS, peakHeap, allocated, after float64
	took                                time.Duration
}

// measureStatement runs one statement through g, which must answer want,
// and measures g's memory meanwhile and 5 s after.
func (g *gateway) measureStatement(b *testing.B, run func() (int64, error), want int64) statementMemory {
	g.collect(b)
	rss0 := procKB(b, g.PID(), "VmRSS")
	heap0 := g.metric(b, "go_memstats_heap_inuse_bytes")
	alloc0 := g.metric(b, "go_memstats_alloc_bytes_total")
	peak := g.watchPeak(b)
	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		heapPeak float64
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v, ok := g.gauge("go_memstats_heap_inuse_bytes"); ok && v > heapPeak {
					heapPeak = v
				}
			}
		}
	}()
	var profile func(string)
	start0 := time.Now()
	if dir := os.Getenv("AIRLOCK_BENCH_STATEMENT_PROFILES"); dir != "" {
		// Where the statement's bytes were allocated: compare with
		// go tool pprof -sample_index=alloc_space -base before after.
		profile = func(name string) {
			resp, err := http.Get("http://" + g.MetricsAddr + "/debug/pprof/allocs")
			if name == "later" {
				resp, err = http.Get("http://" + g.MetricsAddr + "/debug/pprof/heap")
			}
			if err != nil {
				b.Fatal(err)
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d-%s.pprof", start0.UnixNano(), name)))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			_, _ = io.Copy(f, resp.Body)
		}
		profile("before")
	}
	start := time.Now()
	n, err := run()
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil || n != want {
		b.Fatalf("large statement: length %d, %v; want %d", n, err, want)
	}
	if profile != nil {
		profile("after")
	}
	m := statementMemory{
		peakRSS:   peak() * 1024 * 1024,
		peakHeap:  max(0, heapPeak-heap0),
		allocated: g.metric(b, "go_memstats_alloc_bytes_total") - alloc0,
		took:      took,
	}
	time.Sleep(5 * time.Second)
	m.after = float64(procKB(b, g.PID(), "VmRSS")-rss0) * 1024
	if profile != nil {
		profile("later")
	}
	return m
}

// gauge is metric without failing the benchmark, for sampling from a
// goroutine.
func (g *gateway) gauge(name string) (float64, bool) {
	resp, err := plainHTTP.Get("http://" + g.MetricsAddr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if s, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			_, err := fmt.Sscan(s, &v)
			return v, err == nil
		}
	}
	return 0, false
}

// plainHTTP asks for uncompressed answers: a gzip writer per scrape is
// most of what sampling the gateway's metrics makes it allocate, which
// would be counted as the statement's.
var plainHTTP = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// largeMySQLDB is one connection to t that may send statements up to 1 GiB.
func largeMySQLDB(b *testing.B, t target) *sql.DB {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = t.user, t.password, "tcp", t.addr, t.db
	c.TLSConfig = "skip-verify"
	c.Timeout = 10 * time.Second
	c.MaxAllowedPacket = 1 << 30
	conn, err := mysql.NewConnector(c)
	if err != nil {
		b.Fatal(err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	return db
}
