package ssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// HostKeyFile is the gateway's SSH host key in data_dir, made on first
// start when listen.ssh_host_key_file is empty. Its public half is written
// beside it (.pub) for known_hosts.
const HostKeyFile = "ssh_host_ed25519_key"

// LoadHostKey reads the gateway's SSH host key from path or, when path is
// empty, from HostKeyFile in dataDir, generating an ed25519 key there on
// first use. Agents pin this key in their known_hosts, so it must survive
// restarts.
func LoadHostKey(path, dataDir string) (ssh.Signer, error) {
	if path == "" {
		path = filepath.Join(dataDir, HostKeyFile)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := writeHostKey(path); err != nil {
				return nil, fmt.Errorf("generating the SSH host key in %s: %w", dataDir, err)
			}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ssh host key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("ssh host key %s: %w", path, err)
	}
	return s, nil
}

func writeHostKey(path string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "airlock gateway host key")
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// Write under a temporary name and rename, so a crash never leaves a
	// half-written key that the next start would refuse.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
