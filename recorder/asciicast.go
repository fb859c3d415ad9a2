package recorder

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Terminal sessions as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/):
// a JSON header line, then one [time, code, data] line per event, time in
// seconds from the start. The terminal channels of a session are its
// shells and the channels with a pty; their data events become "o"
// (output), "i" (input) and "r" (resize) events at the time the gateway
// relayed them. A database session has no terminal: its recording is its
// transcript (see Transcript), each line output when it happened.

// ErrNoTerminal is returned for a session that has nothing to replay.
var ErrNoTerminal = errors.New("the session has no terminal (shell or pty) to replay; see airlock sessions show")

// CastHeader is the asciicast v2 header.
type CastHeader struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// CastEvent is one asciicast event.
type CastEvent struct {
	// Time is seconds since the recording's start.
	Time float64
	// Code is "o" (output), "i" (input) or "r" (resize, Data "COLSxROWS").
	Code string
	Data string
}

// MarshalJSON writes the event as asciicast's [time, code, data].
func (e CastEvent) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{math.Round(e.Time*1e6) / 1e6, e.Code, e.Data})
}

// Cast is a terminal recording.
type Cast struct {
	Header CastHeader
	Events []CastEvent
}

// TerminalSize is the size of the terminal Terminal would play, without
// building its cast where that is known beforehand: a database session's
// transcript is always the same size (a reviewer's page for a long
// session needs only that).
func TerminalSize(evs []Event) (cols, rows int, err error) {
	if IsDatabase(sessionProtocol(evs)) {
		return transcriptCols, transcriptRows, nil
	}
	c, err := Terminal(evs)
	if err != nil {
		return 0, 0, err
	}
	return c.Header.Width, c.Header.Height, nil
}

// Terminal builds the recording of a session's terminal channels from its
// events (in seq order, as Reader.Events returns them). Several terminal
// channels in one session are merged in time order. A database session's
// recording is its transcript.
func Terminal(evs []Event) (*Cast, error) {
	if IsDatabase(sessionProtocol(evs)) {
		return transcriptCast(evs), nil
	}
	stmts := map[uint64]*Event{}
	terminal := map[uint64]bool{}
	pty := map[uint64]bool{}
	for i := range evs {
		e := &evs[i]
		switch {
		case e.Statement != nil:
			stmts[e.Statement.ID] = e
			if e.Statement.Class.Kind == "SHELL" && e.Statement.Decision == "allow" {
				terminal[e.Statement.ID] = true
			}
		case e.Data != nil && e.Data.Stream == "resize":
			terminal[e.Data.ID] = true
			pty[e.Data.ID] = true
		}
	}
	if len(terminal) == 0 {
		return nil, ErrNoTerminal
	}
	var start time.Time
	for id := range terminal {
		if st := stmts[id]; st != nil && (start.IsZero() || st.Time.Before(start)) {
			start = st.Time
		}
	}
	c := &Cast{Header: CastHeader{Version: 2, Width: 80, Height: 24}}
	sized := false
	for i := range evs {
		e := &evs[i]
		if e.Type != TypeData || e.Data == nil || !terminal[e.Data.ID] {
			continue
		}
		if start.IsZero() {
			start = e.Time
		}
		if c.Header.Title == "" {
			c.Header.Title = castTitle(e)
		}
		d := e.Data
		at := max(e.Time.Sub(start).Seconds(), 0)
		switch d.Stream {
		case "resize":
			if d.Cols <= 0 || d.Rows <= 0 {
				continue
			}
			if !sized {
				sized = true
				c.Header.Width, c.Header.Height = d.Cols, d.Rows
				if d.Term != "" {
					c.Header.Env = map[string]string{"TERM": d.Term}
				}
				continue
			}
			c.Events = append(c.Events, CastEvent{at, "r", fmt.Sprintf("%dx%d", d.Cols, d.Rows)})
		case "stdout", "stderr":
			text := string(d.Bytes())
			if !pty[d.ID] {
				// Without a pty nothing turned \n into \r\n on the way.
				text = strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\n", "\r\n")
			}
			c.Events = append(c.Events, CastEvent{at, "o", text})
		case "stdin":
			c.Events = append(c.Events, CastEvent{at, "i", string(d.Bytes())})
		}
	}
	sort.SliceStable(c.Events, func(i, j int) bool { return c.Events[i].Time < c.Events[j].Time })
	if !start.IsZero() {
		c.Header.Timestamp = start.Unix()
	}
	return c, nil
}

func castTitle(e *Event) string {
	t := fmt.Sprintf("%s on %s, session %s", e.Agent, e.Resource, e.Session)
	if e.Task != "" {
		t += ": " + e.Task
	}
	return t
}

// WriteAsciicast writes the session's terminal recording as an asciicast
// v2 file, which the asciinema player and `asciinema play` accept.
func WriteAsciicast(w io.Writer, evs []Event) error {
	c, err := Terminal(evs)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(c.Header); err != nil {
		return err
	}
	for _, e := range c.Events {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// LiveCast turns a session's events into asciicast events one at a time,
// as they are stored: the live view of an open session. Its choice of
// terminal channels is Terminal's (shells, and channels with a pty).
type LiveCast struct {
	// Start is the time asciicast times count from.
	Start         time.Time
	terminal, pty map[uint64]bool
	// db follows a database session's transcript; lastLine is the time
	// of its latest line.
	db       *transcriber
	lastLine time.Time
}

// NewLiveCast counts times from start.
func NewLiveCast(start time.Time) *LiveCast {
	return &LiveCast{Start: start, terminal: map[uint64]bool{}, pty: map[uint64]bool{}}
}

// Add returns what ev adds to the terminal: output, or a resize; for a
// database session, its transcript lines.
func (c *LiveCast) Add(ev *Event) []CastEvent {
	if IsDatabase(ev.Protocol) {
		if c.db == nil {
			c.db = newTranscriber(time.UTC)
		}
		var out []CastEvent
		for _, l := range c.db.add(ev) {
			// Live, a line is shown when it arrives: an outcome rides on
			// a later event than its statement's.
			at := l.Time
			if at.Before(c.lastLine) {
				at = c.lastLine
			}
			c.lastLine = at
			out = append(out, CastEvent{max(at.Sub(c.Start).Seconds(), 0), "o", castLine(l.Text)})
		}
		return out
	}
	switch {
	case ev.Statement != nil:
		if ev.Statement.Class.Kind == "SHELL" && ev.Statement.Decision == "allow" {
			c.terminal[ev.Statement.ID] = true
		}
		return nil
	case ev.Type != TypeData || ev.Data == nil:
		return nil
	}
	d := ev.Data
	at := max(ev.Time.Sub(c.Start).Seconds(), 0)
	switch d.Stream {
	case "resize":
		c.terminal[d.ID], c.pty[d.ID] = true, true
		if d.Cols > 0 && d.Rows > 0 {
			return []CastEvent{{at, "r", fmt.Sprintf("%dx%d", d.Cols, d.Rows)}}
		}
	case "stdout", "stderr":
		if !c.terminal[d.ID] {
			return nil
		}
		text := string(d.Bytes())
		if !c.pty[d.ID] {
			text = strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\n", "\r\n")
		}
		return []CastEvent{{at, "o", text}}
	}
	return nil
}

// Seed makes the follower know the terminal channels of events already
// shown (from Terminal), so their later output is followed.
func (c *LiveCast) Seed(evs []Event) {
	for i := range evs {
		_ = c.Add(&evs[i])
	}
}
