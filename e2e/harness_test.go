// Package e2e runs the airlock binary as a user runs it, against real
// PostgreSQL, a real NATS JetStream server and the real psql client.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/testenv"
)

// gateway is a running `airlock gateway` process (testenv.Gateway) with
// the upstreams and recorder this package's tests share.
type gateway struct {
	*testenv.Gateway
	t    testing.TB
	pg   *testenv.Postgres
	nats *testenv.NATS
	my   *testenv.MariaDB // with gatewayOptions.MySQL
	ssh  *sshSide         // with gatewayOptions.SSH (ssh_test.go)
	// The recorder settings a ReplicaOf shares.
	natsURL   string // recorder.nats_url
	natsCreds string // recorder.credentials_file
	replicas  int    // recorder.replicas
}

// gatewayOptions shape a test's gateway.
type gatewayOptions struct {
	// PublishTimeout is recorder.publish_timeout (default 1s).
	PublishTimeout time.Duration
	// ReplicaOf makes this gateway a second replica of another: same
	// upstream, same NATS, same identities and tokens.
	ReplicaOf *gateway
	// MySQL also starts a MariaDB server with testenv.SampleSchemaMySQL,
	// the MySQL listener and its resource shop-mysql (database app).
	MySQL bool
	// SSH also starts an OpenSSH sshd, the SSH listener and its resource
	// box; agent-1 gets a registered public key (see ssh_test.go).
	SSH bool
	// NATSURL records to an external NATS (e.g. a testenv.NATSCluster's
	// URL) instead of a NATS server of the gateway's own; NATSCredentials
	// is then recorder.credentials_file and Replicas recorder.replicas.
	NATSURL         string
	NATSCredentials string
	Replicas        int
	// PostgresListen is listen.postgres; empty: a free loopback port.
	PostgresListen string
	// Resources is appended to the resources list (YAML items indented
	// "  - name: ..."); Config is appended at the top level (e.g. an aws:
	// block); Env is added to the gateway's environment (later entries
	// win).
	Resources string
	Config    string
	Env       []string
	// Listen is added to the listen block (lines indented two spaces).
	Listen string
	// Recorder is added to the recorder block (lines indented two
	// spaces), e.g. "  start_timeout: 5s\n".
	Recorder string
	// NoWait returns as soon as the process runs, without waiting until
	// it is ready: for tests of the start itself (see WaitExit).
	NoWait bool
	// EmbeddedNATS records to the gateway's embedded JetStream server
	// (recorder.nats_url empty) instead of a nats-server process.
	EmbeddedNATS bool
}

// startGateway starts the upstreams o asks for and a gateway in front of
// them, with the identities agent-1, agent-2 (agents), alice (approver)
// and rita (reviewer) and the resource demo-pg (the sample schema).
func startGateway(t testing.TB, o gatewayOptions) *gateway {
	t.Helper()
	if o.PublishTimeout == 0 {
		o.PublishTimeout = time.Second
	}
	testenv.RequireBinary(t, "psql", "postgresql-client")
	g := &gateway{t: t}
	natsURL := o.NATSURL
	if p := o.ReplicaOf; p != nil {
		g.pg, g.nats, natsURL = p.pg, p.nats, p.natsURL
		o.NATSCredentials, o.Replicas = p.natsCreds, p.replicas
	} else {
		g.pg = testenv.StartPostgres(t, testenv.PostgresOptions{Database: "app", InitSQL: testenv.SampleSchema})
		if natsURL == "" && !o.EmbeddedNATS {
			g.nats = testenv.StartNATS(t, testenv.NATSOptions{})
			natsURL = g.nats.URL
		}
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	g.natsURL, g.natsCreds, g.replicas = natsURL, o.NATSCredentials, o.Replicas

	ids := []testenv.GatewayIdentity{
		{Name: "agent-1", Role: "agent"}, {Name: "agent-2", Role: "agent"},
		{Name: "alice", Role: "approver"}, {Name: "rita", Role: "reviewer"},
	}
	if p := o.ReplicaOf; p != nil {
		for i := range ids {
			ids[i].Token = p.Tokens[ids[i].Name]
		}
	}
	res := []testenv.GatewayResource{{Name: "demo-pg", Protocol: "postgres", Address: g.pg.Addr(), Database: g.pg.Database,
		User: g.pg.User, PasswordEnv: "DEMO_PG_PASSWORD", Password: g.pg.Password}}
	if o.MySQL {
		if p := o.ReplicaOf; p != nil {
			g.my = p.my
		} else {
			g.my = testenv.StartMariaDB(t, testenv.MariaDBOptions{Database: "app", InitSQL: testenv.SampleSchemaMySQL})
		}
		res = append(res, testenv.GatewayResource{Name: "shop-mysql", Protocol: "mysql", Address: g.my.Addr(), Database: g.my.Database,
			User: g.my.User, PasswordEnv: "SHOP_MYSQL_PASSWORD", Password: g.my.Password})
	}
	if o.SSH {
		var agentKey string
		g.ssh, agentKey, res = newSSHSide(t, res)
		ids[0].SSHPublicKeys = []string{agentKey}
	}
	signingKey := ""
	if p := o.ReplicaOf; p != nil {
		// Replicas sharing one stream sign with one key, so a reviewer
		// trusts one published key.
		signingKey = filepath.Join(p.DataDir, "signing.key")
	}
	g.Gateway = testenv.StartGateway(t, testenv.GatewayOptions{
		Identities:      ids,
		Resources:       res,
		MySQL:           o.MySQL,
		SSH:             o.SSH,
		PostgresListen:  o.PostgresListen,
		NATSURL:         natsURL,
		NATSCredentials: o.NATSCredentials,
		Replicas:        o.Replicas,
		PublishTimeout:  o.PublishTimeout,
		SigningKeyFile:  signingKey,
		ExtraListen:     o.Listen,
		ExtraRecorder:   o.Recorder,
		ExtraResources:  o.Resources,
		ExtraConfig:     o.Config,
		Env:             o.Env,
		NoWait:          o.NoWait,
	})
	if g.ssh != nil {
		g.ssh.listening(g.Gateway)
	}
	return g
}

// psql runs the real psql against the gateway as user with password, on
// the given database, feeding script on stdin. It returns everything psql
// printed (stdout and stderr interleaved) and its error.
func (g *gateway) psql(user, password, dbname, script string, extra ...string) (string, error) {
	g.t.Helper()
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	conn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=require connect_timeout=10", host, port, user, dbname)
	args := append([]string{conn, "-X", "-v", "VERBOSITY=verbose"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=10")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
