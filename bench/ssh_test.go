package bench

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/testenv"
)

// sshTarget is an SSH server a client logs in to with a key, its host key
// pinned.
type sshTarget struct {
	name       string
	addr       string
	user       string
	keyFile    string
	knownHosts string // for OpenSSH
	hostKey    ssh.PublicKey
}

// sshEnv is sshd directly and through airlock R1.
type sshEnv struct {
	direct, airlock sshTarget
}

// startSSHD starts sshd and returns it with its gateway resource.
//
// SHLVL=1 makes the remote bash a nested shell, which does not source
// ~/.bashrc as a top-level shell started by sshd does: on a machine whose
// .bashrc runs pyenv or the like, that takes ~200 ms per command and would
// bury what the gateway adds to an exec.
func startSSHD(b testing.TB) (*testenv.SSHD, testenv.GatewayResource) {
	b.Helper()
	sshd := testenv.StartSSHD(b, testenv.SSHDOptions{ExtraConfig: "SetEnv SHLVL=1"})
	return sshd, testenv.GatewayResource{Name: "bench-box", Protocol: "ssh", Address: sshd.Addr(), User: sshd.User,
		KeyFile: sshd.ClientKeyFile, HostKey: sshd.HostKey}
}

// newSSHEnv grants agent-1 `cat` and `true` on resource; agent-1 logs in
// with its registered key, which picks that grant.
func newSSHEnv(b testing.TB, sshd *testenv.SSHD, g *gateway, resource string) sshEnv {
	b.Helper()
	g.grant(b, control.GrantSpec{Resource: resource, SSH: authz.SSHPolicy{Commands: []string{"cat", "true"}}})
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(sshd.HostKey))
	if err != nil {
		b.Fatalf("sshd host key: %v", err)
	}
	return sshEnv{
		direct:  sshTarget{"direct", sshd.Addr(), sshd.User, sshd.ClientKeyFile, sshd.KnownHostsFile, hostKey},
		airlock: sshTarget{judged, g.SSHAddr, "agent-1+" + resource, g.agentKey, g.KnownHosts, g.HostKey},
	}
}

// openSSH runs OpenSSH's ssh against t with command, without user config,
// the host key pinned.
func (t sshTarget) openSSH(command ...string) *exec.Cmd {
	return t.openSSHWith(nil, command...)
}

// openSSHWith is openSSH with more ssh options before the destination.
func (t sshTarget) openSSHWith(opts []string, command ...string) *exec.Cmd {
	host, port, _ := net.SplitHostPort(t.addr)
	args := []string{"-F", "/dev/null", "-o", "UserKnownHostsFile=" + t.knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-i", t.keyFile, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"}
	args = append(append(args, opts...), "-p", port, t.user+"@"+host)
	return exec.Command("ssh", append(args, command...)...)
}

// dial logs in to t with golang.org/x/crypto/ssh.
func (t sshTarget) dial(b testing.TB) *ssh.Client {
	b.Helper()
	pem, err := os.ReadFile(t.keyFile)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		b.Fatal(err)
	}
	c, err := ssh.Dial("tcp", t.addr, &ssh.ClientConfig{
		User:            t.user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(t.hostKey),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		b.Fatalf("ssh %s: %v", t.name, err)
	}
	return c
}

// benchSSHBulk pipes 1 GiB through `ssh HOST cat`, straight to sshd and
// through airlock, alternating which goes first, and reports the rate
// one way (the bytes also come back).
func benchSSHBulk(b *testing.B, e *env, r *report) {
	// OpenSSH as configured out of the box (chacha20-poly1305 to sshd,
	// AES-CTR to airlock, which does not offer chacha20), then with both
	// asked for AES-GCM, as listen.ssh_ciphers or the agent's ssh_config
	// can make it (docs/ssh.md, "Ciphers").
	sshBulk(b, e, r, nil, "1 GiB through `ssh host cat`, throughput", ">= 0.9", "SSH cat 1 GiB")
	sshBulk(b, e, r, []string{"-c", "aes128-gcm@openssh.com"}, "1 GiB through `ssh -c aes128-gcm@openssh.com host cat`, throughput", "", "SSH cat 1 GiB, AES-GCM")
}

