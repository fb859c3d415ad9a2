// Command gensecrets makes the secrets docker-compose.yml needs, in
// deploy/secrets (or the directory given with -dir):
//
//   - .env: the NATS users' public nkeys (read by deploy/nats/accounts.conf)
//     and the demo databases' passwords;
//   - gateway.nk, reviewer.nk, admin.nk, sys.nk: the NATS users' seeds;
//   - tokens.env: API tokens for agent-1, alice and rita (AIRLOCK_TOKEN);
//   - airlock.yaml: deploy/airlock/airlock.yaml with the tokens' hashes and
//     the sshd target's host key filled in;
//   - box_key, box_key.pub, sshd_host_key, sshd_host_key.pub: the gateway's
//     key for the sshd target and the target's host key.
//
// Run it once from the repository root: go run ./deploy/gensecrets
// Nothing it writes belongs in version control.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/ssh"
)

// secretMode is the mode of files mounted into containers. docker-compose
// mounts secrets as they are on the host, and the containers' users are
// not the host's, so the files are readable by all; the directory (0700)
// keeps them from other users of the host.
const secretMode = 0o644

func main() {
	dir := flag.String("dir", filepath.Join("deploy", "secrets"), "where to write the secrets")
	tmpl := flag.String("config", filepath.Join("deploy", "airlock", "airlock.yaml"), "the gateway configuration template")
	flag.Parse()
	if err := run(*dir, *tmpl); err != nil {
		fmt.Fprintln(os.Stderr, "gensecrets:", err)
		os.Exit(1)
	}
}

func run(dir, tmpl string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var env strings.Builder
	for _, user := range []string{"gateway", "reviewer", "admin", "sys"} {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return err
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		if err := os.WriteFile(filepath.Join(dir, user+".nk"), seed, secretMode); err != nil {
			return err
		}
		fmt.Fprintf(&env, "AIRLOCK_NATS_%s_NKEY=%s\n", strings.ToUpper(user), pub)
	}
	fmt.Fprintf(&env, "DEMO_PG_PASSWORD=%s\nSHOP_MYSQL_PASSWORD=%s\n", random(16), random(16))
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(env.String()), 0o600); err != nil {
		return err
	}

	cfg, err := os.ReadFile(tmpl)
	if err != nil {
		return err
	}
	var tokens strings.Builder
	for _, id := range []string{"agent-1", "alice", "rita"} {
		tok := "alk_" + random(20)
		sum := sha256.Sum256([]byte(tok))
		cfg = []byte(strings.ReplaceAll(string(cfg), "@TOKEN_"+id+"@", hex.EncodeToString(sum[:])))
		fmt.Fprintf(&tokens, "%s_TOKEN=%s\n", strings.ToUpper(strings.ReplaceAll(id, "-", "_")), tok)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokens.env"), []byte(tokens.String()), 0o600); err != nil {
		return err
	}
	if err := sshKey(dir, "box_key"); err != nil {
		return err
	}
	if err := sshKey(dir, "sshd_host_key"); err != nil {
		return err
	}
	hostPub, err := os.ReadFile(filepath.Join(dir, "sshd_host_key.pub"))
	if err != nil {
		return err
	}
	cfg = []byte(strings.ReplaceAll(string(cfg), "@SSH_HOST_KEY@", strings.TrimSpace(string(hostPub))))
	if err := os.WriteFile(filepath.Join(dir, "airlock.yaml"), cfg, 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote the secrets to %s; API tokens are in %s\n", dir, filepath.Join(dir, "tokens.env"))
	return nil
}

// sshKey writes an ed25519 key pair in OpenSSH format as name and name.pub.
func sshKey(dir, name string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	blk, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(blk), secretMode); err != nil {
		return err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".pub"), ssh.MarshalAuthorizedKey(sp), 0o644)
}

func random(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
