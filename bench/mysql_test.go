package bench

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/airlockhq/airlock/testenv"
)

// accountsRows is the size of bench_accounts, the MySQL point-select
// table: small enough for MariaDB's buffer pool, so both contenders read
// from memory.
const accountsRows = 100_000

// mysqlEnv is MariaDB directly and through airlock R1.
type mysqlEnv struct {
	direct, airlock target
}

// startMariaDB starts MariaDB with bench_accounts (aid, abalance, filler,
// the shape of pgbench_accounts) and returns it with its gateway resource.
func startMariaDB(b testing.TB) (*testenv.MariaDB, testenv.GatewayResource) {
	b.Helper()
	// Connections enough for the idle-session count (benchIdleMySQL).
	my := testenv.StartMariaDB(b, testenv.MariaDBOptions{Database: "app", Args: []string{fmt.Sprintf("--max-connections=%d", idleMySQLSessions+100)}})
	// max_allowed_packet: MariaDB takes the large statements of
	// benchLargeStatements (testenv starts it with 64M).
	my.Exec(b, fmt.Sprintf(`set global max_allowed_packet = 1073741824;
set max_recursive_iterations = %[1]d;
create table bench_accounts (aid int primary key, abalance int not null, filler char(84) not null);
insert into bench_accounts
  with recursive s (n) as (select 1 union all select n + 1 from s where n < %[1]d)
  select n, 0, '' from s`, accountsRows))
	return my, testenv.GatewayResource{Name: "bench-mysql", Protocol: "mysql", Address: my.Addr(), Database: my.Database, User: my.User,
		PasswordEnv: "BENCH_MYSQL_PASSWORD", Password: my.Password}
}

func newMySQLEnv(my *testenv.MariaDB, g *gateway, token string) mysqlEnv {
	return mysqlEnv{
		direct:  target{"direct", my.Addr(), my.User, my.Password, my.Database},
		airlock: target{"airlock R1", g.MySQLAddr, "agent-1", token, "bench-mysql"},
	}
}

