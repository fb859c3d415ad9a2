// Package bench measures airlock against direct connections (PostgreSQL,
// MariaDB, sshd) and PgBouncer in one run, with its embedded R1 recorder
// and with a 3-node R3 cluster, alternating the contenders so machine
// drift cancels out.
// Run with `make bench`; it writes docs/benchmarks.md, docs/benchmarks.png
// and CPU profiles of the gateway under docs/profiles/.
package bench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/testenv"
)

// target is one contender a client can connect to.
type target struct {
	name     string
	addr     string
	user     string
	password string
	db       string
}

func (t target) dsn() string {
	host, port, _ := strings.Cut(t.addr, ":")
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=require", host, port, t.user, t.password, t.db)
}

// env is everything the suite measures against.
type env struct {
	pg        *testenv.Postgres
	direct    target
	bouncer   target
	bouncerPG *testenv.PgBouncer
	airlock   target // strict, embedded R1 recorder
	airlockR3 target // strict, recording to a 3-node cluster with replicas 3
	gw        *gateway
	gwR3      *gateway
	idle      target // airlock in front of PgBouncer (transaction pooling), for the idle-session count
	my        mysqlEnv
	ssh       sshEnv
	profiles  string
}

// BenchmarkSuite runs every measurement once and writes the report. Run it
// with -benchtime 1x.
func BenchmarkSuite(b *testing.B) {
	if b.N > 1 {
		b.Skip("the suite runs once; use -benchtime 1x")
	}
	raiseFileLimit(b)
	testenv.RequireBinary(b, "pgbench", "postgresql-contrib")
	r := &report{started: time.Now()}
	e := setup(b)
	r.machine(testenv.NATSServerBinary(b))
	rounds := envInt("AIRLOCK_BENCH_ROUNDS", 3)
	secs := envInt("AIRLOCK_BENCH_SECONDS", 5)

	// AIRLOCK_BENCH_ONLY=pgbench,latency runs only the named parts, for
	// working on one of them; the report then goes to a temporary
	// directory, not docs/.
	only := envWords("AIRLOCK_BENCH_ONLY", nil)
	parts := []struct {
		name string
		run  func()
	}{
		{"pgbench", func() { benchPgbench(b, e, r, rounds, secs) }},
		{"latency", func() { benchLatency(b, e, r) }},
		{"large", func() { benchLargeResult(b, e, r) }},
		{"connect", func() { benchConnect(b, e, r) }},
		{"mysql", func() { benchMySQLPointSelect(b, e, r, rounds, secs) }},
		{"mysql-large", func() { benchMySQLLargeResult(b, e, r) }},
		{"large-statement", func() { benchLargeStatements(b, e, r) }},
		{"ssh", func() { benchSSHBulk(b, e, r) }},
		{"ssh-exec", func() { benchSSHExec(b, e, r) }},
		// Last: the sessions they open leave the gateway's heap grown
		// (the Postgres sessions after the MySQL ones).
		{"idle-mysql", func() { benchIdleMySQL(b, e, r, idleMySQLSessions) }},
		{"idle", func() { benchIdle(b, e, r, envInt("AIRLOCK_BENCH_IDLE", 5000)) }},
	}
	for _, p := range parts {
		if len(only) == 0 || slices.Contains(only, p.name) {
			p.run()
		}
	}

	dir := filepath.Join(testenv.ModuleRoot(b), "docs")
	if len(only) > 0 {
		dir = b.TempDir()
	}
	if err := r.write(filepath.Join(dir, "benchmarks.md"), filepath.Join(dir, "benchmarks.png")); err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %s\n%s", filepath.Join(dir, "benchmarks.md"), r.table())
}

