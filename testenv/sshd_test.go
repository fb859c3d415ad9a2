package testenv

import (
	"os"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestSSHDAcceptsItsKey: the server starts, presents the host key it
// reports, and lets its client key in.
func TestSSHDAcceptsItsKey(t *testing.T) {
	s := StartSSHD(t, SSHDOptions{})
	host, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", s.Addr(), &ssh.ClientConfig{User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(host), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Log())
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sess.Output("echo sshd-ok"); err != nil || string(out) != "sshd-ok\n" {
		t.Fatalf("%q %v", out, err)
	}
}