func sshBulk(b *testing.B, e *env, r *report, opts []string, metric, target, label string) {
	const size = 1 << 30
	mbps := map[string][]float64{}
	contenders := []sshTarget{e.ssh.direct, e.ssh.airlock}
	for round := range 2 {
		for i := range contenders {
			t := contenders[(i+round)%len(contenders)]
			var profile chan struct{}
			if t.name == judged && round == 0 {
				name, what := "ssh-cat.pprof", "1 GiB through `ssh host cat`, airlock R1"
				if opts != nil {
					name, what = "ssh-cat-aes-gcm.pprof", "1 GiB through `ssh -c aes128-gcm@openssh.com host cat`, airlock R1"
				}
				profile = e.cpuProfile(b, e.gw, name, 6) // the transfer takes 7-12 s here: most of it, past the key exchange
				r.profile(filepath.Join(e.profiles, name), what)
			}
			cmd := t.openSSHWith(opts, "cat")
			cmd.Stdin = io.LimitReader(zeros{}, size)
			var n countWriter
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &n, &stderr
			start, busy0 := time.Now(), machineBusy(b)
			if err := cmd.Run(); err != nil || n != size {
				b.Fatalf("ssh cat through %s: %v, %d of %d bytes back: %s", t.name, err, n, size, stderr.String())
			}
			el := time.Since(start)
			mbps[t.name] = append(mbps[t.name], size/el.Seconds()/1e6)
			// On a machine whose cores the direct run keeps busy, the
			// gateway's share of the CPU bounds the ratio.
			b.Logf("%s, %s: %.0f MB/s, machine busy %.2f cores", metric, t.name, size/el.Seconds()/1e6, (machineBusy(b)-busy0)/el.Seconds())
			if profile != nil {
				<-profile
			}
		}
	}
	r.add(row{section: "SSH", metric: metric, unit: "MB/s", baseline: median(mbps["direct"]),
		others: []value{{judged, median(mbps[judged])}}, target: target, higherBetter: true, label: label})
}

// benchSSHExec times an exec round trip (`true`: open a session channel,
// exec, exit status) on an open connection, and a whole `ssh host true`
// (process start, key exchange, login, exec), directly and through
// airlock, alternated.
func benchSSHExec(b *testing.B, e *env, r *report) {
	contenders := []sshTarget{e.ssh.direct, e.ssh.airlock}
	clients := map[string]*ssh.Client{}
	for _, t := range contenders {
		c := t.dial(b)
		defer c.Close()
		clients[t.name] = c
	}
	samples := map[string][]time.Duration{}
	const blocks, per = 8, 25
	for blk := range blocks {
		for i := range contenders {
			name := contenders[(i+blk)%len(contenders)].name
			for range per {
				start := time.Now()
				s, err := clients[name].NewSession()
				if err == nil {
					err = s.Run("true")
					s.Close()
				}
				if err != nil {
					b.Fatalf("ssh exec true through %s: %v", name, err)
				}
				samples[name] = append(samples[name], time.Since(start))
			}
		}
	}
	for _, p := range []float64{50, 99} {
		r.add(latencyRow("SSH", fmt.Sprintf("exec round trip (`true`) on an open connection, p%.0f", p), "ms", samples, p, []string{"direct", judged}))
	}

	ms := map[string][]float64{}
	for i := range 20 {
		for j := range contenders {
			t := contenders[(i+j)%len(contenders)]
			cmd := t.openSSH("true")
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("ssh true through %s: %v: %s", t.name, err, out)
			}
			ms[t.name] = append(ms[t.name], float64(time.Since(start).Microseconds())/1000)
		}
	}
	r.add(row{section: "SSH", metric: "`ssh host true`: new connection, login, exec", unit: "ms", baseline: median(ms["direct"]),
		others: []value{{judged, median(ms[judged])}}})
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// countWriter counts what is written to it.
type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}
