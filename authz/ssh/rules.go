package ssh

import (
	"fmt"
	"strings"
)

// Command rules (a grant's --command patterns) come in two forms.
//
// An argv rule is a list of words, split like a shell line: `systemctl
// status *`, `journalctl -u * --since *`, `cat /var/log/app/*`. It matches
// a plain command (see ShellCommand) with the same number of words, word by
// word. In a word, an unquoted `*` matches any run of characters, with two
// exceptions that keep a wildcard from widening what the rule means:
//   - a word that starts with `*` never matches an argument that starts
//     with `-` (an option): write `-*` to allow options there;
//   - a word with a `*` never matches an argument with a `..` path element
//     unless the rule's own text has one, so `/var/log/app/*` stays under
//     /var/log/app.
//
// A last word `**` matches any number of further arguments, each as a lone
// `*` would. Quotes and backslashes make characters literal: `'*'` is a
// star, `'a b'` one word with a space.
//
// A raw rule starts with `raw:` and is the only kind that allows shell
// syntax (pipes, separators, redirections, substitutions, globs): the whole
// command text, trimmed, must equal the rule's text, where each `*` matches
// a run of inert characters only (letters, digits and _ . / : @ % + , = -,
// not starting with `-`, holding no `..`), so a wildcard can never smuggle
// in more syntax. `raw:ps aux | grep *` allows `ps aux | grep nginx`, not
// `ps aux | grep x; reboot`. The command runs on the target's shell as
// sent.

// RawPrefix marks a raw command rule.
const RawPrefix = "raw:"

// sshCommandRule is one compiled --command pattern.
type sshCommandRule struct {
	text string
	raw  bool
	// argv rule
	words []sshPatWord
	rest  bool // last word was **
	// raw rule
	rawSegs []sshSegment
	dotdot  bool // the rule's text has a .. path element
}

// sshSegment is a literal run or, when star, a wildcard.
type sshSegment struct {
	lit  string
	star bool
}

type sshPatWord struct {
	segs []sshSegment
	wild bool
}

// CheckCommandPattern says why p is not a usable --command pattern, or
// returns nil.
func CheckCommandPattern(p string) error {
	_, err := sshCompileRule(p)
	return err
}

func sshCompileRule(p string) (*sshCommandRule, error) {
	r := &sshCommandRule{text: p}
	if rest, ok := strings.CutPrefix(p, RawPrefix); ok {
		r.raw = true
		body := strings.TrimSpace(rest)
		if body == "" {
			return nil, fmt.Errorf("raw rule %q is empty", p)
		}
		r.rawSegs = sshRawSegments(body)
		r.dotdot = sshHasDotDot(body)
		return r, nil
	}
	words, err := sshPatternWords(p)
	if err != nil {
		return nil, fmt.Errorf("--command %q: %v", p, err)
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("--command %q is empty", p)
	}
	for i, w := range words {
		if w.rest {
			if i != len(words)-1 {
				return nil, fmt.Errorf("--command %q: ** may only be the last word", p)
			}
			if i == 0 {
				return nil, fmt.Errorf("--command %q: the command name must be given", p)
			}
			r.rest = true
			continue
		}
		r.words = append(r.words, w.sshPatWord)
	}
	r.dotdot = sshHasDotDot(p)
	return r, nil
}

type sshRawWord struct {
	sshPatWord
	rest bool
}

// sshPatternWords splits an argv rule into words: blanks separate, quotes
// and backslashes make characters literal, an unquoted * is a wildcard.
func sshPatternWords(p string) ([]sshRawWord, error) {
	var (
		out    []sshRawWord
		cur    sshRawWord
		lit    strings.Builder
		inWord bool
		plain  strings.Builder // the word's text when it has no quotes
		quoted bool
	)
	flushLit := func() {
		if lit.Len() > 0 {
			cur.segs = append(cur.segs, sshSegment{lit: lit.String()})
			lit.Reset()
		}
	}
	end := func() {
		if !inWord {
			return
		}
		flushLit()
		if !quoted && plain.String() == "**" {
			cur = sshRawWord{rest: true}
		}
		out = append(out, cur)
		cur, inWord, quoted = sshRawWord{}, false, false
		plain.Reset()
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch c {
		case ' ', '\t', '\n':
			end()
		case '\\':
			inWord, quoted = true, true
			if i+1 >= len(p) {
				return nil, fmt.Errorf("ends in a backslash")
			}
			i++
			lit.WriteByte(p[i])
		case '\'', '"':
			inWord, quoted = true, true
			j := strings.IndexByte(p[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated quote")
			}
			lit.WriteString(p[i+1 : i+1+j])
			i += j + 1
		case '*':
			inWord = true
			plain.WriteByte(c)
			flushLit()
			if n := len(cur.segs); n == 0 || !cur.segs[n-1].star {
				cur.segs = append(cur.segs, sshSegment{star: true})
			}
			cur.wild = true
		default:
			inWord = true
			plain.WriteByte(c)
			lit.WriteByte(c)
		}
	}
	end()
	return out, nil
}

// sshRawSegments splits a raw rule's text at its unescaped stars.
func sshRawSegments(body string) []sshSegment {
	var segs []sshSegment
	var lit strings.Builder
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '\\' && i+1 < len(body) && body[i+1] == '*':
			lit.WriteByte('*')
			i++
		case c == '*':
			if lit.Len() > 0 {
				segs = append(segs, sshSegment{lit: lit.String()})
				lit.Reset()
			}
			if n := len(segs); n == 0 || !segs[n-1].star {
				segs = append(segs, sshSegment{star: true})
			}
		default:
			lit.WriteByte(c)
		}
	}
	if lit.Len() > 0 {
		segs = append(segs, sshSegment{lit: lit.String()})
	}
	return segs
}