func setup(b *testing.B) *env {
	e := &env{profiles: filepath.Join(testenv.ModuleRoot(b), "docs", "profiles")}
	if os.Getenv("AIRLOCK_BENCH_ONLY") != "" {
		e.profiles = filepath.Join(os.TempDir(), "airlock-bench-profiles")
	}
	_ = os.MkdirAll(e.profiles, 0o755)
	e.pg = testenv.StartPostgres(b, testenv.PostgresOptions{Database: "app"})
	pgbenchInit(b, e.pg)
	e.direct = target{"direct", e.pg.Addr(), e.pg.User, e.pg.Password, e.pg.Database}
	bouncer := testenv.StartPgBouncer(b, e.pg, testenv.PgBouncerOptions{PoolMode: "session"})
	e.bouncer, e.bouncerPG = target{"pgbouncer", bouncer.Addr(), e.pg.User, e.pg.Password, e.pg.Database}, bouncer
	pool := testenv.StartPgBouncer(b, e.pg, testenv.PgBouncerOptions{PoolMode: "transaction", MaxClientConn: 10000, PoolSize: 10})
	benchPG := testenv.GatewayResource{Name: "bench-pg", Protocol: "postgres", Address: e.pg.Addr(), Database: e.pg.Database, User: e.pg.User,
		PasswordEnv: "BENCH_PG_PASSWORD", Password: e.pg.Password}
	pooledPG := benchPG
	pooledPG.Name, pooledPG.Address = "pooled-pg", pool.Addr()
	my, myRes := startMariaDB(b)
	sshd, sshRes := startSSHD(b)

	e.gw = startGateway(b, testenv.GatewayOptions{Resources: []testenv.GatewayResource{benchPG, pooledPG, myRes, sshRes}, MaxStatementBytes: largeStatementMaxBytes})
	read := func(g *gateway, res string) string {
		return g.grant(b, control.GrantSpec{Resource: res, Access: "read"})
	}
	e.airlock = target{"airlock R1", e.gw.PostgresAddr, "agent-1", read(e.gw, "bench-pg"), "bench-pg"}
	// A write grant: a read grant starts its sessions with
	// default_transaction_read_only, a startup parameter PgBouncer's
	// transaction pool refuses; idle sessions run nothing either way.
	idleTok := e.gw.grant(b, control.GrantSpec{Resource: "pooled-pg", Access: "write"})
	e.idle = target{"airlock R1", e.gw.PostgresAddr, "agent-1", idleTok, "pooled-pg"}
	e.my = newMySQLEnv(my, e.gw, read(e.gw, myRes.Name))
	e.ssh = newSSHEnv(b, sshd, e.gw, sshRes.Name)

	cluster, creds := startRecorderCluster(b)
	e.gwR3 = startGateway(b, testenv.GatewayOptions{NATSURL: cluster.URL, NATSCredentials: creds, Replicas: 3, Resources: []testenv.GatewayResource{benchPG}})
	e.airlockR3 = target{"airlock R3", e.gwR3.PostgresAddr, "agent-1", read(e.gwR3, "bench-pg"), "bench-pg"}
	return e
}

func pgbenchInit(b *testing.B, pg *testenv.Postgres) {
	cmd := exec.Command("pgbench", "-i", "-q", "-s", "10", "-h", pg.Host, "-p", strconv.Itoa(pg.Port), "-U", pg.User, pg.Database)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pg.Password)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
}

var (
	tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	latRE = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

// pgbench runs pgbench -S against t and returns its TPS and mean latency.
func pgbench(b *testing.B, t target, clients int, mode string, secs int) (tps, latMS float64) {
	host, port, _ := strings.Cut(t.addr, ":")
	threads := min(clients, 2)
	cmd := exec.Command("pgbench", "-n", "-S", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(secs), "-M", mode, "-h", host, "-p", port, "-U", t.user, t.db)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+t.password, "PGSSLMODE=require")
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("pgbench against %s: %v\n%s", t.name, err, out)
	}
	m, l := tpsRE.FindSubmatch(out), latRE.FindSubmatch(out)
	if m == nil || l == nil {
		b.Fatalf("pgbench output without tps/latency:\n%s", out)
	}
	tps, _ = strconv.ParseFloat(string(m[1]), 64)
	latMS, _ = strconv.ParseFloat(string(l[1]), 64)
	return tps, latMS
}

