package authz

import "testing"

func TestApplyHolds(t *testing.T) {
	del := Decision{Text: "delete from orders where id = 1", Allow: true, Rule: "access-level",
		Class: Classification{Kind: "DELETE", Required: AccessWrite, TablesWritten: []string{"public.orders"}}}
	sel := Decision{Text: "select 1", Allow: true, Rule: "access-level", Class: Classification{Kind: "SELECT", Required: AccessRead}}
	drop := Decision{Text: "drop table t", Rule: "drop", Reason: "DROP TABLE needs --allow-drop",
		Class: Classification{Kind: "DROP TABLE", Required: AccessDDL}}
	syntax := Decision{Text: "selec", Rule: "unparseable", Reason: "could not parse", Syntax: &SyntaxError{Msg: "syntax error"}}
	for _, tc := range []struct {
		name  string
		holds Holds
		v     Verdict
		// allow and held are what the verdict must say after.
		allow, held bool
		rule        string
	}{
		{"no holds", Holds{}, SingleVerdict(del), true, false, "access-level"},
		{"by kind", Holds{Kinds: []string{"delete"}}, SingleVerdict(del), true, true, RuleHoldKind},
		{"by class", Holds{Kinds: []string{"WRITE"}}, SingleVerdict(del), true, true, RuleHoldKind},
		{"class not met", Holds{Kinds: []string{"DDL"}}, SingleVerdict(del), true, false, "access-level"},
		{"by table", Holds{Tables: []string{"orders"}}, SingleVerdict(del), true, true, RuleHoldTable},
		{"by qualified table", Holds{Tables: []string{"public.ord*"}}, SingleVerdict(del), true, true, RuleHoldTable},
		{"read not held by table", Holds{Tables: []string{"orders"}}, SingleVerdict(sel), true, false, "access-level"},
		{"denied stays denied", Holds{Kinds: []string{"DELETE"}}, SingleVerdict(drop), false, false, "drop"},
		{"denied held", Holds{Denied: true}, SingleVerdict(drop), true, true, RuleHoldDenied},
		{"guardrail held by kind", Holds{Kinds: []string{"DROP TABLE"}}, SingleVerdict(drop), true, true, RuleHoldDenied},
		{"syntax never held", Holds{Denied: true}, SingleVerdict(syntax), false, false, "unparseable"},
		{"message with a held statement", Holds{Kinds: []string{"DELETE"}}, Batch([]Decision{sel, del}), true, true, RuleHoldKind},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Grant{ID: "gr_1", Holds: tc.holds}
			got := ApplyHolds(g, tc.v)
			last := got.Statements[len(got.Statements)-1]
			if got.Allow != tc.allow || got.Held() != tc.held || last.Rule != tc.rule {
				t.Errorf("allow %v held %v rule %q; want %v %v %q (%+v)", got.Allow, got.Held(), last.Rule, tc.allow, tc.held, tc.rule, got)
			}
		})
	}
	if (Holds{}).Wait() != DefaultHoldTimeout {
		t.Error("a grant without a hold timeout does not wait the default")
	}
}
