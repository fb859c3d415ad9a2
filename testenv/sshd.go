package testenv

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDOptions configures StartSSHD. The zero value is a server that lets
// the current user (root in CI) in with one generated key.
type SSHDOptions struct {
	// ExtraConfig is appended to the generated sshd_config.
	ExtraConfig string
}

// SSHD is a running OpenSSH sshd on 127.0.0.1, with its own host key and
// authorized_keys file in a temporary directory.
type SSHD struct {
	Host string // 127.0.0.1
	Port int
	// User is the account keys log in as (the current user).
	User string
	Dir  string
	// HostKey is the server's host public key, "ssh-ed25519 AAAA...", as
	// a gateway's host_key pins it.
	HostKey string
	// ClientKeyFile is an unencrypted private key the server accepts for
	// User; ClientPublicKey is its public half.
	ClientKeyFile   string
	ClientPublicKey string
	// KnownHostsFile lists HostKey for [127.0.0.1]:Port, for OpenSSH
	// clients connecting directly.
	KnownHostsFile string

	logPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
}

// sshdBinary finds sshd, installing openssh-server when it is missing and
// the test runs as root. sshd must be started by its absolute path (it
// re-executes itself).
func sshdBinary(t testing.TB) string {
	t.Helper()
	const path = "/usr/sbin/sshd"
	if fileExists(path) {
		return path
	}
	p := RequireBinary(t, "sshd", "openssh-server")
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatalf("testenv: sshd: %v", err)
	}
	return abs
}

// StartSSHD starts sshd in the foreground on a free port of 127.0.0.1
// and waits until it greets. t.Cleanup stops it and removes its directory.
func StartSSHD(t testing.TB, o SSHDOptions) *SSHD {
	t.Helper()
	bin := sshdBinary(t)
	RequireBinary(t, "ssh", "openssh-client")
	u, err := user.Current()
	if err != nil {
		t.Fatalf("testenv: sshd: current user: %v", err)
	}
	if os.Geteuid() == 0 {
		// sshd's privilege separation directory; a fresh machine that
		// never ran the system sshd has none.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("testenv: sshd: %v", err)
		}
	}
	s := &SSHD{Host: "127.0.0.1", User: u.Username, Dir: t.TempDir()}
	s.logPath = filepath.Join(s.Dir, "sshd.log")
	hostKey := filepath.Join(s.Dir, "ssh_host_ed25519_key")
	hostPub := writeSSHKey(t, hostKey)
	s.HostKey = strings.TrimSpace(hostPub)
	s.ClientKeyFile = filepath.Join(s.Dir, "client_key")
	s.ClientPublicKey = strings.TrimSpace(writeSSHKey(t, s.ClientKeyFile))
	s.AuthorizeKey(t, s.ClientPublicKey)
	t.Cleanup(s.stop)

	var startErr error
	for range 3 {
		s.Port = FreePort(t)
		conf := filepath.Join(s.Dir, "sshd_config")
		if err := os.WriteFile(conf, []byte(s.config(hostKey)+o.ExtraConfig+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if startErr = s.start(bin, conf); startErr == nil || !strings.Contains(startErr.Error(), "in use") {
			break
		}
	}
	if startErr != nil {
		t.Fatalf("testenv: start sshd: %v", startErr)
	}
	s.KnownHostsFile = filepath.Join(s.Dir, "known_hosts")
	line := fmt.Sprintf("[%s]:%d %s\n", s.Host, s.Port, s.HostKey)
	if err := os.WriteFile(s.KnownHostsFile, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *SSHD) config(hostKey string) string {
	return fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
AcceptEnv LANG LC_* TERM
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
MaxStartups 100:30:200
LogLevel VERBOSE
`, s.Port, hostKey, filepath.Join(s.Dir, "sshd.pid"), filepath.Join(s.Dir, "authorized_keys"))
}

// Addr is "127.0.0.1:PORT".
func (s *SSHD) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// AuthorizeKey lets the public key pub ("ssh-ed25519 AAAA...") log in.
func (s *SSHD) AuthorizeKey(t testing.TB, pub string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(s.Dir, "authorized_keys"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, strings.TrimSpace(pub)); err != nil {
		t.Fatal(err)
	}
}

// PID is the id of the listening sshd process (it runs in the
// foreground, -D), which forks a process tree per connection and reaps
// it: the benchmarks read the CPU time of that tree from its
// cumulative child times. It is 0 once sshd has been stopped.
func (s *SSHD) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Log is what sshd logged so far.
func (s *SSHD) Log() string { return tailFile(s.logPath, 20000) }

func (s *SSHD) start(bin, conf string) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	// -D: foreground, -e: log to stderr (into the log file).
	cmd := exec.Command(bin, "-D", "-e", "-f", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	greeting := func() error {
		if !greets(s.Addr()) {
			return fmt.Errorf("no SSH greeting on %s", s.Addr())
		}
		return nil
	}
	if err := waitReady("sshd", exited, 15*time.Second, greeting); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%v:\n%s", err, tailFile(s.logPath, 2000))
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return nil
}

// greets reports whether an SSH server answers at addr with its version.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

func (s *SSHD) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	terminate(s.cmd, s.exited, 5*time.Second)
	s.cmd = nil
}

// NewSSHKey writes a fresh ed25519 private key (OpenSSH format, mode 0600)
// to path and returns its public key in authorized_keys form.
func NewSSHKey(t testing.TB, path string) string {
	t.Helper()
	return writeSSHKey(t, path)
}

func writeSSHKey(t testing.TB, path string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
	if err := os.WriteFile(path+".pub", pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return string(pub)
}

// RequirePythonModule returns Debian's python3 (/usr/bin/python3, which
// sees the modules Debian packages install) after checking it can import
// module, installing debianPackage when it cannot and the test runs as
// root.
func RequirePythonModule(t testing.TB, module, debianPackage string) string {
	t.Helper()
	py := "/usr/bin/python3"
	if !fileExists(py) {
		RequireBinary(t, "python3", "python3")
	}
	imports := func() bool { return exec.Command(py, "-c", "import "+module).Run() == nil }
	if imports() {
		return py
	}
	hint := fmt.Sprintf("%s cannot import %s: install with: apt-get install -y %s", py, module, debianPackage)
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: %s", hint)
	}
	if err := aptInstall(debianPackage); err != nil {
		t.Fatalf("testenv: %s (installing it failed: %v)", hint, err)
	}
	if !imports() {
		t.Fatalf("testenv: %s (apt-get installed it, but the import still fails)", hint)
	}
	return py
}
