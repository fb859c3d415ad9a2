package postgres

import (
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockhq/airlock/proxy"
)

// SQLSTATEs the gateway sends; docs/postgres.md lists when.
const (
	stateSyntaxError           = "42601"
	stateInsufficientPrivilege = "42501"
	stateQueryCanceled         = "57014"
	stateInvalidAuthSpec       = "28000"
	stateInvalidPassword       = "28P01"
	stateInvalidCatalogName    = "3D000"
	stateUndefinedObject       = "42704"
	stateProtocolViolation     = "08P01"
	stateConnectionFailure     = "08006"
	stateFeatureNotSupported   = "0A000"
	stateSystemError           = "58000"
	stateAdminShutdown         = "57P01"
	stateCannotConnectNow      = "57P03"
)

func errorResponse(severity, code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg}
}

// syntaxNote is added as the DETAIL of a syntax error airlock answers in
// the server's place. DETAIL rather than HINT: psql prints it after the
// server's own lines (ERROR, LINE, caret), and the few syntax errors with
// a hint of their own keep it.
const syntaxNote = "airlock did not send this message to the server: its PostgreSQL parser could not read it, and airlock runs nothing it cannot read."

// refusalResponse is the ErrorResponse that stands for a refused message:
// what the server would have said about a syntax error, else airlock's
// reason with the code that says what kind of refusal it is.
func refusalResponse(ref *proxy.Refusal) *pgproto3.ErrorResponse {
	switch {
	case ref.Kind == "syntax" && ref.Syntax != nil:
		se := ref.Syntax
		code := se.Code
		if code == "" {
			code = stateSyntaxError
		}
		detail := syntaxNote
		if se.Detail != "" {
			detail = se.Detail + "\n" + syntaxNote
		}
		return &pgproto3.ErrorResponse{
			Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: se.Msg,
			Detail: detail, Hint: se.Hint, Position: int32(se.Pos),
			File: se.File, Line: int32(se.Line), Routine: se.Routine,
		}
	case ref.Kind == "too-large":
		// Larger than recorder.max_statement_bytes: the server's code for
		// a statement past an implementation limit.
		return errorResponse("ERROR", stateProgramLimitExceeded, ref.Msg)
	case ref.Kind == "cancelled":
		// A held statement the client cancelled: what the server says of
		// a statement cancelled by request.
		return errorResponse("ERROR", stateQueryCanceled, ref.Msg)
	case ref.Kind == "recorder", ref.Rule == "grant-unconfirmed":
		// The gateway cannot record, or cannot confirm the grant, now:
		// the same message may go through later.
		return errorResponse("ERROR", stateSystemError, ref.Msg)
	default:
		return errorResponse("ERROR", stateInsufficientPrivilege, ref.Msg)
	}
}

// authErrorCode is the SQLSTATE of a refused login, as close as there is
// to what the server says in the same case.
func authErrorCode(err error) string {
	ae, ok := proxy.AsAuthError(err)
	if !ok {
		return stateInvalidAuthSpec
	}
	switch ae.Kind {
	case "bad-token":
		// The server's "password authentication failed".
		return stateInvalidPassword
	case "no-resource":
		// The resource is what the client names as its database.
		return stateInvalidCatalogName
	case "unavailable", "recorder":
		// The gateway cannot take sessions right now (control plane or
		// recorder unreachable), as a server starting up cannot.
		return stateCannotConnectNow
	case "protocol":
		// A malformed or unexpected SASL message.
		return stateProtocolViolation
	default:
		// no-agent, wrong-resource, pending, denied, revoked, expired,
		// throttled (too many failed logins).
		return stateInvalidAuthSpec
	}
}
