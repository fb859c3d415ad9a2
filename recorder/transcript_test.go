package recorder

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
)

func dbSession(proto string) []Event {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	m := Meta{Agent: "agent-1", Resource: "demo-pg", Protocol: proto, Grant: "gr_1", Access: "read", Approver: "alice", Task: "INC-1"}
	rows := int64(3)
	return []Event{
		{Type: TypeSessionStart, Seq: 1, Time: t0, Meta: m},
		{Type: TypeStatement, Seq: 2, Time: t0.Add(time.Second), Meta: m, Statement: &Statement{ID: 1, Text: "select *\nfrom orders", Decision: "allow",
			Class: authz.Classification{Kind: "SELECT", Required: authz.AccessRead}}},
		// #1's outcome rides on #2, recorded later than #1 completed.
		{Type: TypeStatement, Seq: 3, Time: t0.Add(3 * time.Second), Meta: m, Statement: &Statement{ID: 2, Text: "delete from orders", Decision: "deny",
			Rule: "access-level", Reason: "DELETE requires write access", Class: authz.Classification{Kind: "DELETE", Required: authz.AccessWrite}},
			Results: []Result{{ID: 1, Executed: true, Tag: "SELECT 3", Rows: &rows, DurationUS: 500000}}},
		{Type: TypeSessionEnd, Seq: 4, Time: t0.Add(4 * time.Second), Meta: m, End: &End{Reason: "client closed", Statements: 2, Denied: 1}},
	}
}

func TestTranscript(t *testing.T) {
	lines := Transcript(dbSession("postgres"), time.UTC)
	var got []string
	for _, l := range lines {
		got = append(got, l.Text)
	}
	want := []string{
		"10:00:00.000  session start: agent-1 on demo-pg (postgres) from , grant gr_1 (read access, approved by alice); task: INC-1",
		"10:00:01.000  #1 SELECT read: select *\n              from orders",
		"10:00:01.500  #1 -> SELECT 3, 3 rows, 500ms",
		"10:00:03.000  #2 DENIED (rule access-level): delete from orders\n              why: DELETE requires write access",
		"10:00:04.000  session end: client closed (2 statements, 1 denied)",
	}
	if strings.Join(got, "\n|") != strings.Join(want, "\n|") {
		t.Errorf("transcript:\n%s\nwant:\n%s", strings.Join(got, "\n|"), strings.Join(want, "\n|"))
	}
	if Transcript(dbSession("ssh"), time.UTC) != nil {
		t.Error("an ssh session has a transcript")
	}
}

// TestTerminalDatabase: a database session's asciicast is its transcript,
// each line at its time; before, Terminal refused it (ErrNoTerminal).
func TestTerminalDatabase(t *testing.T) {
	for _, proto := range []string{"postgres", "mysql"} {
		var b bytes.Buffer
		if err := WriteAsciicast(&b, dbSession(proto)); err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		out := b.String()
		for _, want := range []string{`{"version":2,"width":120,"height":30`, `[1.5,"o","10:00:01.500  #1 -\u003e SELECT 3, 3 rows, 500ms\r\n"]`, `DENIED (rule access-level)`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: cast lacks %q:\n%s", proto, want, out)
			}
		}
		// Live, an outcome is shown when the event carrying it arrives.
		evs := dbSession(proto)
		live := NewLiveCast(evs[0].Time)
		var times []float64
		for i := range evs {
			for _, e := range live.Add(&evs[i]) {
				times = append(times, e.Time)
			}
		}
		for i := 1; i < len(times); i++ {
			if times[i] < times[i-1] {
				t.Errorf("%s: live times go back: %v", proto, times)
			}
		}
		if len(times) != 5 {
			t.Errorf("%s: live lines %v, want 5", proto, times)
		}
	}
}
