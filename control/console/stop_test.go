package console

import (
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
)

// TestTimelineShowsStop: a statement stopped because its grant ended
// says so, and the session's end says what was stopped, how and with
// what outcome.
func TestTimelineShowsStop(t *testing.T) {
	at := time.Date(2026, 12, 5, 13, 0, 0, 0, time.UTC)
	evs := []recorder.Event{
		{Type: recorder.TypeSessionStart, Seq: 1, Time: at},
		{Type: recorder.TypeStatement, Seq: 2, Time: at, Statement: &recorder.Statement{ID: 1, Text: "select pg_sleep(60)", Decision: "allow", Class: authz.Classification{Kind: "SELECT"}}},
		{Type: recorder.TypeSessionEnd, Seq: 3, Time: at.Add(time.Second),
			Results: []recorder.Result{{ID: 1, Executed: true, Error: "canceling statement due to user request", SQLState: "57014", Stopped: []string{"cancel"}}},
			End: &recorder.End{Reason: "grant no longer active: grant gr_1 was revoked by alice", Statements: 1,
				Stop: &recorder.Stop{Running: []recorder.Running{{ID: 1, Text: "select pg_sleep(60)"}}, Methods: []string{"cancel"}, Outcome: recorder.StopStopped, DurationMS: 12}}},
	}
	rows, _ := timeline(evs)
	html := string(renderRows(rows))
	for _, want := range []string{
		"stopped by cancel (grant ended), error: canceling statement due to user request (57014)",
		"running work stopped by cancel: #1 stopped in 12ms",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("the session page lacks %q:\n%s", want, html)
		}
	}
}
