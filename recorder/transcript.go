package recorder

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/airlockhq/airlock/internal/plural"
)

// Database sessions have no terminal; what a reviewer replays is their
// transcript: the session's statements in time order, each with its
// decision, and an allowed one's outcome (tag, rows, duration, error) at
// the time it completed; a denied one with its rule and reason. airlock
// sessions replay prints it, and Terminal renders it as asciicast output
// for the console's player and export --format asciicast.

// TranscriptLine is one line of a database session's transcript.
type TranscriptLine struct {
	Time time.Time
	Text string
}

// IsDatabase reports whether protocol is a database protocol, whose
// sessions replay as transcripts.
func IsDatabase(protocol string) bool {
	return protocol == "postgres" || protocol == "mysql"
}

// sessionProtocol is the protocol the session's events name.
func sessionProtocol(evs []Event) string {
	for i := range evs {
		if p := evs[i].Protocol; p != "" {
			return p
		}
	}
	return ""
}

// Transcript is a database session's transcript in time order, with
// times shown in loc. It is nil for a session of another protocol.
func Transcript(evs []Event, loc *time.Location) []TranscriptLine {
	if !IsDatabase(sessionProtocol(evs)) {
		return nil
	}
	t := newTranscriber(loc)
	var out []TranscriptLine
	for i := range evs {
		out = append(out, t.add(&evs[i])...)
	}
	// Outcomes ride on later events; put them where they happened.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// transcriber turns a database session's events into transcript lines
// one event at a time (so the console's live view can follow a session).
type transcriber struct {
	loc *time.Location
	// started is when each statement that has no outcome yet was
	// recorded: its outcome line is at that time plus its duration.
	started map[uint64]time.Time
}

func newTranscriber(loc *time.Location) *transcriber {
	if loc == nil {
		loc = time.UTC
	}
	return &transcriber{loc: loc, started: map[uint64]time.Time{}}
}

// maxTranscriptText bounds a statement's text in the transcript; the
// whole text is in sessions show --json and the export.
const maxTranscriptText = 4000

func (t *transcriber) add(ev *Event) []TranscriptLine {
	var out []TranscriptLine
	line := func(at time.Time, format string, args ...any) {
		ts := at.In(t.loc).Format("15:04:05.000")
		text := fmt.Sprintf(format, args...)
		// Continuation lines (a statement over several lines) are
		// indented under the text, past the time.
		text = strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\n", "\n"+strings.Repeat(" ", len(ts)+2))
		out = append(out, TranscriptLine{Time: at, Text: ts + "  " + text})
	}
	// Outcomes first: they belong to statements recorded before ev.
	for _, r := range ev.Outcomes() {
		at, ok := t.started[r.ID]
		if !ok {
			at = ev.Time
		}
		delete(t.started, r.ID)
		at = at.Add(time.Duration(r.DurationUS) * time.Microsecond)
		line(at, "#%d -> %s", r.ID, OutcomeText(r))
	}
	switch ev.Type {
	case TypeSessionStart:
		grant := "no grant"
		if ev.Grant != "" {
			grant = fmt.Sprintf("grant %s (%s access, approved by %s)", ev.Grant, dashed(ev.Access), dashed(ev.Approver))
		}
		line(ev.Time, "session start: %s on %s (%s) from %s, %s; task: %s", ev.Agent, ev.Resource, ev.Protocol, ev.Client, grant, dashed(ev.Task))
	case TypeAuthFailed:
		if ev.Auth != nil {
			line(ev.Time, "LOGIN REFUSED for %s: %s", ev.Auth.User, ev.Auth.Reason)
		}
	case TypeStatement:
		st := ev.Statement
		if st == nil {
			break
		}
		text := st.Text
		if len(text) > maxTranscriptText {
			text = text[:maxTranscriptText] + "…"
		}
		if r := st.TextRef; r != nil {
			text += fmt.Sprintf(" … (%d bytes in all)", r.Size)
		}
		if len(st.Params) > 0 {
			text += "\nparams: " + paramsText(st.Params)
		}
		if st.Decision == "allow" {
			t.started[st.ID] = ev.Time
			line(ev.Time, "#%d %s %s: %s", st.ID, st.Class.Kind, st.Class.Required, text)
		} else if st.Decision == "hold" {
			line(ev.Time, "#%d HELD for an approver (rule %s): %s\n%s", st.ID, st.Rule, text, "why: "+st.Reason)
		} else {
			line(ev.Time, "#%d DENIED (rule %s): %s\n%s", st.ID, st.Rule, text, "why: "+st.Reason)
		}
	case TypeSessionEnd:
		if x := ev.End; x != nil {
			line(ev.Time, "session end: %s (%s, %d denied)%s", x.Reason, plural.N(x.Statements, "statement"), x.Denied, x.Stop.Words())
		}
	case TypeSessionInterrupted:
		if n := ev.Interrupted; n != nil {
			line(ev.Time, "session interrupted after seq %d, noted by %s (%s): %s", n.LastSeq, dashed(ev.Gateway), n.By, n.Reason)
		}
	}
	return out
}

// OutcomeText is an allowed statement's outcome in words with its
// duration: "SELECT 3, 3 rows, 1.2ms", "not executed, error: ...".
func OutcomeText(r *Result) string {
	w := r.Words()
	if r.Executed {
		w += ", " + (time.Duration(r.DurationUS) * time.Microsecond).String()
	}
	return w
}

// Words is the outcome in words, without its duration: "SELECT 3, 3
// rows", "exit 1", "not executed, error: ... (42P01)"; "ok" when nothing
// more is known.
func (r *Result) Words() string {
	var parts []string
	if !r.Executed {
		parts = append(parts, "not executed")
	}
	if len(r.Stopped) > 0 {
		parts = append(parts, "stopped by "+strings.Join(r.Stopped, ", ")+" (grant ended)")
	}
	if r.Tag != "" {
		parts = append(parts, r.Tag)
	}
	if r.Rows != nil {
		parts = append(parts, plural.N(*r.Rows, "row"))
	}
	switch {
	case r.ExitStatus != nil && r.Tag != fmt.Sprintf("exit %d", *r.ExitStatus):
		parts = append(parts, fmt.Sprintf("exit %d", *r.ExitStatus))
	case r.ExitSignal != "":
		parts = append(parts, "signal "+r.ExitSignal)
	}
	if r.BytesOut+r.BytesErr+r.BytesIn > 0 {
		parts = append(parts, fmt.Sprintf("%d bytes out, %d err, %d in", r.BytesOut, r.BytesErr, r.BytesIn))
	}
	if r.Error != "" {
		e := "error: " + r.Error
		if r.SQLState != "" {
			e += " (" + r.SQLState + ")"
		}
		parts = append(parts, e)
	}
	if len(parts) == 0 {
		return "ok"
	}
	return strings.Join(parts, ", ")
}

func paramsText(ps []Param) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		switch {
		case p.Null:
			s[i] = "NULL"
		case p.Redacted:
			s[i] = "(redacted)"
		default:
			v := p.Value
			if len(v) > 200 {
				v = v[:200] + "…"
			}
			s[i] = fmt.Sprintf("%q", v)
		}
		if p.Truncated {
			s[i] += "…"
		}
	}
	return fmt.Sprintf("$1..$%d = %s", len(ps), strings.Join(s, ", "))
}

