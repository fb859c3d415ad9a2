package postgres

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockhq/airlock/authz"
	pgauthz "github.com/airlockhq/airlock/authz/postgres"
	"github.com/airlockhq/airlock/proxy"
	"github.com/airlockhq/airlock/recorder"
)

// Startup parameters. A client's StartupMessage carries settings besides
// user and database (application_name, TimeZone, DateStyle,
// statement_timeout, ...), and an options parameter with more of them as
// command-line switches (-c name=value, --name=value). Each is decided as
// SET of it would be under the session's grant, recorded, and passed to
// the upstream in its own startup message, so the server applies it as it
// would have; one the grant does not allow refuses the session with a
// FATAL that names it. None is dropped.

// protocolParams are the startup parameters that are not settings: the
// gateway reads them itself.
var protocolParams = map[string]bool{"user": true, "database": true, "options": true, "replication": true}

// settings lists the settings a startup message asks for, in the order
// the server applies them: those of options first, then the other
// parameters (which win over options for the same name).
func settings(params map[string]string) ([]pgauthz.StartupParam, error) {
	out, err := parseOptions(params["options"])
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(params))
	for k := range params {
		if !protocolParams[k] && !strings.HasPrefix(k, "_pq_.") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		out = append(out, pgauthz.StartupParam{Name: k, Value: params[k]})
	}
	return out, nil
}

// parseOptions reads the options startup parameter as PostgreSQL does
// (pg_split_opts, then its command-line switches): words split at white
// space, a backslash taking the next character literally; each setting a
// "-c name=value" (or "-cname=value") or "--name=value", with dashes in the
// name read as underscores. The server's other switches (-B, -e, -F, ...)
// are refused by name: they are rare, and each would need its own
// reading.
func parseOptions(opts string) ([]pgauthz.StartupParam, error) {
	words := splitOptions(opts)
	var out []pgauthz.StartupParam
	for i := 0; i < len(words); i++ {
		w := words[i]
		var arg, flag string
		switch {
		case w == "--":
			if i+1 < len(words) {
				return nil, invalidSwitch(words[i+1])
			}
			return out, nil
		case strings.HasPrefix(w, "--"):
			flag, arg = "--", w[2:]
		case w == "-c":
			if i+1 == len(words) {
				return nil, invalidSwitch(w)
			}
			i++
			flag, arg = "-c", words[i]
		case strings.HasPrefix(w, "-c"):
			flag, arg = "-c", w[2:]
		case strings.HasPrefix(w, "-") && len(w) > 1:
			return nil, &fatal{stateFeatureNotSupported, fmt.Sprintf("airlock: the startup option %s is not supported; set settings with -c name=value", w[:2])}
		default:
			return nil, invalidSwitch(w)
		}
		name, value, ok := strings.Cut(arg, "=")
		if !ok {
			if flag == "--" {
				return nil, &fatal{stateSyntaxError, fmt.Sprintf("--%s requires a value", arg)}
			}
			return nil, &fatal{stateSyntaxError, fmt.Sprintf("-c %s requires a value", arg)}
		}
		if name == "" {
			// The server's answer; and an empty name would end the
			// upstream's startup message early.
			return nil, &fatal{stateUndefinedObject, `unrecognized configuration parameter ""`}
		}
		out = append(out, pgauthz.StartupParam{Name: strings.ReplaceAll(name, "-", "_"), Value: value})
	}
	return out, nil
}

// invalidSwitch is PostgreSQL's own error for a word of options it cannot
// read as a switch.
func invalidSwitch(w string) error {
	return &fatal{stateSyntaxError, fmt.Sprintf("invalid command-line argument for server process: %s", w)}
}

// splitOptions is PostgreSQL's pg_split_opts: words separated by white
// space, where a backslash makes the next character part of the word
// (a space, or a backslash).
func splitOptions(s string) []string {
	var words []string
	var b strings.Builder
	inWord, escaped := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			b.WriteByte(c)
			escaped = false
		case c == '\\':
			escaped, inWord = true, true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, b.String())
	}
	return words
}

