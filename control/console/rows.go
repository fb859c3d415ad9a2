package console

import (
	"html/template"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// The timeline is the one part of a page that grows with the session: a
// reviewer's page for 10,000 statements is 10,000 rows. html/template
// spends about 9 µs a row evaluating its actions by reflection, so the
// rows are written by appendRow instead, which writes what the "rows"
// template of templates/session.html writes, byte for byte, with every
// value through html/template's own escaping (htmlEscape). The template
// stays the definition: TestRowsMatchTemplate holds the two to the same
// bytes over hostile values, so a change to one that is not made to the
// other fails it.

// htmlEscape escapes as html/template does a value in HTML text and in a
// quoted attribute (its htmlEscaper and attrEscaper for plain text): NUL
// becomes U+FFFD and " & ' + < > character references.
var htmlEscape = strings.NewReplacer(
	"\x00", "\uFFFD",
	`"`, "&#34;",
	"&", "&amp;",
	"'", "&#39;",
	"+", "&#43;",
	"<", "&lt;",
	">", "&gt;",
)

// rowWriter appends escaped HTML.
type rowWriter struct{ b []byte }

func (w *rowWriter) raw(s string) { w.b = append(w.b, s...) }

func (w *rowWriter) text(s string) {
	if strings.ContainsAny(s, "\x00\"&'+<>") {
		s = htmlEscape.Replace(s)
	}
	w.b = append(w.b, s...)
}

func (w *rowWriter) uint(n uint64) { w.b = strconv.AppendUint(w.b, n, 10) }

// row appends one row as the template "rows" writes it.
func (w *rowWriter) row(r *stmtRow) {
	// Both kinds of row open alike: <tr> with the row's class and seq.
	w.raw("\n<tr class=\"")
	w.text(r.RowClass)
	w.raw("\" id=\"seq-")
	w.uint(r.Seq)
	if !r.Stmt {
		w.raw("\"><td>")
		w.text(r.Clock)
		w.raw("</td><td></td><td colspan=\"4\" class=\"muted\">")
		w.text(r.Note)
		w.raw("</td></tr>\n")
		return
	}
	w.raw("\">\n<td>")
	w.text(r.Clock)
	w.raw("</td>\n<td>")
	w.uint(r.ID)
	w.raw("</td>\n<td><pre class=\"sql\">")
	w.text(r.Text)
	w.raw("</pre>")
	if r.TextNote != "" {
		w.raw("<small class=\"muted\">")
		w.text(r.TextNote)
		w.raw("</small>")
	}
	if len(r.Params) > 0 {
		w.raw("<ol class=\"params\">")
		for i := range r.Params {
			p := &r.Params[i]
			w.raw("<li>")
			switch {
			case p.Null:
				w.raw("<em>NULL</em>")
			case p.Redacted:
				w.raw("<em>redacted</em>")
			default:
				w.raw("<code>")
				w.text(p.Value)
				w.raw("</code>")
			}
			if p.Type != "" {
				w.raw(" <small class=\"muted\">")
				w.text(p.Type)
				w.raw("</small>")
			}
			if p.Truncated {
				w.raw(" <small class=\"muted\">(cut; ")
				w.b = strconv.AppendInt(w.b, int64(p.Size), 10)
				w.raw(" bytes)</small>")
			}
			w.raw("</li>")
		}
		w.raw("</ol>")
	}
	w.raw("</td>\n")
	if r.Denied {
		w.raw("<td><strong class=\"decision deny\">DENIED</strong><div class=\"rule\">rule <code>")
		w.text(r.Rule)
		w.raw("</code></div><div class=\"reason\">")
		w.text(r.Reason)
		w.raw("</div></td>")
	} else {
		w.raw("<td><span class=\"decision allow\">allowed</span> <small class=\"muted\">")
		w.text(r.Class)
		w.raw("</small></td>")
	}
	w.raw("\n<td>")
	w.text(r.Outcome)
	w.raw("</td>\n<td>")
	w.text(r.Duration)
	w.raw("</td>\n</tr>\n")
}

// rowsPart is the fewest rows renderRows gives one goroutine.
const rowsPart = 2000

// renderRows writes the timeline's rows, split between the processors.
func renderRows(rows []stmtRow) template.HTML {
	parts := 1
	if len(rows) >= 2*rowsPart {
		parts = min(runtime.GOMAXPROCS(0), len(rows)/rowsPart)
	}
	bufs := make([]rowWriter, parts)
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := p*len(rows)/parts, (p+1)*len(rows)/parts
		wg.Go(func() {
			w := &bufs[p]
			w.b = make([]byte, 0, (hi-lo)*400)
			for i := lo; i < hi; i++ {
				w.row(&rows[i])
			}
		})
	}
	wg.Wait()
	var out strings.Builder
	n := 0
	for p := range bufs {
		n += len(bufs[p].b)
	}
	out.Grow(n)
	for p := range bufs {
		out.Write(bufs[p].b)
	}
	// Every value above went through htmlEscape.
	return template.HTML(out.String())
}
