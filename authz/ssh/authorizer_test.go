package ssh

import (
	"reflect"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
)

func TestSSHParseShellCommand(t *testing.T) {
	cases := []struct {
		in     string
		argv   []string
		syntax string // substring of the joined syntax list; "" means plain
		err    string
	}{
		{in: "uptime", argv: []string{"uptime"}},
		{in: "  systemctl   status\tnginx  ", argv: []string{"systemctl", "status", "nginx"}},
		{in: `journalctl -u nginx --since "1 hour ago"`, argv: []string{"journalctl", "-u", "nginx", "--since", "1 hour ago"}},
		{in: `cat '/var/log/app/a b.log'`, argv: []string{"cat", "/var/log/app/a b.log"}},
		{in: `echo a\ b`, argv: []string{"echo", "a b"}},
		{in: `echo 'it'\''s'`, argv: []string{"echo", "it's"}},
		{in: `echo "a\"b" "c\\d" "e\f"`, argv: []string{"echo", `a"b`, `c\d`, `e\f`}},
		{in: `echo '$HOME' "*" '*'`, argv: []string{"echo", "$HOME", "*", "*"}},
		{in: `echo ''`, argv: []string{"echo", ""}},
		{in: "echo a\\\nb", argv: []string{"echo", "ab"}},
		{in: `echo $`, argv: []string{"echo", "$"}},
		{in: `echo a=b`, argv: []string{"echo", "a=b"}},
		{in: `'A=b' cmd`, argv: []string{"A=b", "cmd"}},
		{in: `"if" x`, argv: []string{"if", "x"}},
		{in: `scp -t -- /tmp/x`, argv: []string{"scp", "-t", "--", "/tmp/x"}},
		{in: "ls ü", argv: []string{"ls", "ü"}},

		{in: "ls; rm -rf /", syntax: "`;`"},
		{in: "ls && id", syntax: "`&&`"},
		{in: "ls || id", syntax: "`||`"},
		{in: "ls & id", syntax: "`&`"},
		{in: "ps aux | grep x", syntax: "`|`"},
		{in: "cat x > /etc/passwd", syntax: "`>`"},
		{in: "cat < x", syntax: "`<`"},
		{in: "cat x>y", syntax: "`>`"},
		{in: "echo $(id)", syntax: "`$(`"},
		{in: `echo "$(id)"`, syntax: "`$(`"},
		{in: "echo `id`", syntax: "backticks"},
		{in: "echo \"`id`\"", syntax: "backticks"},
		{in: "echo $HOME", syntax: "variable expansion"},
		{in: `echo "$HOME"`, syntax: "variable expansion"},
		{in: "echo ${HOME}", syntax: "`${`"},
		{in: "echo $1", syntax: "variable expansion"},
		{in: "echo $'\\x41'", syntax: "special quoting"},
		{in: "ls\nid", syntax: "newline"},
		{in: "(id)", syntax: "subshell"},
		{in: "ls *", syntax: "glob"},
		{in: "ls /etc/pass?d", syntax: "glob"},
		{in: "ls [ab]", syntax: "glob"},
		{in: "echo {a,b}", syntax: "brace"},
		{in: "cat ~/x", syntax: "home directory"},
		{in: "ls # comment", syntax: "comment"},
		{in: "LD_PRELOAD=/tmp/x.so ls", syntax: "variable assignment"},
		{in: "if true; then id; fi", syntax: "keyword"},
		{in: "time ls", syntax: "keyword"},
		{in: "! ls", syntax: "history or pattern"},
		{in: "=ls", syntax: "zsh"},
		{in: "ls \x1b[31m", syntax: "control character"},

		{in: "echo 'abc", err: "unterminated single quote"},
		{in: `echo "abc`, err: "unterminated double quote"},
		{in: `echo abc\`, err: "backslash"},
		{in: "ls\x00; rm -rf /", err: "NUL"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseShellCommand(c.in)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			syn := strings.Join(got.Syntax, "; ")
			if c.syntax == "" {
				if !got.Plain() {
					t.Fatalf("not plain: %s", syn)
				}
				if !reflect.DeepEqual(got.Argv, c.argv) {
					t.Fatalf("argv = %q, want %q", got.Argv, c.argv)
				}
				// Requoting gives a command that reads back the same.
				back, err := ParseShellCommand(QuoteArgv(got.Argv))
				if err != nil || !back.Plain() || !reflect.DeepEqual(back.Argv, got.Argv) {
					t.Fatalf("QuoteArgv(%q) = %q reads back as %q %v %v", got.Argv, QuoteArgv(got.Argv), back.Argv, back.Syntax, err)
				}
				return
			}
			if !strings.Contains(syn, c.syntax) {
				t.Fatalf("syntax = %q, want it to mention %q", syn, c.syntax)
			}
		})
	}
}

func TestSSHQuoteArgv(t *testing.T) {
	cases := []struct {
		argv []string
		want string
	}{
		{[]string{"systemctl", "status", "nginx.service"}, "systemctl status nginx.service"},
		{[]string{"echo", "a b", "it's", ""}, `echo 'a b' 'it'\''s' ''`},
		{[]string{"echo", "$HOME", "*", "~", "=ls", "-n"}, `echo '$HOME' '*' '~' '=ls' -n`},
		{[]string{"journalctl", "--since=2024-01-01", "user@host:/x,y+%"}, "journalctl --since=2024-01-01 user@host:/x,y+%"},
	}
	for _, c := range cases {
		if got := QuoteArgv(c.argv); got != c.want {
			t.Errorf("QuoteArgv(%q) = %s, want %s", c.argv, got, c.want)
		}
	}
}

func sshGrant(p authz.SSHPolicy) *authz.Grant {
	return &authz.Grant{ID: "gr_test", Agent: "agent-1", Resource: "web-1", Task: "INC-9: look at nginx", State: authz.StateActive, SSH: p}
}

func TestSSHExec(t *testing.T) {
	g := sshGrant(authz.SSHPolicy{Commands: []string{
		"uptime",
		"systemctl status *",
		"journalctl -u * --since *",
		"cat /var/log/app/*",
		"ls -* /srv/*",
		"grep -r ERROR **",
		"echo 'a *'",
		`echo \*`,
		"raw:ps aux | grep *",
		"raw:df -h; free -m",
	}})
	cases := []struct {
		name, cmd string
		allow     bool
		rule      string
		forward   string // the command sent upstream, when allowed
		reason    []string
	}{
		{name: "exact", cmd: "uptime", allow: true, rule: RuleCommand, forward: "uptime"},
		{name: "wildcard word", cmd: "systemctl status nginx", allow: true, rule: RuleCommand, forward: "systemctl status nginx"},
		{name: "quoted argument", cmd: `journalctl -u nginx --since "1 hour ago"`, allow: true, forward: `journalctl -u nginx --since '1 hour ago'`},
		{name: "path wildcard", cmd: "cat /var/log/app/error.log", allow: true},
		{name: "path wildcard deeper", cmd: "cat /var/log/app/2024/01/x.log", allow: true},
		{name: "option wildcard", cmd: "ls -la /srv/www", allow: true},
		{name: "rest words", cmd: "grep -r ERROR /var/log/a /var/log/b", allow: true},
		{name: "rest none", cmd: "grep -r ERROR", allow: true},
		{name: "quoted star in rule is literal", cmd: "echo 'a *'", allow: true, forward: "echo 'a *'"},
		{name: "escaped star in rule is literal", cmd: "echo '*'", allow: true},
		{name: "escaped star does not match other", cmd: "echo x", reason: []string{"matches no --command rule"}},
		{name: "raw pipe", cmd: "ps aux | grep nginx", allow: true, rule: RuleRaw, forward: "ps aux | grep nginx"},
		{name: "raw plain text", cmd: "df -h; free -m", allow: true, rule: RuleRaw},

		{name: "no rule", cmd: "reboot", rule: RuleCommand, reason: []string{`command "reboot" matches no --command rule`, "gr_test", "INC-9", `--command reboot`, "airlock request --resource web-1"}},
		{name: "extra word", cmd: "uptime -p", rule: RuleCommand},
		{name: "missing word", cmd: "systemctl status", rule: RuleCommand},
		{name: "different literal", cmd: "systemctl restart nginx", rule: RuleCommand},
		{name: "wildcard is not an option", cmd: "systemctl status --now", reason: []string{"would match", "-*"}},
		{name: "path traversal", cmd: "cat /var/log/app/../../../etc/shadow", reason: []string{"no .. path element"}},
		{name: "rest is not an option", cmd: "grep -r ERROR --include=x /", reason: []string{"would match"}},
		{name: "separator", cmd: "uptime; reboot", rule: RuleShellSyntax, reason: []string{"uses shell syntax", "`;`", "raw:uptime; reboot"}},
		{name: "and", cmd: "uptime && reboot", rule: RuleShellSyntax},
		{name: "pipe not in raw", cmd: "ps aux | sh", rule: RuleShellSyntax},
		{name: "raw wildcard cannot hold syntax", cmd: "ps aux | grep x; reboot", rule: RuleShellSyntax},
		{name: "raw wildcard cannot hold spaces", cmd: "ps aux | grep x y", rule: RuleShellSyntax},
		{name: "raw wildcard cannot be an option", cmd: "ps aux | grep -v x", reason: []string{"would match"}},
		{name: "substitution", cmd: "systemctl status $(id)", rule: RuleShellSyntax, reason: []string{"`$(`"}},
		{name: "backticks", cmd: "systemctl status `id`", rule: RuleShellSyntax},
		{name: "redirection", cmd: "cat /var/log/app/x > /etc/passwd", rule: RuleShellSyntax},
		{name: "variable", cmd: "systemctl status $HOME", rule: RuleShellSyntax},
		{name: "glob", cmd: "cat /var/log/app/*", rule: RuleShellSyntax, reason: []string{"glob"}},
		{name: "assignment", cmd: "LD_PRELOAD=/x uptime", rule: RuleShellSyntax},
		{name: "newline", cmd: "uptime\nreboot", rule: RuleShellSyntax},
		{name: "quoted newline", cmd: "uptime 'a\nb'", rule: RuleCommand, reason: []string{"raw: --command rule"}},
		{name: "unterminated", cmd: "cat 'x", rule: RuleUnparseable},
		{name: "nul", cmd: "uptime\x00; reboot", rule: RuleUnparseable},
		{name: "empty", cmd: "   ", rule: RuleUnparseable},
		{name: "not utf-8", cmd: "cat '\xff'", rule: RuleUnparseable, reason: []string{"UTF-8"}},
		{name: "too long", cmd: "echo " + strings.Repeat("a", MaxCommand), rule: RuleUnparseable},
		{name: "sftp-server as a command", cmd: "/usr/lib/openssh/sftp-server", rule: RuleFiles, reason: []string{"subsystem"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := AuthorizeExec(g, c.cmd)
			if d.Allow != c.allow {
				t.Fatalf("allow = %v (rule %s: %s), want %v", d.Allow, d.Rule, d.Reason, c.allow)
			}
			if c.rule != "" && d.Rule != c.rule {
				t.Errorf("rule = %q, want %q", d.Rule, c.rule)
			}
			if d.Text != c.cmd || d.Class.Kind != KindExec && d.Class.Kind != KindSubsystem {
				t.Errorf("decision text %q kind %q", d.Text, d.Class.Kind)
			}
			if c.allow {
				if d.Reason != "" {
					t.Errorf("allowed with a reason: %s", d.Reason)
				}
				if c.forward != "" && d.Command != c.forward {
					t.Errorf("forwarded command = %q, want %q", d.Command, c.forward)
				}
				if !strings.HasPrefix(d.Class.Why, "matches --command") {
					t.Errorf("why = %q", d.Class.Why)
				}
				return
			}
			if d.Command != "" {
				t.Errorf("refused command has something to forward: %q", d.Command)
			}
			if d.Reason == "" || strings.ContainsAny(d.Reason, "\n\r") {
				t.Errorf("reason %q", d.Reason)
			}
			for _, want := range c.reason {
				if !strings.Contains(d.Reason, want) {
					t.Errorf("reason lacks %q:\n%s", want, d.Reason)
				}
			}
		})
	}
}

// TestSSHExecForwardsWhatWasMatched: for an allowed plain command, the
// command sent upstream reads back as exactly the argv that was matched.
func TestSSHExecForwardsWhatWasMatched(t *testing.T) {
	g := sshGrant(authz.SSHPolicy{Commands: []string{"echo *", "printf * *"}})
	for _, cmd := range []string{`echo "a b"`, `echo 'x;y'`, `printf '%s\n' "it's"`, `echo ''`, `echo '$(id)'`, `echo '*'`} {
		d := AuthorizeExec(g, cmd)
		if !d.Allow {
			t.Fatalf("%s refused: %s", cmd, d.Reason)
		}
		back, err := ParseShellCommand(d.Command)
		if err != nil || !back.Plain() || !reflect.DeepEqual(back.Argv, d.Argv) {
			t.Errorf("%s forwarded as %s, which reads as %q %v", cmd, d.Command, back.Argv, back.Syntax)
		}
	}
}

func TestSSHExecNoGrant(t *testing.T) {
	for _, g := range []*authz.Grant{nil, sshGrant(authz.SSHPolicy{})} {
		d := AuthorizeExec(g, "uptime")
		if d.Allow || !strings.Contains(d.Reason, "matches no --command rule") {
			t.Errorf("grant %v: %+v", g, d)
		}
	}
	// A rule that does not compile matches nothing and is named.
	d := AuthorizeExec(sshGrant(authz.SSHPolicy{Commands: []string{"echo 'x", "** x"}}), "echo x")
	if d.Allow || !strings.Contains(d.Reason, "unusable rules") {
		t.Errorf("bad rules: %+v", d)
	}
}

func TestSSHCheckCommandPattern(t *testing.T) {
	for p, ok := range map[string]bool{
		"uptime": true, "systemctl status *": true, "grep x **": true, "raw:ps | grep *": true,
		"": false, "   ": false, "raw:": false, "echo 'x": false, "** x": false, "**": false, "a ** b": false,
	} {
		if err := CheckCommandPattern(p); (err == nil) != ok {
			t.Errorf("CheckCommandPattern(%q) = %v", p, err)
		}
	}
}

func TestSSHSCP(t *testing.T) {
	read := sshGrant(authz.SSHPolicy{Files: "read"})
	rw := sshGrant(authz.SSHPolicy{Files: "read-write"})
	none := sshGrant(authz.SSHPolicy{Commands: []string{"scp **"}})
	cases := []struct {
		name  string
		g     *authz.Grant
		cmd   string
		allow bool
		scp   *SCP
		why   string
	}{
		{"download under read", read, "scp -f /etc/hostname", true, &SCP{Paths: []string{"/etc/hostname"}}, ""},
		{"download with flags", read, "scp -v -r -p -f -- /srv/x", true, &SCP{Recursive: true, Paths: []string{"/srv/x"}}, ""},
		{"upload under read", read, "scp -t /tmp/x", false, nil, "--files read-write"},
		{"upload under read-write", rw, "scp -d -t -- /tmp/", true, &SCP{Upload: true, Paths: []string{"/tmp/"}}, ""},
		{"no files grant", none, "scp -f /etc/hostname", false, nil, "no file transfer"},
		{"both directions", rw, "scp -t -f /x", false, nil, "exactly one"},
		{"neither", rw, "scp /x", false, nil, "exactly one"},
		{"no path", rw, "scp -f", false, nil, "no path"},
		{"unknown option", rw, "scp -S /bin/sh -f /x", false, nil, "option -S"},
		{"glob", rw, "scp -f /var/log/*.log", false, nil, "shell syntax"},
		{"chained", rw, "scp -f /x; id", false, nil, "shell syntax"},
		{"full path", rw, "/usr/bin/scp -f /x", true, &SCP{Paths: []string{"/x"}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := AuthorizeExec(c.g, c.cmd)
			if d.Class.Kind != KindSCP {
				t.Errorf("kind %q", d.Class.Kind)
			}
			if d.Allow != c.allow {
				t.Fatalf("allow = %v: %s", d.Allow, d.Reason)
			}
			if c.allow && !reflect.DeepEqual(d.SCP, c.scp) {
				t.Errorf("scp = %+v, want %+v", d.SCP, c.scp)
			}
			if !strings.Contains(d.Reason, c.why) {
				t.Errorf("reason %q lacks %q", d.Reason, c.why)
			}
		})
	}
}

func TestSSHShellAndPty(t *testing.T) {
	yes, no := sshGrant(authz.SSHPolicy{Shell: true}), sshGrant(authz.SSHPolicy{Commands: []string{"uptime"}})
	if d := AuthorizeShell(yes); !d.Allow || d.Class.Kind != KindShell {
		t.Errorf("shell under --shell: %+v", d)
	}
	if d := AuthorizeShell(no); d.Allow || !strings.Contains(d.Reason, "--shell") || !strings.Contains(d.Reason, `commands "uptime"`) {
		t.Errorf("shell without --shell: %+v", d)
	}
	if d := AuthorizePty(yes, "xterm"); !d.Allow || d.Text != "pty xterm" {
		t.Errorf("pty under --shell: %+v", d)
	}
	if d := AuthorizePty(no, "xterm"); d.Allow || !strings.Contains(d.Reason, "without -t") {
		t.Errorf("pty without --shell: %+v", d)
	}
}

func TestSSHSubsystem(t *testing.T) {
	if d := AuthorizeSubsystem(sshGrant(authz.SSHPolicy{Files: "read"}), "sftp"); !d.Allow {
		t.Errorf("sftp under read: %+v", d)
	}
	if d := AuthorizeSubsystem(sshGrant(authz.SSHPolicy{Shell: true}), "sftp"); d.Allow || !strings.Contains(d.Reason, "--files read") {
		t.Errorf("sftp without files: %+v", d)
	}
	if d := AuthorizeSubsystem(sshGrant(authz.SSHPolicy{Files: "read-write"}), "netconf"); d.Allow || d.Rule != RuleNever {
		t.Errorf("other subsystem: %+v", d)
	}
}

func TestSSHSFTP(t *testing.T) {
	read, rw := sshGrant(authz.SSHPolicy{Files: "read"}), sshGrant(authz.SSHPolicy{Files: "read-write"})
	cases := []struct {
		g     *authz.Grant
		op    SFTPOp
		allow bool
		text  string
	}{
		{read, SFTPOp{Op: "open", Path: "/etc/hosts", Detail: "read"}, true, "sftp open /etc/hosts (read)"},
		{read, SFTPOp{Op: "stat", Path: "/etc"}, true, "sftp stat /etc"},
		{read, SFTPOp{Op: "open", Path: "/tmp/x", Write: true, Detail: "write,create,truncate"}, false, "sftp open /tmp/x (write,create,truncate)"},
		{read, SFTPOp{Op: "rename", Path: "/a", Target: "/b", Write: true}, false, "sftp rename /a -> /b"},
		{rw, SFTPOp{Op: "remove", Path: "/tmp/x", Write: true}, true, "sftp remove /tmp/x"},
		{sshGrant(authz.SSHPolicy{Shell: true}), SFTPOp{Op: "stat", Path: "/"}, false, "sftp stat /"},
	}
	for _, c := range cases {
		d := AuthorizeSFTP(c.g, c.op)
		if d.Allow != c.allow || d.Text != c.text || d.Class.Kind != "SFTP "+strings.ToUpper(c.op.Op) {
			t.Errorf("%+v under %q: %+v", c.op, c.g.SSH.Files, d)
		}
		if !c.allow && c.op.Write && !strings.Contains(d.Reason, "--files read-write") {
			t.Errorf("write refusal does not say what to ask for: %s", d.Reason)
		}
	}
}

func TestSSHForward(t *testing.T) {
	g := sshGrant(authz.SSHPolicy{Forwards: []string{"127.0.0.1:5432", "db-*.internal:*", "[::1]:80", "localhost:8080"}})
	cases := []struct {
		host  string
		port  uint32
		allow bool
	}{
		{"127.0.0.1", 5432, true},
		{"127.0.0.1", 5433, false},
		{"db-1.internal", 3306, true},
		{"DB-2.Internal", 1, true},
		{"db.internal", 3306, false},
		{"::1", 80, true},
		{"localhost", 8080, true},
		{"10.0.0.1", 22, false},
	}
	for _, c := range cases {
		d := AuthorizeForward(g, c.host, c.port)
		if d.Allow != c.allow || d.Class.Kind != KindDirectTCPIP {
			t.Errorf("forward to %s:%d: %+v", c.host, c.port, d)
		}
		if !c.allow && !strings.Contains(d.Reason, "--forward") {
			t.Errorf("reason: %s", d.Reason)
		}
	}
	if d := AuthorizeListen(g, "localhost", 8080); !d.Allow || d.Class.Kind != KindTCPIPForward {
		t.Errorf("listen: %+v", d)
	}
	if d := AuthorizeForward(sshGrant(authz.SSHPolicy{Shell: true}), "127.0.0.1", 22); d.Allow || !strings.Contains(d.Reason, "allows no forwarding") {
		t.Errorf("no forwards: %+v", d)
	}
}

func TestSSHEnv(t *testing.T) {
	for _, c := range []struct {
		name, value string
		allow       bool
	}{
		{"LANG", "C.UTF-8", true}, {"LC_ALL", "C", true}, {"LC_CTYPE", "en_US.UTF-8", true}, {"TERM", "xterm", true},
		{"PATH", "/tmp", false}, {"LD_PRELOAD", "/tmp/x.so", false}, {"BASH_ENV", "/tmp/x", false},
		{"LC_", "x", false}, {"LC_X-Y", "x", false}, {"LANG", strings.Repeat("a", 300), false}, {"LANG", "a\nb", false},
	} {
		if d := AuthorizeEnv(c.name, c.value); d.Allow != c.allow {
			t.Errorf("env %s=%q: %+v", c.name, c.value, d)
		}
	}
}

func TestSSHGlobMatchIsLinear(t *testing.T) {
	// Many wildcards against a long near-miss must not backtrack
	// exponentially.
	segs := sshRawSegments(strings.Repeat("*a", 30) + "b")
	s := strings.Repeat("a", 4000)
	if sshGlobMatch(segs, s, true) || sshGlobMatch(segs, s, false) {
		t.Fatal("matched")
	}
	if !sshGlobMatch(sshRawSegments("x*y*z"), "x..y.z", false) || sshGlobMatch(sshRawSegments("x*y*z"), "x..y.z", true) {
		t.Fatal("inert wildcard takes ..")
	}
	if !sshGlobMatch(sshRawSegments("x*z"), "x.a.z", true) {
		t.Fatal("inert wildcard refuses single dots")
	}
}

// TestSSHHoldCommand: --hold-command holds an allowed command its pattern
// matches, a * standing for options too; what it does not match, or what
// the grant refuses, is decided as without it.
func TestSSHHoldCommand(t *testing.T) {
	g := &authz.Grant{ID: "gr_1", SSH: authz.SSHPolicy{Commands: []string{"rm *", "rm -* *", "ls *", "raw:ps aux | grep *"}},
		Holds: authz.Holds{Commands: []string{"rm * *", "rm *", "raw:ps aux | *"}}}
	for _, tc := range []struct {
		cmd         string
		allow, hold bool
	}{
		{"rm /tmp/x", true, true},
		{"rm -f /tmp/x", true, true}, // "rm *" near-matches: held
		{"ls /tmp", true, false},
		{"ps aux | grep nginx", true, true},
		{"cat /etc/passwd", false, false}, // refused stays refused
	} {
		d := AuthorizeExec(g, tc.cmd)
		if d.Allow != tc.allow || d.Hold != tc.hold || tc.hold && d.Rule != authz.RuleHoldCommand {
			t.Errorf("%q: allow %v hold %v rule %q; want %v %v", tc.cmd, d.Allow, d.Hold, d.Rule, tc.allow, tc.hold)
		}
		if tc.hold && (d.Command == "" || !strings.Contains(d.Reason, "waits for an approver")) {
			t.Errorf("%q held: command %q, reason %q", tc.cmd, d.Command, d.Reason)
		}
	}
	if v := authz.ApplyHolds(g, authz.SingleVerdict(AuthorizeExec(g, "rm /tmp/x").Decision)); !v.Allow || !v.Held() {
		t.Errorf("ApplyHolds lost a command hold: %+v", v)
	}
}