// benchPgbench runs pgbench -S for each client count and protocol mode,
// rotating the order of the contenders every round.
func benchPgbench(b *testing.B, e *env, r *report, rounds, secs int) {
	contenders := []target{e.direct, e.bouncer, e.airlock, e.airlockR3}
	for _, clients := range envInts("AIRLOCK_BENCH_CLIENTS", []int{1, 8}) {
		for _, mode := range envWords("AIRLOCK_BENCH_MODES", []string{"simple", "prepared"}) {
			tps := map[string][]float64{}
			lat := map[string][]float64{}
			cpu := map[string][]float64{}   // gateway CPU per statement, µs
			batch := map[string][]float64{} // events per recorder message
			calls := map[string][]float64{} // gateway read and write system calls per statement
			for round := range rounds {
				for i := range contenders {
					c := contenders[(i+round)%len(contenders)]
					g := e.gatewayOf(c)
					pid := 0
					if g != nil {
						pid = g.PID()
					} else if c.name == e.bouncer.name {
						pid = e.bouncerPG.PID(b)
					}
					// Profiles at 8 clients: R1 in both modes, R3 in the simple one.
					var profile chan struct{}
					if g != nil && clients == 8 && round == 0 && (g == e.gw || mode == "simple") {
						name := fmt.Sprintf("pgbench-S-%dc-%s-%s.pprof", clients, mode, strings.Fields(c.name)[1])
						profile = e.cpuProfile(b, g, name, secs-1)
						r.profile(filepath.Join(e.profiles, name), fmt.Sprintf("pgbench -S, %d clients, %s protocol, %s", clients, mode, c.name))
					}
					var cpu0, msgs0, evs0 float64
					var io0 map[string]int64
					if pid != 0 {
						cpu0, io0 = cpuSeconds(b, pid), procIO(b, pid)
					}
					if g != nil {
						msgs0, evs0 = groupCommitCounts(b, g)
					}
					t, l := pgbench(b, c, clients, mode, secs)
					if g != nil {
						if msgs, evs := groupCommitCounts(b, g); msgs > msgs0 {
							batch[c.name] = append(batch[c.name], (evs-evs0)/(msgs-msgs0))
						}
					}
					if pid != 0 && t > 0 {
						// pgbench -S runs one statement per transaction.
						cpu[c.name] = append(cpu[c.name], (cpuSeconds(b, pid)-cpu0)/(t*float64(secs))*1e6)
						io := procIO(b, pid)
						calls[c.name] = append(calls[c.name], float64(io["syscr"]-io0["syscr"]+io["syscw"]-io0["syscw"])/(t*float64(secs)))
					}
					if profile != nil {
						<-profile
					}
					tps[c.name] = append(tps[c.name], t)
					lat[c.name] = append(lat[c.name], l)
				}
			}
			name := fmt.Sprintf("pgbench -S, %d client(s), %s", clients, mode)
			target := ""
			if clients == 8 && mode == "simple" {
				target = ">= 0.72"
			}
			others := func(m map[string][]float64) []value {
				var vs []value
				for _, c := range contenders[1:] {
					vs = append(vs, value{c.name, median(m[c.name])})
				}
				return vs
			}
			r.add(row{section: "Postgres", metric: name + ": TPS", unit: "tps", baseline: median(tps["direct"]),
				others: others(tps), target: target, higherBetter: true, label: fmt.Sprintf("PG %dc %s", clients, mode)})
			r.add(row{section: "Postgres", metric: name + ": mean latency", unit: "ms", baseline: median(lat["direct"]),
				others: others(lat)})
			var cpuOthers []value
			for _, c := range contenders[1:] {
				cpuOthers = append(cpuOthers, value{c.name, median(cpu[c.name])})
			}
			cpuTarget := ""
			if clients == 8 && mode == "simple" {
				cpuTarget = "<= 2.0"
			}
			r.add(row{section: "Postgres", metric: name + ": gateway CPU per statement", unit: "µs",
				ratioBase: median(cpu[e.bouncer.name]), others: cpuOthers, target: cpuTarget,
				note: "user and system time of the process between client and server over the run, per statement, and its ratio to PgBouncer's; R1's includes its embedded JetStream server"})
			var callOthers []value
			for _, c := range contenders[1:] {
				callOthers = append(callOthers, value{c.name, median(calls[c.name])})
			}
			r.add(row{section: "Postgres", metric: name + ": gateway read and write system calls per statement", unit: "calls",
				ratioBase: median(calls[e.bouncer.name]), others: callOthers,
				note: "syscr + syscw of /proc/PID/io over the run, per statement; R1's embedded JetStream server is reached in process"})
			var batchOthers []value
			for _, c := range contenders[1:] {
				if len(batch[c.name]) > 0 {
					batchOthers = append(batchOthers, value{c.name, median(batch[c.name])})
				}
			}
			if len(batchOthers) > 0 {
				r.add(row{section: "Postgres", metric: name + ": recorder events per message", unit: "events", others: batchOthers,
					note: "group commit: events the recorder published over the run per message it sent (airlock_recorder_events_published_total / airlock_recorder_messages_total)"})
			}
		}
	}
}