// admitSettings decides on and records the settings the client asked for
// at connect time. It returns the admission, whose outcomes are reported
// once the upstream has applied them, or the FATAL to send.
func admitSettings(sess *proxy.Session, set []pgauthz.StartupParam) (*proxy.Admitted, *fatal) {
	if len(set) == 0 {
		return nil, nil
	}
	v := pgauthz.Startup(sess.Grant(), set, pgauthz.Options{})
	adm, err := sess.Admit(v)
	if err == nil {
		return adm, nil
	}
	var ref *proxy.Refusal
	if !errors.As(err, &ref) {
		ref = &proxy.Refusal{Kind: "recorder", Msg: err.Error()}
	}
	if ref.Kind == "recorder" || ref.Rule == "grant-unconfirmed" {
		// As a login refused for the same reason (authErrorCode).
		return nil, &fatal{stateCannotConnectNow, ref.Msg}
	}
	for i, d := range v.Statements {
		if !d.Allow && d.Rule != "batch" {
			return nil, &fatal{stateInsufficientPrivilege, fmt.Sprintf("airlock: startup parameter %s=%s refused: %s", set[i].Name, set[i].Value, d.Reason)}
		}
	}
	return nil, &fatal{stateInsufficientPrivilege, ref.Msg}
}

// settingsApplied records that the upstream took the settings (its startup
// succeeded), or why it did not.
func settingsApplied(adm *proxy.Admitted, dialErr error) {
	if adm == nil {
		return
	}
	res := recorder.Result{Executed: true, Tag: "SET"}
	if dialErr != nil {
		res = recorder.Result{Error: "not applied: the upstream connection failed: " + dialErr.Error()}
		var pe *pgconn.PgError
		if errors.As(dialErr, &pe) {
			res.SQLState = pe.Code
		}
	}
	for i := range adm.Len() {
		adm.Done(i, res)
	}
}

// upstreamParams are the settings of the upstream's startup message: what
// the client asked for (and was allowed), after the gateway's own.
func upstreamParams(g *authz.Grant, set []pgauthz.StartupParam) map[string]string {
	// The authorizer reads string literals as the SQL standard says; the
	// server must too, whatever its configured default.
	rp := map[string]string{"standard_conforming_strings": "on"}
	if readOnlyDefault(g) {
		rp["default_transaction_read_only"] = "on"
	}
	for _, s := range set {
		// Setting names are case-insensitive: the last one the client
		// gave wins, as on the server.
		rp[strings.ToLower(s.Name)] = s.Value
	}
	return rp
}

// readOnlyDefault reports whether a session under g starts with
// default_transaction_read_only on: defence in depth for read grants,
// beside the authorizer. Not for grants that list functions (--function):
// the approver vouched for those, and one that writes a temporary table or
// calls nextval would fail in a read-only transaction. A client may turn it
// off (it is a transaction characteristic, which read grants may set);
// every statement is still authorized.
func readOnlyDefault(g *authz.Grant) bool {
	return g != nil && g.Access == authz.AccessRead && len(g.Scope.Functions) == 0
}

// upstreamRefusal is the FATAL to relay when the upstream refused the
// connection for something the client asked (an invalid setting, too many
// connections, a server starting or stopping), as the server said it. It
// is nil for failures that concern the gateway's own credentials or
// configuration (authentication, the database name), which the client is
// told about in the gateway's words.
func upstreamRefusal(err error) *pgproto3.ErrorResponse {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) != 5 {
		return nil
	}
	switch pe.Code[:2] {
	case "0A", "22", "42", "53", "54", "55", "57":
		return &pgproto3.ErrorResponse{
			Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: pe.Code, Message: pe.Message,
			Detail: pe.Detail, Hint: pe.Hint, File: pe.File, Line: pe.Line, Routine: pe.Routine,
		}
	}
	return nil
}
