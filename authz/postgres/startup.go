package postgres

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/airlockhq/airlock/authz"
)

// StartupParam is a setting a Postgres client asks for when it connects:
// a parameter of its StartupMessage (application_name, TimeZone, ...) or a
// -c name=value of its options parameter.
type StartupParam struct {
	Name, Value string
}

// Startup decides under g on the settings a client asks for at
// connect time. Each is decided as SET name = 'value' would be (the value
// taken whole, as the server takes a startup parameter's), so a grant may
// set at connect time exactly what it may SET afterwards. As for a
// message, the verdict is all or nothing: when one is refused, the others
// are refused too with Rule "batch", and the session must not start.
func Startup(g *authz.Grant, params []StartupParam, o Options) authz.Verdict {
	opts := &authz.DecideOptions{FoldPatterns: true, DefaultSchema: o.DefaultSchema}
	if opts.DefaultSchema == "" {
		opts.DefaultSchema = defaultPGSchema
	}
	ds := make([]authz.Decision, len(params))
	refused := -1
	for i, p := range params {
		set := &pg_query.Node{Node: &pg_query.Node_VariableSetStmt{VariableSetStmt: &pg_query.VariableSetStmt{
			Kind: pg_query.VariableSetKind_VAR_SET_VALUE,
			Name: p.Name,
			Args: []*pg_query.Node{pg_query.MakeAConstStrNode(p.Value, -1)},
		}}}
		kind, a := classify(set)
		m := pgStmt{text: StartupText(p), kind: kind, a: a}
		ds[i] = authz.Decide(g, m.resolve(opts.DefaultSchema), opts)
		if !ds[i].Allow && refused < 0 {
			refused = i
		}
	}
	v := authz.Verdict{Allow: refused < 0, Statements: ds}
	if refused >= 0 {
		for i := range ds {
			if ds[i].Allow {
				ds[i].Allow, ds[i].Rule = false, "batch"
				ds[i].Reason = "not applied: startup parameter " + params[refused].Name + " was refused, so the session did not start"
			}
		}
	}
	return v
}

// StartupText is how a startup parameter is recorded as a statement.
func StartupText(p StartupParam) string {
	return "<startup parameter " + p.Name + "=" + p.Value + ">"
}