// groupCommitCounts scrapes gateway g's group-commit counters: messages
// sent, events they carried.
func groupCommitCounts(b *testing.B, g *gateway) (msgs, evs float64) {
	b.Helper()
	resp, err := http.Get("http://" + g.MetricsAddr + "/metrics")
	if err != nil {
		b.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatalf("metrics: %v", err)
	}
	for line := range strings.Lines(string(body)) {
		name, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		switch name {
		case "airlock_recorder_messages_total":
			msgs = f
		case "airlock_recorder_events_published_total":
			evs = f
		}
	}
	return msgs, evs
}

// gatewayOf is the gateway a contender connects to, nil for none.
func (e *env) gatewayOf(t target) *gateway {
	switch t.name {
	case e.airlock.name:
		return e.gw
	case e.airlockR3.name:
		return e.gwR3
	}
	return nil
}

// benchLatency measures per-statement latency at one client, direct,
// through PgBouncer and through airlock with each recorder, interleaved in
// blocks. PgBouncer's added latency is what one more relaying process
// (a TLS leg each way, two more loopback hops) costs on this machine.
func benchLatency(b *testing.B, e *env, r *report) {
	ctx := context.Background()
	contenders := []target{e.direct, e.bouncer, e.airlock, e.airlockR3}
	conns := map[string]*pgx.Conn{}
	for _, t := range contenders {
		cfg, err := pgx.ParseConfig(t.dsn())
		if err != nil {
			b.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
		defer c.Close(ctx)
		conns[t.name] = c
	}
	samples := map[string][]time.Duration{}
	if path := os.Getenv("AIRLOCK_BENCH_TRACE"); path != "" {
		// The first blocks' runtime trace, for `go tool trace` (its
		// -pprof=sched shows where goroutines waited to run).
		traced := e.gw.trace(b, path, 3)
		defer func() { <-traced }()
	}
	waitSum, waitN := e.gw.commitWait(b)
	const blocks, per = 10, 500
	for blk := range blocks {
		for i := range contenders {
			name := contenders[(i+blk)%len(contenders)].name
			c := conns[name]
			for i := range per {
				q := fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d", 1+(blk*per+i)*97%1000000)
				start := time.Now()
				var v int
				if err := c.QueryRow(ctx, q).Scan(&v); err != nil {
					b.Fatalf("%s: %v", name, err)
				}
				samples[name] = append(samples[name], time.Since(start))
			}
		}
	}
	sum, n := e.gw.commitWait(b)
	for _, p := range []float64{50, 99} {
		x := latencyRow("Postgres", fmt.Sprintf("point select at 1 client, p%.0f latency", p), "µs", samples, p,
			[]string{e.direct.name, e.bouncer.name, e.airlock.name, e.airlockR3.name})
		if p == 50 {
			x.target, x.met = "<= 150 µs added", metPtr(true, x.added(judged) <= 150)
			x.note += fmt.Sprintf("; R1 adds %+.0f µs to PgBouncer's", x.added(judged)-x.added(e.bouncer.name))
			if n > waitN {
				x.note += fmt.Sprintf("; R1 waited %.0f µs on average for the recorder's acknowledgement", (sum-waitSum)/(n-waitN)*1e6)
			}
		}
		r.add(x)
	}
}

// metric reads one unlabelled gauge or counter from the gateway's
// metrics endpoint.
func (g *gateway) metric(b *testing.B, name string) float64 {
	return g.metrics(b, name)[0]
}

// metrics reads unlabelled gauges or counters from one answer of the
// gateway's metrics endpoint, in the order named.
func (g *gateway) metrics(b *testing.B, names ...string) []float64 {
	resp, err := http.Get("http://" + g.MetricsAddr + "/metrics")
	if err != nil {
		b.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	vals := make([]float64, len(names))
	found := 0
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if i := slices.Index(names, name); ok && i >= 0 {
			vals[i], _ = strconv.ParseFloat(v, 64)
			found++
		}
	}
	if found != len(names) {
		b.Fatalf("metrics: not all of %v", names)
	}
	return vals
}

// gatewayMemory is where a gateway's memory sits: resident (KiB), and in
// bytes the Go heap in use, goroutine stacks, freed heap the runtime has
// not yet returned to the system, and the rest of what it took from the
// system (span and GC metadata, buffers).
type gatewayMemory struct {
	residentKiB                int64
	heap, stacks, kept, others float64
}

// memory reads gateway g's memory, after whatever collection the caller
// made.
func (g *gateway) memory(b *testing.B) gatewayMemory {
	m := g.metrics(b, "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes",
		"go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_other_sys_bytes")
	return gatewayMemory{residentKiB: procKB(b, g.PID(), "VmRSS"), heap: m[0], stacks: m[1], kept: m[2] - m[3], others: m[4]}
}

// waitNoSessions waits, up to 30 s, until gateway g holds no live session
// (airlock_sessions, summed over its labels).
func (g *gateway) waitNoSessions(b *testing.B) {
	live := -1.0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + g.MetricsAddr + "/metrics")
		if err != nil {
			b.Fatalf("metrics: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		live = 0
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "airlock_sessions{") {
				f, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				live += f
			}
		}
		if live == 0 {
			return
		}
	}
	b.Fatalf("the gateway still holds %.0f sessions 30 s after their clients closed", live)
}

