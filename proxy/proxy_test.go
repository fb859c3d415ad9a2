package proxy

import (
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
)

func TestParam(t *testing.T) {
	srv := &Server{Config: &config.Config{Recorder: config.Recorder{ParamMaxBytes: 5}}}
	cases := []struct {
		name         string
		v            []byte
		binary, null bool
		want, format string
		truncated    bool
	}{
		{name: "text", v: []byte("abc"), want: "abc", format: "text"},
		{name: "cut", v: []byte("abcdefgh"), want: "abcde", format: "text", truncated: true},
		{name: "cut before a split character", v: []byte("abcdé"), want: "abcd", format: "text", truncated: true},
		{name: "binary", v: []byte{0, 0, 0, 7}, binary: true, want: "AAAABw==", format: "base64"},
		{name: "invalid utf-8 as base64", v: []byte{0xff}, want: "/w==", format: "base64"},
		{name: "null", null: true},
	}
	for _, c := range cases {
		p := srv.Param(c.v, c.binary, c.null)
		if p.Value != c.want || p.Format != c.format || p.Truncated != c.truncated || p.Null != c.null {
			t.Errorf("%s: %+v", c.name, p)
		}
	}
	srv.Config.Recorder.RedactParams = true
	if p := srv.Param([]byte("secret"), false, false); !p.Redacted || p.Value != "" || p.Size != 6 {
		t.Errorf("redacted: %+v", p)
	}
}

func TestRefusalMessage(t *testing.T) {
	v := authz.Verdict{Statements: []authz.Decision{
		{Text: "select 1", Allow: false, Rule: "batch", Reason: "not executed"},
		{Text: "delete from t", Rule: "access-level", Reason: "DELETE requires write access"},
	}}
	r := refusalFor(v)
	if r.Kind != "policy" || !strings.Contains(r.Msg, "statement 2 of 2 refused: DELETE requires write access") ||
		!strings.Contains(r.Msg, "nothing in this message was executed") || strings.Contains(r.Msg, "not executed;") {
		t.Fatalf("%+v", r)
	}
	d := denyAll(authz.Verdict{Allow: true, Statements: []authz.Decision{{Text: "select 1", Allow: true}}}, "grant-ended", "revoked")
	if d.Allow || d.Statements[0].Allow || d.Statements[0].Rule != "grant-ended" {
		t.Fatalf("denyAll: %+v", d)
	}
	if r := refusalFor(d); r.Kind != "grant" || r.Rule != "grant-ended" {
		t.Fatalf("a grant refusal reads as %q (rule %q)", r.Kind, r.Rule)
	}
	se := &authz.SyntaxError{Msg: `syntax error at or near "SELEC"`, Pos: 1}
	r = refusalFor(authz.Verdict{Statements: []authz.Decision{{Text: "SELEC 1", Rule: "unparseable", Reason: "could not parse", Syntax: se}}})
	if r.Kind != "syntax" || r.Syntax != se || r.Rule != "unparseable" {
		t.Fatalf("a syntax refusal reads as %+v", r)
	}
}
