package bench

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/testenv"
)

// gateway is an `airlock gateway` process for the benchmarks, with the
// agent agent-1 and the approver alice.
type gateway struct {
	*testenv.Gateway
	// agentKey is agent-1's registered private key file, with an SSH
	// resource.
	agentKey string
}

// startGateway starts the gateway o describes, with the identities the
// benchmarks use, its metrics listener (and pprof) open, and logging only
// warnings, as a production gateway under load would.
func startGateway(b testing.TB, o testenv.GatewayOptions) *gateway {
	b.Helper()
	g := &gateway{}
	agent := testenv.GatewayIdentity{Name: "agent-1", Role: "agent"}
	for _, r := range o.Resources {
		if r.Protocol == "ssh" {
			g.agentKey = filepath.Join(b.TempDir(), "agent-1_ed25519")
			agent.SSHPublicKeys = []string{strings.TrimSpace(testenv.NewSSHKey(b, g.agentKey))}
			break
		}
	}
	o.Identities = []testenv.GatewayIdentity{agent, {Name: "alice", Role: "approver"}}
	o.Metrics, o.LogLevel = true, "warn"
	g.Gateway = testenv.StartGateway(b, o)
	return g
}

// grant makes a pre-approved grant for agent-1 and returns its token.
func (g *gateway) grant(b testing.TB, spec control.GrantSpec) string {
	b.Helper()
	spec.Agent, spec.Task, spec.TTL = "agent-1", "benchmark", "12h"
	c := &control.Client{Server: g.URL, Token: g.Tokens["alice"]}
	iss, err := c.CreateGrant(context.Background(), spec)
	if err != nil {
		b.Fatal(err)
	}
	return iss.Token
}

// startRecorderCluster runs a 3-node JetStream cluster with the users and
// permissions of deploy/nats/accounts.conf, as production runs it, and
// returns it with the nkey seed file of its gateway user.
func startRecorderCluster(b testing.TB) (*testenv.NATSCluster, string) {
	b.Helper()
	u := testenv.NewNATSUsers(b)
	return testenv.StartDeployNATSCluster(b, u), u.SeedFiles["gateway"]
}