// mysqlDB opens a go-sql-driver/mysql pool of up to conns connections to
// t over TLS (the gateway requires it; MariaDB gets the same for a fair
// comparison), with real server-side prepared statements.
func mysqlDB(b testing.TB, t target, conns int) *sql.DB {
	b.Helper()
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = t.user, t.password, "tcp", t.addr, t.db
	c.TLSConfig = "skip-verify"
	c.Timeout = 10 * time.Second
	c.InterpolateParams = false
	conn, err := mysql.NewConnector(c)
	if err != nil {
		b.Fatal(err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return db
}

// mysqlLoop runs point selects on conns connections to t for secs seconds,
// as COM_QUERY text or as executions of a statement each connection
// prepared once, and returns the queries per second and each query's
// latency. Connecting is not timed, as pgbench's "without initial
// connection time".
func mysqlLoop(b *testing.B, t target, conns int, prepared bool, secs int) (qps float64, lat []time.Duration) {
	ctx := context.Background()
	db := mysqlDB(b, t, conns)
	defer db.Close()
	type worker struct {
		conn *sql.Conn
		stmt *sql.Stmt
		n    int
		lat  []time.Duration
	}
	ws := make([]*worker, conns)
	for i := range ws {
		c, err := db.Conn(ctx)
		if err != nil {
			b.Fatalf("mysql %s: %v", t.name, err)
		}
		defer c.Close()
		w := &worker{conn: c}
		if prepared {
			if w.stmt, err = c.PrepareContext(ctx, "SELECT abalance FROM bench_accounts WHERE aid = ?"); err != nil {
				b.Fatalf("mysql %s: prepare: %v", t.name, err)
			}
			defer w.stmt.Close()
		}
		ws[i] = w
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	start := time.Now()
	deadline := start.Add(time.Duration(secs) * time.Second)
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var v int
			for aid := 1 + i*7919%accountsRows; ; aid = (aid+96)%accountsRows + 1 {
				q := time.Now()
				if !q.Before(deadline) {
					return
				}
				var err error
				if prepared {
					err = w.stmt.QueryRowContext(ctx, aid).Scan(&v)
				} else {
					err = w.conn.QueryRowContext(ctx, "SELECT abalance FROM bench_accounts WHERE aid = "+strconv.Itoa(aid)).Scan(&v)
				}
				if err != nil {
					errs <- err
					return
				}
				w.lat = append(w.lat, time.Since(q))
				w.n++
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("mysql point select against %s: %v", t.name, err)
	}
	n := 0
	for _, w := range ws {
		n += w.n
		lat = append(lat, w.lat...)
	}
	return float64(n) / elapsed.Seconds(), lat
}

// benchMySQLPointSelect is pgbench -S's loop for MySQL: point selects by
// primary key at 1 and 8 connections, text and prepared, MariaDB directly
// and through airlock, alternating which goes first each round.
func benchMySQLPointSelect(b *testing.B, e *env, r *report, rounds, secs int) {
	contenders := []target{e.my.direct, e.my.airlock}
	for _, conns := range []int{1, 8} {
		for _, mode := range []string{"text", "prepared"} {
			qps := map[string][]float64{}
			lat := map[string][]time.Duration{}
			for round := range rounds {
				for i := range contenders {
					c := contenders[(i+round)%len(contenders)]
					var profile chan struct{}
					if c.name == judged && conns == 8 && round == 0 {
						name := fmt.Sprintf("mysql-point-select-%dc-%s.pprof", conns, mode)
						profile = e.cpuProfile(b, e.gw, name, secs-1)
						r.profile(filepath.Join(e.profiles, name), fmt.Sprintf("MySQL point selects, %d connections, %s protocol, airlock R1", conns, mode))
					}
					q, l := mysqlLoop(b, c, conns, mode == "prepared", secs)
					if profile != nil {
						<-profile
					}
					qps[c.name] = append(qps[c.name], q)
					lat[c.name] = append(lat[c.name], l...)
				}
			}
			name := fmt.Sprintf("point select, %d connection(s), %s", conns, mode)
			r.add(row{section: "MySQL", metric: name + ": QPS", unit: "qps", baseline: median(qps["direct"]),
				others: []value{{judged, median(qps[judged])}}, higherBetter: true, label: fmt.Sprintf("MySQL %dc %s", conns, mode)})
			if conns == 1 {
				r.add(latencyRow("MySQL", name+": p50 latency", "µs", lat, 50, []string{"direct", judged}))
			}
		}
	}
}

// benchMySQLLargeResult reads about 1 GiB (1024 × 1024 rows of 1 KiB, a
// join of bench_accounts with itself) directly and through airlock, and
// the gateway's peak memory growth while it streams.
func benchMySQLLargeResult(b *testing.B, e *env, r *report) {
	const side, width = 1024, 1024
	q := fmt.Sprintf("SELECT REPEAT('x', %d) FROM bench_accounts a JOIN bench_accounts b WHERE a.aid <= %d AND b.aid <= %d", width, side, side)
	ctx := context.Background()
	mbps := map[string][]float64{}
	var cpu []float64 // relay CPU per MB, ms
	var growth float64
	contenders := []target{e.my.direct, e.my.airlock}
	for round := range 3 {
		for i := range contenders {
			t := contenders[(i+round)%len(contenders)]
			db := mysqlDB(b, t, 1)
			conn, err := db.Conn(ctx)
			if err != nil {
				b.Fatalf("mysql %s: %v", t.name, err)
			}
			var peak func() float64
			var profile chan struct{}
			if t.name == judged {
				switch round {
				case 0:
					peak = e.gw.watchPeak(b)
				case 1:
					const name = "mysql-1gib-result-R1.pprof"
					profile = e.cpuProfile(b, e.gw, name, 3)
					r.profile(filepath.Join(e.profiles, name), "1 GiB MySQL result read through airlock R1 (its first 3 seconds)")
				}
			}
			pid := 0
			if t.name == judged {
				pid = e.gw.PID()
			}
			meter := startBulk(b, pid)
			rows, err := conn.QueryContext(ctx, q)
			if err != nil {
				b.Fatalf("mysql %s: %v", t.name, err)
			}
			var n int64
			var v sql.RawBytes
			for rows.Next() {
				if err := rows.Scan(&v); err != nil {
					b.Fatal(err)
				}
				n += int64(len(v))
			}
			if err := rows.Err(); err != nil {
				b.Fatalf("mysql %s: %v", t.name, err)
			}
			rows.Close()
			rate, ms := meter.done("1 GiB MySQL result, "+t.name, n)
			if pid != 0 {
				cpu = append(cpu, ms)
			}
			conn.Close()
			db.Close()
			if n != side*side*width {
				b.Fatalf("mysql %s: read %d bytes, want %d", t.name, n, side*side*width)
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
	r.add(row{section: "MySQL", metric: "1 GiB result, throughput", unit: "MB/s", baseline: median(mbps["direct"]),
		others: []value{{judged, median(mbps[judged])}}, target: ">= 0.9", higherBetter: true, label: "MySQL 1 GiB result"})
	r.add(row{section: "MySQL", metric: "1 GiB result, relay CPU per MB", unit: "ms", baseline: 0,
		others: []value{{judged, median(cpu)}},
		note:   "user and system time of the gateway over the read, per MB of result"})
	r.add(row{section: "MySQL", metric: "1 GiB result, gateway peak memory growth", unit: "MB", baseline: 0,
		others: []value{{judged, growth}}, target: "< 50 MB", met: metPtr(true, growth < 50)})
}
