package authz

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Reasons are read by the agent, usually inside a client's error message:
// one line that says what was refused, what the grant allows, and the
// command that would get the access it needs.

func accessReason(g *Grant, c Classification) string {
	what := c.Kind + " requires " + c.Required.String() + " access"
	if c.Why != "" {
		what += " (" + c.Why + ")"
	}
	return fmt.Sprintf("%s; grant %s (%s) allows %s. To run it, request a grant with --access %s: %s",
		what, g.ID, DisplayTask(g.Task), g.Access, c.Required, requestCommand(g, c.Required))
}

func noGrantReason(g *Grant, c Classification) string {
	need := max(c.Required, AccessRead)
	switch {
	case g == nil:
		return "no active grant for this session; request one: " + requestCommand(nil, need)
	case g.State != "" && g.State != StateActive:
		return fmt.Sprintf("grant %s is %s, not active; request one: %s", g.ID, g.State, requestCommand(g, need))
	}
	return fmt.Sprintf("grant %s allows no statements; request one: %s", g.ID, requestCommand(g, need))
}

// requestCommand is the airlock request command line that asks for access
// at level for the same task, keeping the narrowing flags of g and adding
// extra (a new --max-tables replaces the old one).
func requestCommand(g *Grant, level Access, extra ...string) string {
	var flags []string
	if g != nil {
		flags = scopeFlags(g)
	}
	for _, e := range extra {
		if strings.HasPrefix(e, "--max-tables ") {
			flags = withoutFlag(flags, "--max-tables")
		}
		if !slices.Contains(flags, e) {
			flags = append(flags, e)
		}
	}
	return requestLine(g, level, flags)
}

// requestCommandWithout is requestCommand without any of g's flag.
func requestCommandWithout(g *Grant, level Access, flag string) string {
	var flags []string
	if g != nil {
		flags = withoutFlag(scopeFlags(g), flag)
	}
	return requestLine(g, level, flags)
}

func requestLine(g *Grant, level Access, flags []string) string {
	return RequestFor(g, strings.Join(append([]string{"--access", level.String()}, flags...), " "))
}

// RequestFor is the airlock request command line asking for the same
// resource and task as g, with flags.
func RequestFor(g *Grant, flags string) string {
	resource, task := "RESOURCE", ""
	if g != nil {
		if g.Resource != "" {
			resource = g.Resource
		}
		task = OneLine(g.Task)
	}
	if task == "" {
		task = "..."
	}
	return fmt.Sprintf("airlock request --resource %s --task %s %s", ShellQuote(resource), ShellQuote(task), flags)
}

// DisplayTask quotes a task for a reason, cut short so the reason stays
// readable.
func DisplayTask(task string) string {
	task = OneLine(task)
	const limit = 80
	if utf8.RuneCountInString(task) > limit {
		task = string([]rune(task)[:limit]) + "…"
	}
	return fmt.Sprintf("%q", task)
}

// OneLine collapses every run of white space and control characters into
// one space, so text from a grant or the parser cannot break the reason
// across lines.
func OneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r < 0x20 || r == 0x7f || r == ' ' || r == '\u2028' || r == '\u2029' || r == 0x85
	}), " ")
}

// ShellQuote quotes s for a POSIX shell, in double quotes when nothing in
// it is special there (the common case, and it reads best), else in single
// quotes.
func ShellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'$`\\!&|;<>()*?[]#~{}") {
		return s
	}
	if !strings.ContainsAny(s, "\"$`\\!") {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
