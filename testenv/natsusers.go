package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// NATSUsers are fresh nkeys for the users of deploy/nats/accounts.conf
// (gateway, reviewer, admin, sys).
type NATSUsers struct {
	// SeedFiles are the users' nkey seed files by name, to connect with
	// (the gateway's recorder.credentials_file is SeedFiles["gateway"]).
	SeedFiles map[string]string
	// Env is what the servers read the public keys from
	// (AIRLOCK_NATS_<USER>_NKEY), for NATSClusterOptions.Env.
	Env []string
}

// NewNATSUsers makes a key pair per user, the seeds in a temporary
// directory.
func NewNATSUsers(t testing.TB) *NATSUsers {
	t.Helper()
	u := &NATSUsers{SeedFiles: map[string]string{}}
	dir := t.TempDir()
	for _, name := range []string{"gateway", "reviewer", "admin", "sys"} {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		p := filepath.Join(dir, name+".nk")
		if err := os.WriteFile(p, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		u.SeedFiles[name] = p
		u.Env = append(u.Env, "AIRLOCK_NATS_"+strings.ToUpper(name)+"_NKEY="+pub)
	}
	return u
}

// Option connects as user.
func (u *NATSUsers) Option(t testing.TB, user string) nats.Option {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(u.SeedFiles[user])
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

// StartDeployNATSCluster runs a 3-node JetStream cluster with the users
// and permissions of deploy/nats/accounts.conf, as production runs it;
// readiness probes connect as admin.
func StartDeployNATSCluster(t testing.TB, u *NATSUsers) *NATSCluster {
	t.Helper()
	return StartNATSCluster(t, NATSClusterOptions{
		Include:       filepath.Join(ModuleRoot(t), "deploy", "nats", "accounts.conf"),
		Env:           u.Env,
		ClientOptions: []nats.Option{u.Option(t, "admin")},
	})
}
