package mysql

import (
	"errors"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/proxy"
)

func TestRefusalPacket(t *testing.T) {
	one := func(rule, kind string, need authz.Access) authz.Verdict {
		return authz.Verdict{Statements: []authz.Decision{{Rule: rule, Reason: "r", Class: authz.Classification{Kind: kind, Required: need}}}}
	}
	policy := &proxy.Refusal{Kind: "policy", Msg: "airlock: r"}
	syntax := &proxy.Refusal{Kind: "syntax", Msg: "airlock: r", Syntax: &authz.SyntaxError{Msg: "You have an error in your SQL syntax; ... near 'a\nb' at line 1", Pos: 1}}
	for _, tc := range []struct {
		name   string
		v      authz.Verdict
		err    error
		ended  bool
		code   uint16
		state  string
		prefix string
	}{
		{"write needed", one("access-level", "DELETE", authz.AccessWrite), policy, false, 1142, "42000", "airlock: r"},
		{"admin needed", one("access-level", "SET", authz.AccessAdmin), policy, false, 1227, "42000", "airlock: r"},
		{"table scope", one("table-scope", "SELECT", authz.AccessRead), policy, false, 1142, "42000", "airlock: r"},
		{"other database", one("database", "USE", authz.AccessRead), policy, false, 1044, "42000", "airlock: r"},
		{"unknown thread", one("no-such-thread", "KILL", authz.AccessRead), policy, false, 1094, "HY000", "airlock: r"},
		{"unknown statement", one("unknown-statement", "EXECUTE", authz.AccessAdmin), policy, false, 1243, "HY000", "airlock: r"},
		{"unknown command", one("unsupported-command", "UNKNOWN COMMAND", authz.AccessAdmin), policy, false, 1047, "08S01", "airlock: r"},
		{"shutdown", one("unsupported-command", "COMMAND", authz.AccessAdmin), policy, false, 1227, "42000", "airlock: r"},
		{"change user", one("change-user", "CHANGE USER", authz.AccessAdmin), policy, false, 1045, "28000", "airlock: r"},
		{"syntax", one("unparseable", "UNPARSEABLE", authz.AccessAdmin), syntax, false, 1064, "42000", "You have an error in your SQL syntax; ... near 'a\nb' at line 1" + syntaxNote},
		{"recorder", one("access-level", "SELECT", authz.AccessRead), &proxy.Refusal{Kind: "recorder", Msg: "airlock: recording unavailable"}, false, 1205, "HY000", "airlock: recording unavailable"},
		{"not a refusal", one("access-level", "SELECT", authz.AccessRead), errors.New("boom"), false, 1205, "HY000", "boom"},
		{"grant unconfirmed", one("access-level", "SELECT", authz.AccessRead), &proxy.Refusal{Kind: "grant", Msg: "airlock: cannot confirm"}, false, 1205, "HY000", "airlock: cannot confirm"},
		{"grant ended", one("access-level", "SELECT", authz.AccessRead), &proxy.Refusal{Kind: "grant", Msg: "airlock: revoked"}, true, 1927, "70100", "airlock: revoked"},
	} {
		p := refusalPacket(tc.v, tc.err, func() bool { return tc.ended })
		e := parseErr(p)
		if e.code != tc.code || e.state != tc.state || !strings.HasPrefix(e.msg, tc.prefix) {
			t.Errorf("%s: %d %s %q, want %d %s %q", tc.name, e.code, e.state, e.msg, tc.code, tc.state, tc.prefix)
		}
	}
	// A statement refused only because another was takes no part.
	v := authz.Verdict{Statements: []authz.Decision{
		{Rule: "batch", Class: authz.Classification{Kind: "SELECT"}},
		{Rule: "database", Class: authz.Classification{Kind: "USE"}},
	}}
	if e := parseErr(refusalPacket(v, policy, func() bool { return false })); e.code != 1044 {
		t.Errorf("batch: %d, want 1044", e.code)
	}
}
