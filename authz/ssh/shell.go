package ssh

import (
	"fmt"
	"strings"
)

// ShellCommand is an SSH exec command line read the way a POSIX shell
// (sh, dash, bash, zsh) reads it.
//
// A command is "plain" when the shell would do nothing with it but split it
// into words and remove quotes: then Argv is exactly the argument vector
// the target runs, and command rules can be matched against it. Anything
// else the shell would act on (separators, pipes, redirections,
// substitutions, expansions, globs, comments, assignments, keywords) is
// listed in Syntax, and the command matches only a raw: rule.
type ShellCommand struct {
	Argv []string
	// Syntax describes each kind of shell syntax found, in order of first
	// appearance, e.g. "`;` (command separator)". Empty for a plain
	// command.
	Syntax []string
}

// Plain reports whether the shell would only split and unquote the
// command.
func (c ShellCommand) Plain() bool { return len(c.Syntax) == 0 }

// sshErrShellSyntax is a command the shell itself could not read.
type sshErrShellSyntax struct{ msg string }

func (e *sshErrShellSyntax) Error() string { return e.msg }

// sshReservedWords are the words a shell treats as syntax when they stand
// unquoted as a command's first word (POSIX, plus bash and zsh keywords).
var sshReservedWords = map[string]bool{
	"if": true, "then": true, "else": true, "elif": true, "fi": true,
	"do": true, "done": true, "case": true, "esac": true, "while": true,
	"until": true, "for": true, "in": true, "function": true, "select": true,
	"time": true, "coproc": true, "[[": true, "]]": true, "!": true,
	"{": true, "}": true, "repeat": true, "foreach": true, "end": true,
}

// ParseShellCommand splits s into words like a POSIX shell and lists the
// shell syntax it contains. The error is for text no shell would run
// (an unterminated quote, a NUL byte).
func ParseShellCommand(s string) (ShellCommand, error) {
	var (
		out     ShellCommand
		seen    = map[string]bool{}
		word    strings.Builder
		inWord  bool
		quoted  bool // some part of the current word was quoted
		literal bool // the current word so far is unquoted text only
	)
	syntax := func(what string) {
		if !seen[what] {
			seen[what] = true
			out.Syntax = append(out.Syntax, what)
		}
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		return out, &sshErrShellSyntax{fmt.Sprintf("the command contains a NUL byte at position %d (the target would run only what comes before it)", i+1)}
	}
	endWord := func() {
		if !inWord {
			return
		}
		w := word.String()
		if len(out.Argv) == 0 && !quoted && sshReservedWords[w] {
			syntax(fmt.Sprintf("`%s` (shell keyword)", w))
		}
		if len(out.Argv) == 0 && literal && sshIsAssignment(w) {
			syntax("`NAME=value` before the command (variable assignment)")
		}
		out.Argv = append(out.Argv, w)
		word.Reset()
		inWord, quoted, literal = false, false, true
	}
	literal = true
	startWord := func() {
		if !inWord {
			inWord = true
		}
	}
	n := len(s)
	for i := 0; i < n; i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			endWord()
		case c == '\n':
			endWord()
			syntax("newline (command separator)")
		case c == ';':
			endWord()
			syntax("`;` (command separator)")
		case c == '&':
			endWord()
			if i+1 < n && s[i+1] == '&' {
				i++
				syntax("`&&` (command list)")
			} else {
				syntax("`&` (background job)")
			}
		case c == '|':
			endWord()
			if i+1 < n && s[i+1] == '|' {
				i++
				syntax("`||` (command list)")
			} else {
				syntax("`|` (pipe)")
			}
		case c == '<' || c == '>':
			endWord()
			syntax(fmt.Sprintf("`%c` (redirection)", c))
		case c == '(' || c == ')':
			endWord()
			syntax(fmt.Sprintf("`%c` (subshell or grouping)", c))
		case c == '`':
			startWord()
			syntax("backticks (command substitution)")
			word.WriteByte(c)
			literal = false
		case c == '$':
			startWord()
			if what := sshDollarSyntax(s, i); what != "" {
				syntax(what)
				literal = false
			}
			word.WriteByte(c)
		case c == '\\':
			startWord()
			if i+1 >= n {
				return out, &sshErrShellSyntax{"the command ends in a backslash"}
			}
			i++
			if s[i] == '\n' {
				// A line continuation: both characters vanish.
				continue
			}
			word.WriteByte(s[i])
			quoted, literal = true, false
		case c == '\'':
			startWord()
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return out, &sshErrShellSyntax{fmt.Sprintf("unterminated single quote at position %d", i+1)}
			}
			word.WriteString(s[i+1 : i+1+end])
			i += end + 1
			quoted, literal = true, false
		case c == '"':
			startWord()
			j, err := sshReadDoubleQuoted(s, i+1, &word, syntax)
			if err != nil {
				return out, err
			}
			i = j
			quoted, literal = true, false
		default:
			startWord()
			atStart := word.Len() == 0 && !quoted && literal
			switch {
			case c == '*' || c == '?' || c == '[':
				syntax(fmt.Sprintf("unquoted `%c` (file name glob)", c))
			case c == '{' || c == '}':
				syntax(fmt.Sprintf("unquoted `%c` (brace expansion or grouping)", c))
			case c == '!' || c == '^':
				syntax(fmt.Sprintf("unquoted `%c` (history or pattern syntax)", c))
			case c == '~' && atStart:
				syntax("`~` at the start of a word (home directory expansion)")
			case c == '#' && atStart:
				syntax("`#` at the start of a word (comment)")
			case c == '=' && atStart:
				syntax("`=` at the start of a word (zsh command expansion)")
			case c < 0x20 || c == 0x7f:
				syntax(fmt.Sprintf("control character 0x%02x", c))
			}
			word.WriteByte(c)
		}
	}
	endWord()
	return out, nil
}