// commitWait reads the gateway's airlock_recorder_commit_seconds sum and
// count from its metrics endpoint.
func (g *gateway) commitWait(b *testing.B) (sum, count float64) {
	m := g.metrics(b, "airlock_recorder_commit_seconds_sum", "airlock_recorder_commit_seconds_count")
	return m[0], m[1]
}

// latencyRow is the p-th percentile of each contender's samples in unit
// (µs or ms), the first contender the baseline, with what the others add
// to it.
func latencyRow(section, metric, unit string, samples map[string][]time.Duration, p float64, contenders []string) row {
	scale := map[string]time.Duration{"µs": time.Microsecond, "ms": time.Millisecond}[unit]
	in := func(d time.Duration) float64 { return float64(d) / float64(scale) }
	base := percentile(samples[contenders[0]], p)
	x := row{section: section, metric: metric, unit: unit, baseline: in(base)}
	var added []string
	for _, c := range contenders[1:] {
		v := percentile(samples[c], p)
		x.others = append(x.others, value{c, in(v)})
		added = append(added, fmt.Sprintf("%s %+.*f %s", strings.TrimPrefix(c, "airlock "), map[string]int{"µs": 0, "ms": 2}[unit], in(v-base), unit))
	}
	x.note = "added: " + strings.Join(added, ", ")
	return x
}

// added is what contender name adds to the baseline of x.
func (x row) added(name string) float64 {
	for _, o := range x.others {
		if o.name == name {
			return o.v - x.baseline
		}
	}
	return 0
}