// sshMatchResult is how a rule relates to a command.
type sshMatchResult int

const (
	sshNoMatch sshMatchResult = iota
	// sshNearMatch: the rule would match but for a wildcard restriction (an
	// option, or a .. path element); worth telling the agent.
	sshNearMatch
	sshFullMatch
)

// matchArgv matches an argv rule against a plain command's words.
func (r *sshCommandRule) matchArgv(argv []string) sshMatchResult {
	if len(argv) < len(r.words) || !r.rest && len(argv) != len(r.words) {
		return sshNoMatch
	}
	res := sshFullMatch
	for i, w := range r.words {
		switch m := w.match(argv[i], r.dotdot); m {
		case sshNoMatch:
			return sshNoMatch
		case sshNearMatch:
			res = sshNearMatch
		}
	}
	lone := sshPatWord{segs: []sshSegment{{star: true}}, wild: true}
	for _, a := range argv[len(r.words):] {
		switch lone.match(a, r.dotdot) {
		case sshNoMatch:
			return sshNoMatch
		case sshNearMatch:
			res = sshNearMatch
		}
	}
	return res
}

func (w sshPatWord) match(arg string, ruleDotDot bool) sshMatchResult {
	if !sshGlobMatch(w.segs, arg, false) {
		return sshNoMatch
	}
	if !w.wild {
		return sshFullMatch
	}
	if w.segs[0].star && strings.HasPrefix(arg, "-") {
		return sshNearMatch
	}
	if !ruleDotDot && sshHasDotDot(arg) {
		return sshNearMatch
	}
	return sshFullMatch
}

// matchRaw matches a raw rule against the trimmed command text.
func (r *sshCommandRule) matchRaw(text string) sshMatchResult {
	if sshGlobMatch(r.rawSegs, text, true) {
		return sshFullMatch
	}
	if sshGlobMatch(r.rawSegs, text, false) {
		return sshNearMatch
	}
	return sshNoMatch
}

// sshInertByte reports whether a raw rule's wildcard may stand for c.
func sshInertByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_./:@%+,=-", c) >= 0
}

// sshGlobMatch matches s against segs. With inert, a wildcard stands only
// for a run of sshInertByte characters that does not start with - and holds
// no "..".
//
// It tracks the set of positions of s reachable after each sshSegment, so
// it runs in O(len(segs)·len(s)·len(literal)) whatever the input: a
// command is text from the agent, and backtracking over several
// wildcards would be exponential.
func sshGlobMatch(segs []sshSegment, s string, inert bool) bool {
	n := len(s)
	cur := make([]bool, n+1)
	next := make([]bool, n+1)
	cur[0] = true
	// reach[i] is how far a wildcard starting at i may extend.
	var reach []int
	if inert {
		reach = make([]int, n+1)
		reach[n] = n
		for i := n - 1; i >= 0; i-- {
			switch {
			case !sshInertByte(s[i]):
				reach[i] = i
			case s[i] == '.' && i+1 < n && s[i+1] == '.':
				reach[i] = i + 1 // "." may be taken, ".." may not
			default:
				reach[i] = reach[i+1]
			}
		}
	}
	for _, sg := range segs {
		clear(next)
		live := false
		if sg.star {
			end := -1 // positions up to end are reachable
			for i := 0; i <= n; i++ {
				if cur[i] {
					e := n
					if inert {
						e = reach[i]
						if i < n && s[i] == '-' {
							e = i
						}
					}
					end = max(end, e)
				}
				if i <= end {
					next[i], live = true, true
				}
			}
		} else {
			for i := 0; i+len(sg.lit) <= n; i++ {
				if cur[i] && s[i:i+len(sg.lit)] == sg.lit {
					next[i+len(sg.lit)], live = true, true
				}
			}
		}
		if !live {
			return false
		}
		cur, next = next, cur
	}
	return cur[n]
}

// sshHasDotDot reports whether s has a ".." path element.
func sshHasDotDot(s string) bool {
	for _, el := range strings.FieldsFunc(s, func(r rune) bool { return r == '/' || r == ' ' || r == '\t' || r == '=' }) {
		if el == ".." {
			return true
		}
	}
	return false
}

// sshForwardMatch matches a --forward HOST:PORT entry, with * wildcards in
// either part, against a destination.
func sshForwardMatch(entry, host string, port uint32) bool {
	i := strings.LastIndexByte(entry, ':')
	if i < 0 {
		return false
	}
	eh, ep := strings.Trim(entry[:i], "[]"), entry[i+1:]
	if !sshGlobMatch(sshRawSegments(strings.ToLower(eh)), strings.ToLower(host), false) {
		return false
	}
	return sshGlobMatch(sshRawSegments(ep), fmt.Sprint(port), false)
}