// sshReadDoubleQuoted reads a double-quoted string whose body starts at i
// into w and returns the index of the closing quote.
func sshReadDoubleQuoted(s string, i int, w *strings.Builder, syntax func(string)) (int, error) {
	start := i - 1
	for ; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			return i, nil
		case '\\':
			if i+1 < len(s) {
				switch s[i+1] {
				case '$', '`', '"', '\\':
					i++
					w.WriteByte(s[i])
					continue
				case '\n':
					i++
					continue
				}
			}
			w.WriteByte(c)
		case '`':
			syntax("backticks (command substitution)")
			w.WriteByte(c)
		case '$':
			if what := sshDollarSyntax(s, i); what != "" {
				syntax(what)
			}
			w.WriteByte(c)
		default:
			w.WriteByte(c)
		}
	}
	return 0, &sshErrShellSyntax{fmt.Sprintf("unterminated double quote at position %d", start+1)}
}

// sshDollarSyntax says what a `$` at s[i] starts, or "" when the shell keeps
// it as a literal dollar sign (at the end, or before a space or a quote
// that ends the string).
func sshDollarSyntax(s string, i int) string {
	if i+1 >= len(s) {
		return ""
	}
	switch c := s[i+1]; {
	case c == '(':
		return "`$(` (command substitution)"
	case c == '{':
		return "`${` (parameter expansion)"
	case c == '\'' || c == '"':
		return "`$'` or `$\"` (special quoting)"
	case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("@*#?-$!", c) >= 0:
		return "`$` (variable expansion)"
	case c == '[':
		return "`$[` (arithmetic expansion)"
	}
	return ""
}

// sshIsAssignment reports whether w reads as NAME=value.
func sshIsAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// QuoteArgv writes argv as a command line that any POSIX shell (and zsh)
// splits back into exactly argv, with nothing expanded: words of safe
// characters as they are, others in single quotes.
func QuoteArgv(argv []string) string {
	var b strings.Builder
	for i, w := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if i == 0 && (sshReservedWords[w] || sshIsAssignment(w)) {
			// Quoted, a keyword or NAME=value is a command name.
			b.WriteString("'" + strings.ReplaceAll(w, "'", `'\''`) + "'")
			continue
		}
		b.WriteString(sshQuoteWord(w))
	}
	return b.String()
}

func sshQuoteWord(w string) string {
	// A leading = is zsh's command expansion; everything else here is
	// inert in every shell.
	safe := w != "" && w[0] != '='
	for i := 0; safe && i < len(w); i++ {
		c := w[i]
		safe = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_@%+=:,./-", c) >= 0
	}
	if safe {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}
