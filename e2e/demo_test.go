package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlockhq/airlock/testenv"
)

// demoRun is scripts/demo.sh running as `make demo` runs it, in the
// foreground, with its own directory and ports.
type demoRun struct {
	t        *testing.T
	root     string // the repository
	dir      string // DEMO_DIR
	env      []string
	ports    map[string]int // DEMO_* port variables
	cmd      *exec.Cmd
	out, err *lockedBuffer
	exited   chan struct{}
}

// demoPorts are the script's port variables: the upstreams' and the
// gateway's. The test gives each a free port, so neither the machine's own
// PostgreSQL, MariaDB, sshd and NATS nor another test is touched.
var demoPorts = []string{
	"DEMO_PG_PORT", "DEMO_MYSQL_PORT", "DEMO_BOX_PORT",
	"DEMO_LISTEN_PG", "DEMO_LISTEN_MYSQL", "DEMO_LISTEN_SSH", "DEMO_LISTEN_HTTP",
}

// TestDemo brings the demo up the way a user does (scripts/demo.sh, what
// `make demo` runs) and follows the walkthrough it prints, command by
// command, with the real airlock CLI, psql, mysql, ssh and sshpass: for
// each of demo-pg, shop-mysql and build-box the agent requests, alice
// approves, the agent connects and a write outside the grant is denied;
// then rita lists and reads the sessions, and a console link is made.
// "airlock demo is ready" must come only once every listener accepts.
// Ctrl-C (SIGINT) must stop every server it started. A second run keeps
// an edited demo/airlock.yaml, says so, and still works with it. As root
// the script creates the box's account airlock-demo once, if missing.
func TestDemo(t *testing.T) {
	for _, b := range [][2]string{
		{"bash", "bash"}, {"psql", "postgresql-client"}, {"mysql", "mariadb-client"},
		{"ssh", "openssh-client"}, {"sshpass", "sshpass"},
	} {
		testenv.RequireBinary(t, b[0], b[1])
	}
	bin := testenv.BuildAirlock(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// Under /tmp and open to others, so the postgres and mysql users can
	// reach their directories in it, as in a user's checkout.
	base, err := os.MkdirTemp("/tmp", "airlock-demo-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &demoRun{t: t, root: root, dir: filepath.Join(base, "demo"), ports: map[string]int{}}
	d.env = append(os.Environ(), "DEMO_DIR="+d.dir, "DEMO_BIN="+bin)
	for _, p := range demoPorts {
		d.ports[p] = testenv.FreePort(t)
		d.env = append(d.env, fmt.Sprintf("%s=%d", p, d.ports[p]))
	}
	t.Cleanup(d.cleanup)

	d.start()
	walk := d.walkthrough()
	d.checkREADME(walk)
	d.follow(walk, filepath.Join(base, "known_hosts"))
	d.stop()

	// Second run: a local edit of demo/airlock.yaml survives, with a clear
	// word about it, and the demo still comes up with that file.
	cfgPath := filepath.Join(d.dir, "airlock.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cfg), "  mode: strict\n", "  mode: strict\n  publish_timeout: 3s   # a local edit\n", 1)
	if edited == string(cfg) {
		t.Fatalf("no recorder mode line to edit in demo/airlock.yaml:\n%s", cfg)
	}
	if err := os.WriteFile(cfgPath, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	if got, _ := os.ReadFile(cfgPath); string(got) != edited {
		t.Errorf("the second run changed the edited demo/airlock.yaml:\n%s", got)
	}
	if got, err := os.ReadFile(cfgPath + ".new"); err != nil || string(got) != string(cfg) {
		t.Errorf("demo/airlock.yaml.new should hold the generated configuration (%v):\n%s", err, got)
	}
	for _, want := range []string{"KEEPING it", "publish_timeout: 3s   # a local edit", "airlock.yaml.new"} {
		if !strings.Contains(d.err.String(), want) {
			t.Errorf("the second run's output does not say %q:\n%s", want, d.err.String())
		}
	}
	// Tokens and gateway data were kept: rita still sees the first run's
	// sessions with the same env.sh.
	list := d.run(d.line(d.walkthrough(), "sessions list"), "", nil)
	for _, r := range []string{"demo-pg", "shop-mysql", "build-box"} {
		if !strings.Contains(list, r) {
			t.Errorf("after a re-run, sessions list lacks the first run's %s session:\n%s", r, list)
		}
	}
	d.stop()
}

// start runs the script and waits for "airlock demo is ready" and the
// console link; at that moment every listener must accept at once.
func (d *demoRun) start() {
	t := d.t
	t.Helper()
	d.out, d.err = &lockedBuffer{}, &lockedBuffer{}
	d.cmd = exec.Command("bash", filepath.Join(d.root, "scripts", "demo.sh"))
	d.cmd.Dir = d.root
	d.cmd.Env = d.env
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.err
	// Its own process group, as a terminal's foreground job, so cleanup
	// can reach whatever it leaves behind.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.exited) }()

	// A first run on a fresh machine installs packages.
	deadline := time.After(10 * time.Minute)
	for !strings.Contains(d.out.String(), "airlock demo is ready.") {
		select {
		case <-d.exited:
			t.Fatalf("scripts/demo.sh exited (%v) before saying it is ready\nstdout:\n%s\nstderr:\n%s", d.cmd.ProcessState, d.out.String(), d.err.String())
		case <-deadline:
			t.Fatalf("scripts/demo.sh did not say it is ready within 10 minutes\nstdout:\n%s\nstderr:\n%s", d.out.String(), d.err.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Ready means ready: every gateway listener accepts now, without a
	// retry, and the API is healthy.
	for _, p := range []string{"DEMO_LISTEN_PG", "DEMO_LISTEN_MYSQL", "DEMO_LISTEN_SSH", "DEMO_LISTEN_HTTP"} {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.ports[p]), 2*time.Second)
		if err != nil {
			t.Fatalf("the demo said it is ready, but the gateway's %s port refuses: %v", p, err)
		}
		c.Close()
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", d.ports["DEMO_LISTEN_HTTP"]))
	if err != nil {
		t.Fatalf("the demo said it is ready, but /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the demo said it is ready, but /healthz answers %s", resp.Status)
	}
	if !waitFor(30*time.Second, func() bool { return strings.Contains(d.out.String(), "/ui/signin/") }) {
		t.Fatalf("no console sign-in link after the ready message:\n%s\nstderr:\n%s", d.out.String(), d.err.String())
	}
	out := d.out.String()
	if !regexp.MustCompile(`(?m)^web console: http://127\.0\.0\.1:` + strconv.Itoa(d.ports["DEMO_LISTEN_HTTP"]) + `/ui/$`).MatchString(out) {
		t.Errorf("no console URL line:\n%s", out)
	}
}

// walkthrough is the part of the printed instructions with the commands,
// one line each (trimmed).
func (d *demoRun) walkthrough() []string {
	out := d.out.String()
	i := strings.Index(out, "Try it from another terminal")
	if i < 0 {
		d.t.Fatalf("no walkthrough in the demo's output:\n%s", out)
	}
	var lines []string
	for _, l := range strings.Split(out[i:], "\n") {
		lines = append(lines, strings.TrimSpace(l))
	}
	return lines
}

// line is the one walkthrough line containing s; a client's line is
// found by its start: line(walk, "^mysql ").
func (d *demoRun) line(walk []string, s string) string {
	d.t.Helper()
	match := func(l string) bool { return strings.Contains(l, s) }
	if p, ok := strings.CutPrefix(s, "^"); ok {
		match = func(l string) bool { return strings.HasPrefix(l, p) }
	}
	var found []string
	for _, l := range walk {
		if match(l) && !strings.HasPrefix(l, "#") {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		d.t.Fatalf("walkthrough lines with %q: %q, want one", s, found)
	}
	return found[0]
}

// sqlAfter is the SQL printed under the walkthrough's client line: the
// following lines up to a blank one.
func sqlAfter(walk []string, client string) string {
	var sql []string
	for i, l := range walk {
		if l != client {
			continue
		}
		for _, s := range walk[i+1:] {
			if s == "" || strings.HasPrefix(s, "#") || strings.HasPrefix(s, "AIRLOCK_TOKEN=") ||
				strings.HasPrefix(s, "mysql ") || strings.HasPrefix(s, "ssh ") {
				break
			}
			sql = append(sql, s)
		}
	}
	return strings.Join(sql, "\n") + "\n"
}

// run runs one walkthrough line in bash, in the repository, after the
// walkthrough's `. demo/env.sh`, with stdin and extra environment, and
// returns what it printed (stdout and stderr).
func (d *demoRun) run(line, stdin string, env []string) string {
	d.t.Helper()
	out, err := d.runErr(line, stdin, env)
	if err != nil {
		d.t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

func (d *demoRun) runErr(line, stdin string, env []string) (string, error) {
	d.t.Helper()
	source := d.line(d.walkthrough(), "env.sh")
	if !strings.HasPrefix(source, ". ") {
		d.t.Fatalf("the walkthrough's first step is %q, not sourcing env.sh", source)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", source+" && "+line)
	cmd.Dir = d.root
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

var (
	requestRE = regexp.MustCompile(`(?m)^request: +(gr_\w+)$`)
	tokenRE   = regexp.MustCompile(`(?m)^token: +(alk_\w+)$`)
)

// requestApproved runs the walkthrough's request line for resource, then
// its approve line for the new request, and returns the token.
func (d *demoRun) requestApproved(walk []string, resource string) string {
	d.t.Helper()
	out := d.run(d.line(walk, "request --resource "+resource+" "), "", nil)
	id, tok := requestRE.FindStringSubmatch(out), tokenRE.FindStringSubmatch(out)
	if id == nil || tok == nil {
		d.t.Fatalf("request for %s printed no request ID or token:\n%s", resource, out)
	}
	if list := d.run(d.line(walk, "grants list"), "", nil); !strings.Contains(list, id[1]) {
		d.t.Fatalf("alice's grants list lacks %s:\n%s", id[1], list)
	}
	approve := d.line(walk, "grants approve ID")
	d.run(strings.Replace(approve, "approve ID", "approve "+id[1], 1), "", nil)
	return tok[1]
}

// follow runs the walkthrough.
func (d *demoRun) follow(walk []string, knownHosts string) {
	t := d.t

	// Postgres: psql asks for the password; PGPASSWORD is its other way.
	tok := d.requestApproved(walk, "demo-pg")
	psql := d.line(walk, "^psql ")
	out := d.run(psql+" -X", sqlAfter(walk, psql), []string{"PGPASSWORD=" + tok})
	if !regexp.MustCompile(`(?m)^\s+8$`).MatchString(out) {
		t.Errorf("psql: yesterday's failed orders are not 8:\n%s", out)
	}
	if !strings.Contains(out, "ERROR:  airlock: DELETE requires write access") {
		t.Errorf("psql: the delete was not denied with the reason:\n%s", out)
	}

	// MySQL: -p asks for the password on the terminal; the test gives it
	// as the prompt's answer would be, with --password.
	tok = d.requestApproved(walk, "shop-mysql")
	mysqlLine := d.line(walk, "^mysql ")
	if !strings.Contains(mysqlLine, " -p ") {
		t.Fatalf("the walkthrough's mysql line has no -p: %s", mysqlLine)
	}
	sql := sqlAfter(walk, mysqlLine) + "delete from orders;\n"
	out, err := d.runErr(strings.Replace(mysqlLine, " -p ", " --password=\"$DEMO_TOKEN\" ", 1), sql, []string{"DEMO_TOKEN=" + tok})
	if !regexp.MustCompile(`(?m)^25$`).MatchString(out) {
		t.Errorf("mysql: failed orders are not 25 (%v):\n%s", err, out)
	}
	if err == nil || !strings.Contains(out, "airlock: DELETE requires write access") {
		t.Errorf("mysql: the delete was not denied with the reason (%v):\n%s", err, out)
	}

	// SSH: the token is the password (sshpass types it), and the gateway's
	// host key is pinned from the key the demo keeps, whose fingerprint
	// the instructions print.
	pub, err := os.ReadFile(filepath.Join(d.dir, "ssh", "gateway_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	fp, err := exec.Command("ssh-keygen", "-lf", filepath.Join(d.dir, "ssh", "gateway_host_ed25519_key.pub")).Output()
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(fp)); len(f) < 2 || !strings.Contains(d.out.String(), f[1]) {
		t.Errorf("the instructions do not print the gateway's SSH host key fingerprint %q", fp)
	}
	kh := fmt.Sprintf("[127.0.0.1]:%d %s", d.ports["DEMO_LISTEN_SSH"], pub)
	if err := os.WriteFile(knownHosts, []byte(kh), 0o600); err != nil {
		t.Fatal(err)
	}
	tok = d.requestApproved(walk, "build-box")
	sshClient := func(line string) string {
		if !strings.HasPrefix(line, "ssh ") {
			t.Fatalf("not an ssh line: %s", line)
		}
		return `sshpass -p "$DEMO_TOKEN" ssh -o UserKnownHostsFile=` + knownHosts + ` -o StrictHostKeyChecking=yes ` + strings.TrimPrefix(line, "ssh ")
	}
	statusLine := d.line(walk, "systemctl status nginx")
	out = d.run(sshClient(statusLine), "", []string{"DEMO_TOKEN=" + tok})
	if !strings.Contains(out, "nginx.service") || !strings.Contains(out, "Active: active (running)") {
		t.Errorf("ssh %s printed no nginx status:\n%s", statusLine, out)
	}
	restart := d.line(walk, "systemctl restart nginx")
	restart = strings.TrimSpace(restart[:strings.Index(restart, "#")])
	out, err = d.runErr(sshClient(restart), "", []string{"DEMO_TOKEN=" + tok})
	if err == nil || !strings.Contains(out, `airlock: command "systemctl restart nginx" matches no --command rule`) {
		t.Errorf("ssh systemctl restart was not denied with the reason (%v):\n%s", err, out)
	}

	// Rita reads what happened.
	list := d.run(d.line(walk, "sessions list"), "", nil)
	pgSession := ""
	for _, r := range []string{"demo-pg", "shop-mysql", "build-box"} {
		var row []string
		for _, l := range strings.Split(list, "\n") {
			if f := strings.Fields(l); len(f) > 8 && f[5] == r && f[8] != "0" {
				row = f
			}
		}
		if row == nil {
			t.Errorf("sessions list has no %s session with a denial:\n%s", r, list)
		} else if r == "demo-pg" {
			pgSession = row[0]
		}
	}
	if pgSession != "" {
		show := d.line(walk, "sessions show SESSION_ID")
		out = d.run(strings.Replace(show, "SESSION_ID", pgSession, 1), "", nil)
		for _, want := range []string{"INC-42: count yesterday's failed orders", "delete from orders", "denied"} {
			if !strings.Contains(out, want) {
				t.Errorf("sessions show %s lacks %q:\n%s", pgSession, want, out)
			}
		}
	}

	// A new console sign-in link.
	var console string
	for _, l := range walk {
		if strings.HasPrefix(l, "AIRLOCK_TOKEN=$ALICE_TOKEN ") && strings.HasSuffix(l, " console") {
			console = l
		}
	}
	if console == "" {
		t.Fatal("no console command in the walkthrough")
	}
	out = d.run(console, "", nil)
	if !strings.Contains(out, fmt.Sprintf("http://127.0.0.1:%d/ui/signin/", d.ports["DEMO_LISTEN_HTTP"])) {
		t.Errorf("airlock console printed no sign-in link:\n%s", out)
	}
}

// checkREADME: the client commands of README.md (psql, mysql, ssh) are
// the ones the demo prints, ports aside, so following the README is
// following what this test runs.
func (d *demoRun) checkREADME(walk []string) {
	t := d.t
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	printed := map[string]bool{}
	for _, l := range walk {
		if i := strings.Index(l, "  #"); i >= 0 {
			l = l[:i]
		}
		printed[strings.TrimSpace(l)] = true
	}
	ports := strings.NewReplacer(
		"port=15432 ", fmt.Sprintf("port=%d ", d.ports["DEMO_LISTEN_PG"]),
		"-P 13306 ", fmt.Sprintf("-P %d ", d.ports["DEMO_LISTEN_MYSQL"]),
		"-p 2222 ", fmt.Sprintf("-p %d ", d.ports["DEMO_LISTEN_SSH"]),
	)
	client := regexp.MustCompile(`^\$ (?:[A-Z]+=\S+ )*((?:psql|mysql|ssh) .*?)(?:\s+#.*)?$`)
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		m := client.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n++
		if c := ports.Replace(m[1]); !printed[c] {
			t.Errorf("README.md's command %q is not among the demo's printed steps (as %q)", m[1], c)
		}
	}
	if n < 4 {
		t.Errorf("README.md has %d psql, mysql and ssh commands, want at least 4", n)
	}
}

// stop presses Ctrl-C: SIGINT to the script, which must stop the gateway
// and every server, freeing all ports.
func (d *demoRun) stop() {
	t := d.t
	t.Helper()
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("scripts/demo.sh still runs 90s after SIGINT\nstderr:\n%s", d.err.String())
	}
	if !strings.Contains(d.err.String(), "stopping the demo PostgreSQL") {
		t.Errorf("no word of stopping the servers after SIGINT:\n%s", d.err.String())
	}
	for _, p := range demoPorts {
		addr := fmt.Sprintf("127.0.0.1:%d", d.ports[p])
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s (%s) still accepts after the demo stopped", p, addr)
		}
	}
}

// cleanup stops whatever a failed test left running: the script's process
// group, then the servers by their pid files (scripts/demo.sh stop).
func (d *demoRun) cleanup() {
	if d.t.Failed() && d.out != nil {
		d.t.Logf("demo stdout:\n%s\ndemo stderr:\n%s", d.out.String(), d.err.String())
	}
	if d.cmd != nil && d.cmd.Process != nil {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Signal(os.Interrupt)
			select {
			case <-d.exited:
			case <-time.After(60 * time.Second):
				_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
				<-d.exited
			}
		}
	}
	cmd := exec.Command("bash", filepath.Join(d.root, "scripts", "demo.sh"), "stop")
	cmd.Env = d.env
	if out, err := cmd.CombinedOutput(); err != nil {
		d.t.Logf("scripts/demo.sh stop: %v\n%s", err, out)
	}
}
