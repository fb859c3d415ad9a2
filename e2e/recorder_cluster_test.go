package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/testenv"
)

// TestRecorderClusterNodeLoss records to a 3-node JetStream cluster (the
// users and permissions of deploy/nats, stream replicas 3) while several
// sessions insert rows as fast as they can. One node is killed with
// SIGKILL, brought back, then another. Afterwards the rows the upstream
// holds are exactly the rows that recorded, executed INSERT results
// account for: nothing ran unrecorded and nothing recorded was lost. And
// every session verifies.
func TestRecorderClusterNodeLoss(t *testing.T) {
	u := testenv.NewNATSUsers(t)
	c := testenv.StartDeployNATSCluster(t, u)
	g := startGateway(t, gatewayOptions{
		NATSURL: c.URL, NATSCredentials: u.SeedFiles["gateway"], Replicas: 3,
		PublishTimeout: 2 * time.Second,
	})
	g.pg.Exec(t, "create table load (id bigserial primary key, worker int not null, n int not null)")
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-12: load under node loss", "--access", "write")

	// The test's own view of the stream, as the operator.
	nc, err := nats.Connect(c.URL, u.Option(t, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	var (
		ok, refused atomic.Int64
		stop        = make(chan struct{})
		wg          sync.WaitGroup
	)
	const workers = 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half the workers use the simple protocol, half the extended
			// one with parameters.
			simple := w%2 == 0
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if conn == nil || conn.IsClosed() {
					conn = loadConn(g, iss.Token, simple)
					if conn == nil {
						time.Sleep(200 * time.Millisecond)
						continue
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				if simple {
					_, err = conn.Exec(ctx, fmt.Sprintf("insert into load (worker, n) values (%d, %d)", w, n))
				} else {
					_, err = conn.Exec(ctx, "insert into load (worker, n) values ($1, $2)", w, n)
				}
				cancel()
				if err != nil {
					refused.Add(1)
					if !strings.Contains(err.Error(), "airlock") {
						conn.Close(context.Background())
						conn = nil
					}
					continue
				}
				ok.Add(1)
			}
		}()
	}
	// resumed waits until inserts succeed again and returns how long that
	// took: while a node's loss is felt (a stream or the grant bucket
	// electing a leader, the gateway reconnecting) statements are refused.
	resumed := func() time.Duration {
		t.Helper()
		start, before := time.Now(), ok.Load()
		for ok.Load() < before+20 {
			if time.Since(start) > 45*time.Second {
				t.Fatalf("no inserts for %s (refused so far: %d)", time.Since(start), refused.Load())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	steady := func(d time.Duration) {
		t.Helper()
		resumed()
		time.Sleep(d)
	}

	steady(2 * time.Second)
	killed := map[int]bool{}
	for round := range 2 {
		// First the stream's leader, then a node not killed before.
		victim := -1
		if round == 0 {
			victim = streamLeader(t, c, js)
		}
		for i := range c.Nodes {
			if victim < 0 && !killed[i] {
				victim = i
			}
		}
		killed[victim] = true
		okBefore, refBefore := ok.Load(), refused.Load()
		c.Kill(t, victim)
		// The two left carry the load once the loss has been dealt with.
		time.Sleep(500 * time.Millisecond)
		gap := resumed()
		time.Sleep(3 * time.Second)
		t.Logf("round %d: node %s killed: inserts resumed within %s; %d inserts, %d refused while it was down",
			round+1, c.Nodes[victim].Name, (gap + 500*time.Millisecond).Round(10*time.Millisecond), ok.Load()-okBefore, refused.Load()-refBefore)
		c.Start(t, victim)
		c.WaitStreamCurrent(t, js, "AIRLOCK_EVENTS", time.Minute)
		steady(2 * time.Second)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d inserts acknowledged to the clients, %d refused", ok.Load(), refused.Load())

	// Every session has ended (the workers closed their connections),
	// and what the record says ran is what the upstream holds.
	checkInsertsRecorded(t, g, js, ok.Load())
}

// loadConn connects one load worker; nil when the gateway refuses (the
// recorder is failing over).
func loadConn(g *gateway, token string, simple bool) *pgx.Conn {
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=agent-1 password=%s dbname=demo-pg sslmode=require connect_timeout=10", host, port, token))
	if err != nil {
		return nil
	}
	if simple {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil
	}
	return conn
}

// streamLeader is the index of the node leading the events stream.
func streamLeader(t *testing.T, c *testenv.NATSCluster, js jetstream.JetStream) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "AIRLOCK_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if ci := st.CachedInfo().Cluster; ci != nil {
		for i, n := range c.Nodes {
			if n.Name == ci.Leader {
				return i
			}
		}
	}
	t.Fatalf("no leader for the events stream")
	return -1
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
