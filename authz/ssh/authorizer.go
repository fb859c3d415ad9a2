// Package ssh is the authorizer of SSH requests: exec commands (matched
// against a grant's --command rules after reading them as a shell would),
// shells, ptys, subsystems, SFTP operations, forwarding and environment
// variables, each decided under the grant's SSH policy.
package ssh

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/airlockhq/airlock/authz"
)

// SSH request kinds, as Classification.Kind of SSH decisions.
const (
	KindExec          = "EXEC"
	KindSCP           = "SCP"
	KindShell         = "SHELL"
	KindPty           = "PTY"
	KindEnv           = "ENV"
	KindSubsystem     = "SUBSYSTEM"
	KindDirectTCPIP   = "DIRECT-TCPIP"
	KindTCPIPForward  = "TCPIP-FORWARD"
	KindX11           = "X11"
	KindAgentForward  = "AGENT-FORWARDING"
	KindOtherRequest  = "REQUEST"
	KindUpstream      = "UPSTREAM"
	KindProtocolError = "PROTOCOL"
)

// Rules of SSH decisions, in Decision.Rule.
const (
	RuleCommand     = "command"      // an argv --command rule matched, or none did
	RuleRaw         = "raw-command"  // a raw: rule matched
	RuleShellSyntax = "shell-syntax" // shell syntax without a raw: rule
	RuleUnparseable = "unparseable"
	RuleShell       = "shell"
	RuleFiles       = "files"
	RuleForward     = "forward"
	RuleEnv         = "env"
	RuleNever       = "never" // refused under every grant
)

// MaxCommand is the longest exec command airlock reads; a longer one is
// refused.
const MaxCommand = 16 << 10

// Command is the decision on an exec request.
type Command struct {
	authz.Decision
	// Command is what to send the target when allowed: the argv requoted
	// so the target's shell splits it back into exactly what was matched,
	// or, under a raw rule, the command as the agent sent it.
	Command string
	// Argv is the command's words when it is plain.
	Argv []string
	// SCP is set when the command is the remote end of scp.
	SCP *SCP
}

// SCP is the remote end of an scp transfer (the legacy protocol, run as an
// exec of scp -t or scp -f).
type SCP struct {
	// Upload is scp -t: the target receives files. Otherwise scp -f: the
	// target sends them.
	Upload    bool
	Recursive bool
	Paths     []string
}

// AuthorizeExec decides an exec request under g's SSH policy.
func AuthorizeExec(g *authz.Grant, command string) Command {
	out := Command{Decision: authz.Decision{Text: command, Class: authz.Classification{Kind: KindExec}}}
	deny := func(rule, reason string) Command {
		out.Rule, out.Reason = rule, reason
		return out
	}
	if len(command) > MaxCommand {
		return deny(RuleUnparseable, fmt.Sprintf("the command is %d bytes long; airlock reads commands of up to %d bytes", len(command), MaxCommand))
	}
	if !utf8.ValidString(command) {
		return deny(RuleUnparseable, "the command is not valid UTF-8; airlock records commands as text, so it runs only commands it can record exactly")
	}
	sc, err := ParseShellCommand(command)
	if err != nil {
		return deny(RuleUnparseable, "could not read this command as a shell would ("+err.Error()+"), so it was not run")
	}
	if len(sc.Argv) == 0 && sc.Plain() {
		return deny(RuleUnparseable, "the command is empty; to get a shell, ssh without a command under a grant with --shell")
	}
	out.Argv = sc.Argv
	if len(sc.Argv) > 0 {
		switch path.Base(sc.Argv[0]) {
		case "scp":
			return authorizeSCP(g, out, sc)
		case "sftp-server", "internal-sftp":
			out.Class.Kind = KindSubsystem
			return deny(RuleFiles, "run sftp as the sftp subsystem (sftp, scp), not as a command, so airlock can read and record each file operation")
		}
	}
	rules, bad := sshCompileRules(g)
	near := ""
	if sc.Plain() {
		for _, r := range rules {
			if r.raw {
				continue
			}
			switch r.matchArgv(sc.Argv) {
			case sshFullMatch:
				out.Allow, out.Rule = true, RuleCommand
				out.Class.Why = fmt.Sprintf("matches --command %q", r.text)
				out.Command = QuoteArgv(sc.Argv)
				return holdCommand(g, sc, command, out)
			case sshNearMatch:
				near = r.text
			}
		}
	}
	text := strings.TrimSpace(command)
	for _, r := range rules {
		if !r.raw {
			continue
		}
		switch r.matchRaw(text) {
		case sshFullMatch:
			out.Allow, out.Rule = true, RuleRaw
			out.Class.Why = fmt.Sprintf("matches --command %q", r.text)
			out.Command = command
			return holdCommand(g, sc, command, out)
		case sshNearMatch:
			near = r.text
		}
	}
	var why strings.Builder
	if !sc.Plain() {
		out.Rule = RuleShellSyntax
		fmt.Fprintf(&why, "command %s uses shell syntax (%s), which airlock runs only under a raw: rule", sshDisplayCommand(command), strings.Join(sc.Syntax, ", "))
	} else {
		out.Rule = RuleCommand
		fmt.Fprintf(&why, "command %s matches no --command rule", sshDisplayCommand(command))
	}
	fmt.Fprintf(&why, "; grant %s (%s) allows %s", sshGrantName(g), authz.DisplayTask(sshTaskOf(g)), describeSSH(g))
	if near != "" {
		fmt.Fprintf(&why, " (rule %q would match, but its * stands for no option (-...) and no .. path element: write -* to allow options)", near)
	}
	if len(bad) > 0 {
		fmt.Fprintf(&why, " (unusable rules: %s)", strings.Join(bad, "; "))
	}
	suggest := QuoteArgv(sc.Argv)
	if !sc.Plain() {
		suggest = RawPrefix + text
	}
	if !strings.ContainsFunc(suggest, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		fmt.Fprintf(&why, ". To run it, request a grant with --command %s: %s", authz.ShellQuote(suggest), authz.RequestFor(g, "--command "+authz.ShellQuote(suggest)))
	} else {
		why.WriteString(". To run it, request a grant with a raw: --command rule for it")
	}
	out.Reason = why.String()
	return out
}

