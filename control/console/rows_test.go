package console

import (
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/recorder"
)

// TestRowsMatchTemplate holds renderRows to the "rows" template of
// templates/session.html: the same bytes for every kind of row, with
// hostile values in every field the rows show.
func TestRowsMatchTemplate(t *testing.T) {
	c := &Console{}
	if err := c.parse(); err != nil {
		t.Fatal(err)
	}
	hostile := []string{
		"", "plain", `<script>alert("x")</script>`, `" onmouseover="x`, "a'b&c+d", "\x00nul",
		"é 日本 😀", "bad \xff byte", "</pre><img src=x>", "{{.Text}}", "line\nbreak\ttab",
	}
	var rows []stmtRow
	at := time.Date(2026, 12, 5, 13, 0, 0, 0, time.UTC)
	for i, s := range hostile {
		h := hostile[(i+3)%len(hostile)]
		rows = append(rows,
			stmtRow{Seq: uint64(i*3 + 1), Clock: s, RowClass: "event" + s, Note: h},
			stmtRow{Seq: uint64(i*3 + 2), Stmt: true, RowClass: "stmt denied", Clock: h, ID: uint64(i), Text: s, TextNote: h,
				Denied: true, Rule: s, Reason: h, Params: []recorder.Param{{Value: s, Type: h}, {Null: true}, {Redacted: true, Truncated: true, Size: i}}},
			stmtRow{Seq: uint64(i*3 + 3), Time: at, Stmt: true, RowClass: "stmt", Clock: s, ID: 1 << 40, Text: h,
				Class: s, Outcome: h, Duration: s, Params: []recorder.Param{{Value: h, Truncated: true, Size: 1 << 20}}},
		)
	}
	// Enough rows to split between goroutines, where there are several.
	for len(rows) < 3*rowsPart {
		rows = append(rows, rows[len(rows)%33])
	}
	var want strings.Builder
	if err := c.pages["session"].ExecuteTemplate(&want, "rows", rows); err != nil {
		t.Fatal(err)
	}
	got := string(renderRows(rows))
	if got == want.String() {
		return
	}
	w := want.String()
	i := 0
	for i < len(got) && i < len(w) && got[i] == w[i] {
		i++
	}
	lo := max(i-120, 0)
	t.Fatalf("renderRows differs from the template at byte %d:\n got …%s\nwant …%s", i, got[lo:min(i+80, len(got))], w[lo:min(i+80, len(w))])
}