// benchLargeResult reads about 1 GiB directly, through PgBouncer and
// through airlock, and the gateway's peak memory growth while it
// streams. PgBouncer, TLS on both legs like airlock, is the same run's
// bound on what relaying costs: on a machine whose cores the direct run
// keeps busy, a relay's decryption and encryption of every byte share
// them, whoever relays. Its CPU per MB is the cores-independent figure.
func benchLargeResult(b *testing.B, e *env, r *report) {
	const rows, width = 1 << 20, 1024
	q := fmt.Sprintf("select repeat('x', %d) from generate_series(1, %d)", width, rows)
	mbps := map[string][]float64{}
	cpu := map[string][]float64{} // relay CPU per MB, ms
	var growth float64
	contenders := []target{e.direct, e.bouncer, e.airlock}
	for round := range 2 {
		for i := range contenders {
			t := contenders[(i+round)%len(contenders)]
			var peak func() float64
			var profile chan struct{}
			pid := 0
			switch t.name {
			case e.airlock.name:
				pid = e.gw.PID()
				if round == 0 {
					peak = e.gw.watchPeak(b)
				} else {
					const name = "pg-1gib-result-R1.pprof"
					profile = e.cpuProfile(b, e.gw, name, 1)
					r.profile(filepath.Join(e.profiles, name), "1 GiB result read through airlock R1 (the first second)")
				}
			case e.bouncer.name:
				pid = e.bouncerPG.PID(b)
			}
			ctx := context.Background()
			c, err := pgconn.Connect(ctx, t.dsn())
			if err != nil {
				b.Fatal(err)
			}
			meter := startBulk(b, pid)
			var n int64
			res := c.Exec(ctx, q)
			for res.NextResult() {
				rr := res.ResultReader()
				for rr.NextRow() {
					n += int64(len(rr.Values()[0]))
				}
				if _, err := rr.Close(); err != nil {
					b.Fatal(err)
				}
			}
			if err := res.Close(); err != nil {
				b.Fatal(err)
			}
			rate, ms := meter.done("1 GiB result, "+t.name, n)
			if pid != 0 {
				cpu[t.name] = append(cpu[t.name], ms)
			}
			c.Close(ctx)
			if n != rows*width {
				b.Fatalf("%s: read %d bytes", t.name, n)
			}
			mbps[t.name] = append(mbps[t.name], rate)
			if peak != nil {
				growth = peak()
			}
			if profile != nil {
				<-profile
			}
		}
	}
	r.add(row{section: "Postgres", metric: "1 GiB result, throughput", unit: "MB/s", baseline: median(mbps["direct"]),
		others: []value{{e.bouncer.name, median(mbps[e.bouncer.name])}, {e.airlock.name, median(mbps[e.airlock.name])}},
		target: ">= 0.9", higherBetter: true, label: "PG 1 GiB result"})
	r.add(row{section: "Postgres", metric: "1 GiB result, relay CPU per MB", unit: "ms",
		ratioBase: median(cpu[e.bouncer.name]),
		others:    []value{{e.bouncer.name, median(cpu[e.bouncer.name])}, {e.airlock.name, median(cpu[e.airlock.name])}},
		note:      "user and system time of the process between client and server over the read, per MB of result, and its ratio to PgBouncer's"})
	r.add(row{section: "Postgres", metric: "1 GiB result, gateway peak memory growth", unit: "MB", baseline: 0,
		others: []value{{e.airlock.name, growth}}, target: "< 50 MB", met: metPtr(true, growth < 50)})
}

// bulkMeter measures one bulk read: its throughput, how busy the machine
// was and, given the pid of the process relaying it, that process's CPU
// per MB and its read and write system calls.
type bulkMeter struct {
	b           testing.TB
	pid         int
	start       time.Time
	busy0, cpu0 float64
	io0         map[string]int64
}

// startBulk starts measuring a read relayed by pid (0: none).
func startBulk(b testing.TB, pid int) *bulkMeter {
	m := &bulkMeter{b: b, pid: pid, start: time.Now(), busy0: machineBusy(b)}
	if pid != 0 {
		m.cpu0, m.io0 = cpuSeconds(b, pid), procIO(b, pid)
	}
	return m
}

// done ends the read of n bytes, logs what was measured under what, and
// returns the throughput in MB/s and the relay's CPU per MB in ms (0
// without a relay).
func (m *bulkMeter) done(what string, n int64) (mbps, cpuMS float64) {
	el := time.Since(m.start)
	mbps = float64(n) / el.Seconds() / 1e6
	line := fmt.Sprintf("%s: %.0f MB/s, machine busy %.2f cores", what, mbps, (machineBusy(m.b)-m.busy0)/el.Seconds())
	if m.pid != 0 {
		cpuMS = (cpuSeconds(m.b, m.pid) - m.cpu0) / (float64(n) / 1e6) * 1e3
		io := procIO(m.b, m.pid)
		line += fmt.Sprintf(", relay CPU %.3f ms/MB, read/write syscalls %d/%d", cpuMS, io["syscr"]-m.io0["syscr"], io["syscw"]-m.io0["syscw"])
	}
	m.b.Log(line)
	return mbps, cpuMS
}

// watchPeak resets the gateway's peak resident memory (VmHWM) to what it
// holds now; the function it returns reads how far the peak rose since,
// in MB.
func (g *gateway) watchPeak(b testing.TB) func() float64 {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", g.PID()), []byte("5"), 0)
	before := procKB(b, g.PID(), "VmRSS")
	return func() float64 { return float64(procKB(b, g.PID(), "VmHWM")-before) / 1024 }
}