func dashed(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// transcriptCast is a database session's transcript as a terminal
// recording: each line is output at the time it happened.
func transcriptCast(evs []Event) *Cast {
	lines := Transcript(evs, time.UTC)
	c := &Cast{Header: CastHeader{Version: 2, Width: transcriptCols, Height: transcriptRows}}
	var start time.Time
	for i := range evs {
		if !evs[i].Time.IsZero() {
			start = evs[i].Time
			c.Header.Title = castTitle(&evs[i]) + " (times UTC)"
			break
		}
	}
	for _, l := range lines {
		c.Events = append(c.Events, CastEvent{max(l.Time.Sub(start).Seconds(), 0), "o", castLine(l.Text)})
	}
	if !start.IsZero() {
		c.Header.Timestamp = start.Unix()
	}
	return c
}

// The player's terminal for a transcript: wide enough for most
// statements on one line.
const (
	transcriptCols = 120
	transcriptRows = 30
)

// castLine is a transcript line as terminal output: no pty turned \n into
// \r\n on the way.
func castLine(s string) string {
	return strings.ReplaceAll(s, "\n", "\r\n") + "\r\n"
}

// Words is the stop in words, for a session end's line: "; running work
// stopped by cancel: #3 stopped in 12ms"; "" for no stop.
func (s *Stop) Words() string {
	if s == nil {
		return ""
	}
	ids := make([]string, len(s.Running))
	for i, r := range s.Running {
		ids[i] = fmt.Sprintf("#%d", r.ID)
	}
	how := "nothing the upstream could be asked"
	if len(s.Methods) > 0 {
		how = strings.Join(s.Methods, ", ")
	}
	w := fmt.Sprintf("; running work stopped by %s: %s %s in %dms", how, strings.Join(ids, " "), s.Outcome, s.DurationMS)
	if len(s.Errors) > 0 {
		w += " (" + strings.Join(s.Errors, "; ") + ")"
	}
	return w
}