// holdCommand marks out, an allowed command, as held when one of g's
// --hold-command patterns matches it. A pattern's * that would not allow
// an option or a .. path element (a near match) holds it all the same:
// holding errs towards asking a person.
func holdCommand(g *authz.Grant, sc ShellCommand, command string, out Command) Command {
	for _, p := range g.Holds.Commands {
		r, err := sshCompileRule(p)
		if err != nil {
			continue // refused when the grant was made
		}
		m := sshNoMatch
		switch {
		case r.raw:
			m = r.matchRaw(strings.TrimSpace(command))
		case sc.Plain():
			m = r.matchArgv(sc.Argv)
		}
		if m != sshNoMatch {
			out.Hold, out.Rule = true, authz.RuleHoldCommand
			out.Reason = fmt.Sprintf("command %s waits for an approver: the grant holds commands matching %q", sshDisplayCommand(command), p)
			return out
		}
	}
	return out
}

// authorizeSCP decides the remote end of scp, which follows --files.
func authorizeSCP(g *authz.Grant, out Command, sc ShellCommand) Command {
	out.Class.Kind = KindSCP
	out.Rule = RuleFiles
	if !sc.Plain() {
		out.Reason = fmt.Sprintf("scp command %s uses shell syntax (%s); quote remote paths and list files instead of globs", sshDisplayCommand(out.Text), strings.Join(sc.Syntax, ", "))
		return out
	}
	s := &SCP{}
	var to, from bool
	args := sc.Argv[1:]
	for len(args) > 0 {
		a := args[0]
		if a == "--" {
			args = args[1:]
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		for _, f := range a[1:] {
			switch f {
			case 't':
				to = true
			case 'f':
				from = true
			case 'r':
				s.Recursive = true
			case 'p', 'd', 'v', 'q':
			default:
				out.Reason = fmt.Sprintf("scp option -%c is not one the remote end of scp takes (-t, -f, -r, -p, -d, -v)", f)
				return out
			}
		}
		args = args[1:]
	}
	s.Paths = args
	out.SCP = s
	switch {
	case to == from:
		out.Reason = "scp must run as exactly one of scp -t (upload) or scp -f (download)"
		return out
	case len(s.Paths) == 0:
		out.Reason = "scp names no path"
		return out
	}
	s.Upload = to
	out.Class.Why = "scp -f (download)"
	need := "read"
	if s.Upload {
		out.Class.Why, need = "scp -t (upload)", "read-write"
	}
	if d := sshFilesDecision(g, need, "scp "+strings.Join(s.Paths, " ")); !d.Allow {
		out.Reason = d.Reason
		return out
	}
	out.Allow = true
	out.Command = QuoteArgv(sc.Argv)
	return out
}

// AuthorizeShell decides a shell request.
func AuthorizeShell(g *authz.Grant) authz.Decision {
	d := authz.Decision{Text: "shell", Rule: RuleShell, Class: authz.Classification{Kind: KindShell}}
	if g != nil && g.SSH.Shell {
		d.Allow = true
		return d
	}
	d.Reason = fmt.Sprintf("grant %s (%s) allows no interactive shell; it allows %s. To get one, request a grant with --shell: %s",
		sshGrantName(g), authz.DisplayTask(sshTaskOf(g)), describeSSH(g), authz.RequestFor(g, "--shell"))
	return d
}

// AuthorizePty decides a pty-req: a terminal comes with the shell.
func AuthorizePty(g *authz.Grant, term string) authz.Decision {
	d := AuthorizeShell(g)
	d.Text, d.Class.Kind = "pty "+authz.OneLine(term), KindPty
	if !d.Allow {
		d.Reason = fmt.Sprintf("a terminal (pty) comes only with an interactive shell: grant %s allows none; run commands without -t, or request a grant with --shell: %s", sshGrantName(g), authz.RequestFor(g, "--shell"))
	}
	return d
}

// AuthorizeSubsystem decides a subsystem request; sftp follows --files.
func AuthorizeSubsystem(g *authz.Grant, name string) authz.Decision {
	d := authz.Decision{Text: "subsystem " + authz.OneLine(name), Rule: RuleFiles, Class: authz.Classification{Kind: KindSubsystem}}
	if name != "sftp" {
		d.Rule = RuleNever
		d.Reason = fmt.Sprintf("subsystem %q is not supported through airlock (only sftp)", name)
		return d
	}
	return sshFilesDecision(g, "read", "sftp")
}

// SFTPOp is one SFTP request as authorization needs it.
type SFTPOp struct {
	// Op is the request's name: open, remove, rename, mkdir, rmdir,
	// setstat, symlink, stat, opendir, realpath, ... or an extension's
	// name.
	Op string
	// Path is what the operation acts on; Target is the second path of
	// rename, symlink and hard link.
	Path, Target string
	// Write is true when the operation changes files.
	Write bool
	// Detail is shown after the path (e.g. open flags).
	Detail string
}

// Text is the operation as recorded: "open /etc/hosts (read)".
func (o SFTPOp) Text() string {
	t := "sftp " + o.Op
	if o.Path != "" {
		t += " " + o.Path
	}
	if o.Target != "" {
		t += " -> " + o.Target
	}
	if o.Detail != "" {
		t += " (" + o.Detail + ")"
	}
	return t
}

// AuthorizeSFTP decides one SFTP operation: reads need --files read,
// writes --files read-write.
func AuthorizeSFTP(g *authz.Grant, op SFTPOp) authz.Decision {
	need := "read"
	if op.Write {
		need = "read-write"
	}
	d := sshFilesDecision(g, need, op.Text())
	d.Class.Kind = "SFTP " + strings.ToUpper(op.Op)
	return d
}

// sshFilesDecision allows a file transfer that needs level ("read" or
// "read-write").
func sshFilesDecision(g *authz.Grant, level, text string) authz.Decision {
	d := authz.Decision{Text: text, Rule: RuleFiles, Class: authz.Classification{Kind: KindSubsystem}}
	have := ""
	if g != nil {
		have = g.SSH.Files
	}
	if have == "read-write" || have == level {
		d.Allow = true
		return d
	}
	what := "file transfer (scp, sftp)"
	if level == "read-write" {
		what = "writing files"
	}
	allows := "no file transfer"
	if have != "" {
		allows = "--files " + have
	}
	d.Reason = fmt.Sprintf("%s needs --files %s; grant %s (%s) allows %s. To get it, request a grant with --files %s: %s",
		what, level, sshGrantName(g), authz.DisplayTask(sshTaskOf(g)), allows, level, authz.RequestFor(g, "--files "+level))
	return d
}

// AuthorizeForward decides a direct-tcpip channel (ssh -L, -W, -J):
// its destination must be listed in the grant's --forward entries.
func AuthorizeForward(g *authz.Grant, host string, port uint32) authz.Decision {
	return sshForwardDecision(g, KindDirectTCPIP, "connect to", host, port)
}

// AuthorizeListen decides a tcpip-forward request (ssh -R): the address
// to listen on must be listed in the grant's --forward entries.
func AuthorizeListen(g *authz.Grant, host string, port uint32) authz.Decision {
	return sshForwardDecision(g, KindTCPIPForward, "listen on", host, port)
}

func sshForwardDecision(g *authz.Grant, kind, verb, host string, port uint32) authz.Decision {
	dest := sshJoinHostPort(host, port)
	d := authz.Decision{Text: strings.ToLower(kind) + " " + dest, Rule: RuleForward, Class: authz.Classification{Kind: kind}}
	if g != nil {
		for _, f := range g.SSH.Forwards {
			if sshForwardMatch(f, host, port) {
				d.Allow = true
				d.Class.Why = fmt.Sprintf("matches --forward %q", f)
				return d
			}
		}
	}
	allows := "no forwarding"
	if g != nil && len(g.SSH.Forwards) > 0 {
		allows = "forwarding to " + strings.Join(g.SSH.Forwards, ", ")
	}
	d.Reason = fmt.Sprintf("port forwarding to %s is not allowed (to %s it); grant %s (%s) allows %s. To get it, request a grant with --forward %s: %s",
		dest, verb, sshGrantName(g), authz.DisplayTask(sshTaskOf(g)), allows, dest, authz.RequestFor(g, "--forward "+authz.ShellQuote(dest)))
	return d
}

func sshJoinHostPort(host string, port uint32) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// AuthorizeEnv decides an env request: only the locale and the
// terminal type pass; anything else could change what a command does
// (PATH, LD_PRELOAD, BASH_ENV, ...).
func AuthorizeEnv(name, value string) authz.Decision {
	d := authz.Decision{Text: authz.OneLine(name) + "=" + authz.OneLine(value), Rule: RuleEnv, Class: authz.Classification{Kind: KindEnv}}
	if name == "LANG" || name == "TERM" || len(name) > 3 && strings.HasPrefix(name, "LC_") && sshIsAssignment(name+"=") {
		if len(value) <= 256 && !strings.ContainsAny(value, "\x00\n") {
			d.Allow = true
			return d
		}
		d.Reason = fmt.Sprintf("environment variable %s: the value is too long or holds control characters", name)
		return d
	}
	d.Reason = fmt.Sprintf("environment variable %s is not passed on: only LANG, LC_* and TERM are", authz.OneLine(name))
	return d
}

// Refuse is the decision on a request airlock refuses under every
// grant (X11 and agent forwarding, unknown requests and channels).
func Refuse(kind, text, reason string) authz.Decision {
	return authz.Decision{Text: text, Rule: RuleNever, Reason: reason, Class: authz.Classification{Kind: kind}}
}

// sshCompileRules compiles g's command rules; bad lists those that do not
// compile (they match nothing).
func sshCompileRules(g *authz.Grant) (rules []*sshCommandRule, bad []string) {
	if g == nil {
		return nil, nil
	}
	for _, p := range g.SSH.Commands {
		r, err := sshCompileRule(p)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		rules = append(rules, r)
	}
	return rules, bad
}

// describeSSH says what an SSH grant allows, for a reason.
func describeSSH(g *authz.Grant) string {
	if g == nil {
		return "nothing"
	}
	var parts []string
	if n := len(g.SSH.Commands); n > 0 {
		qs := make([]string, 0, min(n, 5))
		for _, c := range g.SSH.Commands[:min(n, 5)] {
			qs = append(qs, fmt.Sprintf("%q", authz.OneLine(c)))
		}
		if n > 5 {
			qs = append(qs, fmt.Sprintf("and %d more", n-5))
		}
		parts = append(parts, "commands "+strings.Join(qs, ", "))
	}
	if g.SSH.Shell {
		parts = append(parts, "an interactive shell")
	}
	if g.SSH.Files != "" {
		parts = append(parts, "file transfer ("+g.SSH.Files+")")
	}
	if len(g.SSH.Forwards) > 0 {
		parts = append(parts, "forwarding to "+strings.Join(g.SSH.Forwards, ", "))
	}
	if len(parts) == 0 {
		return "nothing over ssh"
	}
	return strings.Join(parts, "; ")
}

func sshGrantName(g *authz.Grant) string {
	if g == nil || g.ID == "" {
		return "(none)"
	}
	return g.ID
}

func sshTaskOf(g *authz.Grant) string {
	if g == nil {
		return ""
	}
	return g.Task
}

// sshDisplayCommand quotes a command for a reason, cut short.
func sshDisplayCommand(c string) string {
	c = authz.OneLine(c)
	const limit = 200
	if len(c) > limit {
		c = c[:limit] + "…"
	}
	return fmt.Sprintf("%q", c)
}