// benchConnect times connect-and-close: TLS, authentication, and through
// airlock the token check, the upstream login and the recorded start.
func benchConnect(b *testing.B, e *env, r *report) {
	const n = 50
	ms := map[string][]float64{}
	ctx := context.Background()
	contenders := []target{e.direct, e.airlock, e.airlockR3}
	for i := range n {
		for j := range contenders {
			t := contenders[(i+j)%len(contenders)]
			start := time.Now()
			c, err := pgconn.Connect(ctx, t.dsn())
			if err != nil {
				b.Fatalf("%s: %v", t.name, err)
			}
			ms[t.name] = append(ms[t.name], float64(time.Since(start).Microseconds())/1000)
			c.Close(ctx)
		}
	}
	r.add(row{section: "Postgres", metric: "new connection (TLS + auth + ready)", unit: "ms", baseline: median(ms["direct"]),
		others: []value{{e.airlock.name, median(ms[e.airlock.name])}, {e.airlockR3.name, median(ms[e.airlockR3.name])}}})
}

// benchIdle opens n idle sessions through airlock (in front of a
// transaction-pooling PgBouncer, so the database is not the limit) and
// reports the gateway's memory per session.
func benchIdle(b *testing.B, e *env, r *report, n int) {
	ctx := context.Background()
	conns := make([]*pgconn.PgConn, n)
	idleMemory(b, e, r, "Postgres", e.idle.name, n, "idle-sessions-heap.pprof", func(i int) error {
		c, err := pgconn.Connect(ctx, e.idle.dsn())
		conns[i] = c
		return err
	})
	for _, c := range conns {
		c.Close(ctx)
	}
}

// idleMySQLSessions is how many idle MySQL sessions benchIdleMySQL
// holds: each is a MariaDB connection (and thread) too.
const idleMySQLSessions = 1000

// benchIdleMySQL is benchIdle for MySQL sessions, straight to MariaDB.
func benchIdleMySQL(b *testing.B, e *env, r *report, n int) {
	ctx := context.Background()
	db := mysqlDB(b, e.my.airlock, n)
	defer db.Close()
	conns := make([]*sql.Conn, n)
	idleMemory(b, e, r, "MySQL", judged, n, "idle-mysql-sessions-heap.pprof", func(i int) error {
		c, err := db.Conn(ctx)
		if err == nil {
			err = c.PingContext(ctx)
		}
		conns[i] = c
		return err
	})
	for _, c := range conns {
		c.Close()
	}
}

// idleMemory opens n sessions of section's protocol through the judged
// gateway (named who in the report) with open(i), 32 at a time, and
// reports the memory each holds once they are idle: the larger of the
// gateway's resident growth and its Go heap in use plus goroutine
// stacks, per session. It saves the gateway's heap profile as profile.
func idleMemory(b *testing.B, e *env, r *report, section, who string, n int, profile string, open func(i int) error) {
	// Sessions an earlier part closed end in the gateway a little later:
	// what they free must not count against these.
	e.gw.waitNoSessions(b)
	e.gw.collect(b)
	base := strings.TrimSuffix(profile, ".pprof") + "-base.pprof"
	e.heapProfile(b, e.gw, base)
	m0 := e.gw.memory(b)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := open(i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("opening %d sessions: %v", n, err)
	}
	// What the sessions hold, not the garbage their handshakes left.
	e.gw.collect(b)
	m1 := e.gw.memory(b)
	b.Logf("%s idle sessions: resident %d -> %d KiB; heap in use %.0f -> %.0f KiB; stacks %.0f -> %.0f KiB; freed heap not yet returned %.0f -> %.0f KiB; runtime's other memory %.0f -> %.0f KiB",
		section, m0.residentKiB, m1.residentKiB, m0.heap/1024, m1.heap/1024, m0.stacks/1024, m1.stacks/1024, m0.kept/1024, m1.kept/1024, m0.others/1024, m1.others/1024)
	e.heapProfile(b, e.gw, profile)
	r.heapProfile(filepath.Join(e.profiles, profile), filepath.Join(e.profiles, base),
		fmt.Sprintf("What %d idle %s sessions hold in the gateway's heap: `go tool pprof -sample_index=inuse_space -diff_base docs/profiles/%s docs/profiles/%s`", n, section, base, profile))
	// Resident growth undercounts when the sessions reuse memory the
	// gateway had freed but kept (the GC headroom, earlier benchmarks'
	// peaks); the Go heap and stacks they hold do not depend on that. The
	// judged figure is the larger of the two.
	rss := float64(m1.residentKiB-m0.residentKiB) / float64(n)
	heap, stack := (m1.heap-m0.heap)/1024/float64(n), (m1.stacks-m0.stacks)/1024/float64(n)
	perKiB := max(rss, heap+stack)
	r.add(row{section: section, metric: fmt.Sprintf("idle session memory (%d sessions)", n), unit: "KiB/session", baseline: 0,
		others: []value{{who, perKiB}}, target: "<= 48 KiB", met: metPtr(true, perKiB <= 48), // issue 20
		note: fmt.Sprintf("the larger of resident growth, %.1f KiB, and Go heap in use plus goroutine stacks, %.1f + %.1f KiB", rss, heap, stack)})
}

