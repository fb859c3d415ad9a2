package ssh

import (
	"reflect"
	"testing"

	"github.com/airlockhq/airlock/authz"
)

// FuzzSSHExec: the shell reader never panics, an allowed plain command is
// forwarded as text that reads back as the same argv, and a command with
// shell syntax is never allowed by an argv rule.
func FuzzSSHExec(f *testing.F) {
	for _, s := range []string{
		"uptime", "systemctl status nginx", `journalctl -u nginx --since "1 hour ago"`,
		"ls; id", "echo $(id)", "echo `id`", "cat x > y", `echo 'a'\''b'`, "echo \"a\\\"b\"",
		"ls\x00id", "a\\\nb", "echo ${x}", "scp -t -- /tmp/x", "ps aux | grep x",
	} {
		f.Add(s)
	}
	g := sshGrant(authz.SSHPolicy{Commands: []string{"*", "* *", "* * *", "* * * *", "raw:ps aux | grep *"}})
	f.Fuzz(func(t *testing.T, cmd string) {
		sc, err := ParseShellCommand(cmd)
		d := AuthorizeExec(g, cmd)
		if err != nil || !d.Allow {
			return
		}
		if d.Rule == RuleRaw {
			if d.Command != cmd {
				t.Fatalf("raw command changed: %q -> %q", cmd, d.Command)
			}
			return
		}
		if !sc.Plain() {
			t.Fatalf("argv rule allowed %q with syntax %v", cmd, sc.Syntax)
		}
		back, err := ParseShellCommand(d.Command)
		if err != nil || !back.Plain() || !reflect.DeepEqual(back.Argv, sc.Argv) {
			t.Fatalf("%q forwarded as %q, reads back as %q %v %v", cmd, d.Command, back.Argv, back.Syntax, err)
		}
	})
}