// collect has gateway g run two garbage collections (the heap profile
// endpoint runs one first when asked with gc=1), then gives the runtime a
// moment to return freed pages. Two, because what sync.Pools hold (the
// buffers idle sessions gave back) is freed only by the second collection
// after it was put, as a running gateway's periodic collections would.
func (g *gateway) collect(b *testing.B) {
	for range 2 {
		resp, err := http.Get("http://" + g.MetricsAddr + "/debug/pprof/heap?gc=1")
		if err != nil {
			b.Fatalf("gc: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	time.Sleep(2 * time.Second)
}

// heapProfile saves gateway g's heap profile as name, beside the CPU
// profiles.
func (e *env) heapProfile(b *testing.B, g *gateway, name string) {
	if err := g.savePprof("heap", filepath.Join(e.profiles, name)); err != nil {
		b.Fatalf("heap profile: %v", err)
	}
}

// cpuProfile fetches a CPU profile of gateway g for secs seconds into
// docs/profiles/name; the channel closes when it is written.
func (e *env) cpuProfile(b *testing.B, g *gateway, name string, secs int) chan struct{} {
	done := g.savePprofAsync(b, fmt.Sprintf("profile?seconds=%d", max(secs, 1)), filepath.Join(e.profiles, name))
	time.Sleep(200 * time.Millisecond)
	return done
}

// trace fetches a runtime trace of gateway g for secs seconds into path;
// the channel closes when it is written.
func (g *gateway) trace(b *testing.B, path string, secs int) chan struct{} {
	return g.savePprofAsync(b, fmt.Sprintf("trace?seconds=%d", secs), path)
}

// savePprof writes what gateway g's /debug/pprof/<query> answers to path.
func (g *gateway) savePprof(query, path string) error {
	resp, err := http.Get("http://" + g.MetricsAddr + "/debug/pprof/" + query)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/debug/pprof/%s: %s", query, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// savePprofAsync is savePprof in the background, for a profile that
// covers what runs meanwhile; a failure is logged, and the channel closes
// when it is done.
func (g *gateway) savePprofAsync(b *testing.B, query, path string) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.savePprof(query, path); err != nil {
			b.Logf("%s: %v", filepath.Base(path), err)
		}
	}()
	return done
}

// cpuSeconds is the CPU time, user and system, that process pid has used.
func cpuSeconds(b testing.TB, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3 of proc(5), utime and stime 14 and 15,
	// in clock ticks of 1/100 s (USER_HZ).
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return (utime + stime) / 100
}

// machineBusy is the CPU time, in seconds, all CPUs of the machine have
// spent not idle since boot (/proc/stat).
func machineBusy(b testing.TB) float64 {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i > 7 {
			continue // idle, iowait, guest (counted in user)
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / 100
}

// procIO is /proc/PID/io: the process's read and write system calls
// (syscr, syscw) and bytes.
func procIO(b testing.TB, pid int) map[string]int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k], _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return out
}

func raiseFileLimit(b *testing.B) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func procKB(b testing.TB, pid int, field string) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	b.Fatalf("no %s for pid %d", field, pid)
	return 0
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func metPtr(applies, ok bool) *bool {
	if !applies {
		return nil
	}
	return &ok
}

// envInts is the comma-separated integers of $name, or def.
func envInts(name string, def []int) []int {
	var out []int
	for _, w := range envWords(name, nil) {
		if v, err := strconv.Atoi(w); err == nil && v > 0 {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return def
	}
	return out
}

// envWords is the comma-separated words of $name, or def.
func envWords(name string, def []string) []string {
	w := strings.FieldsFunc(os.Getenv(name), func(r rune) bool { return r == ',' || r == ' ' })
	if len(w) == 0 {
		return def
	}
	return w
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
