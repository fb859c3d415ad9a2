package mysql

import (
	"errors"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/proxy"
)

// What a refused command is answered with. Drivers branch on the error
// number and SQLSTATE, so each refusal carries the server's own code for
// the closest case (docs/mysql.md has the table):
//
//   - a syntax error: 1064 ER_PARSE_ERROR (42000), worded as the server
//     words it, with airlock's note;
//   - the grant does not allow it: 1142 ER_TABLEACCESS_DENIED_ERROR
//     (42000); 1227 ER_SPECIFIC_ACCESS_DENIED_ERROR (42000) when only
//     admin access would; 1044 ER_DBACCESS_DENIED_ERROR (42000) for
//     another database;
//   - KILL of a connection the agent may not name: 1094 ER_NO_SUCH_THREAD;
//   - COM_STMT_EXECUTE of a statement not prepared through airlock: 1243
//     ER_UNKNOWN_STMT_HANDLER; a command byte no server knows: 1047
//     ER_UNKNOWN_COM_ERROR (08S01); a command airlock does not relay
//     (replication, COM_SHUTDOWN, ...): 1227; COM_CHANGE_USER: 1045
//     ER_ACCESS_DENIED_ERROR (28000), as a failed change of user is;
//   - the recorder (or the control plane) could not confirm in time: 1205
//     ER_LOCK_WAIT_TIMEOUT (HY000). Like a lock wait timeout, only the
//     statement failed, the transaction is still open, and retrying it
//     is right: frameworks treat 1205 as transient (Connector/J's
//     SQLTransientException, Spring's CannotAcquireLockException);
//   - the grant ended (revoked, expired): 1927 ER_CONNECTION_KILLED
//     (70100); the connection closes right after.
const (
	erParse                = 1064 // 42000
	erDBAccessDenied       = 1044 // 42000
	erSpecificAccess       = 1227 // 42000
	erNoSuchThread         = 1094 // HY000
	erUnknownStmtHandler   = 1243 // HY000
	erLockWaitTimeout      = 1205 // HY000
	erNetPacketsOutOfOrder = 1156 // 08S01
	erNetReadError         = 1158 // 08S01
)

// syntaxNote follows the server's syntax error in airlock's answer.
const syntaxNote = " (airlock could not parse it, so nothing in this message was sent to the server)"

// refusalPacket is the ERR packet answering a command refused with err
// under verdict v. grantEnded says whether the session's grant is no
// longer active (asked only for a refusal of kind "grant").
func refusalPacket(v authz.Verdict, err error, grantEnded func() bool) []byte {
	var ref *proxy.Refusal
	if !errors.As(err, &ref) {
		ref = &proxy.Refusal{Kind: "recorder", Msg: err.Error()}
	}
	switch ref.Kind {
	case "syntax":
		if ref.Syntax != nil {
			// The server's text as it is: its near '...' may hold
			// newlines, which clients print.
			return rawErrPacket(erParse, "42000", ref.Syntax.Msg+syntaxNote)
		}
	case "recorder":
		return errPacket(erLockWaitTimeout, "HY000", ref.Msg)
	case "cancelled":
		// A held statement the client gave up on: the server's answer
		// to a query killed by KILL QUERY.
		return errPacket(erQueryInterrupted, "70100", ref.Msg)
	case "too-large":
		// Larger than recorder.max_statement_bytes: the server's own
		// answer to a packet larger than max_allowed_packet.
		return errPacket(erNetPacketTooLarge, "08S01", ref.Msg)
	case "grant":
		if grantEnded() {
			return errPacket(erConnectionKilled, "70100", ref.Msg)
		}
		return errPacket(erLockWaitTimeout, "HY000", ref.Msg)
	}
	code, state := uint16(erTableAccessDenied), "42000"
	if d := refusedDecision(v); d != nil {
		switch {
		case d.Rule == "database":
			code = erDBAccessDenied
		case d.Rule == "no-such-thread":
			code, state = erNoSuchThread, "HY000"
		case d.Rule == "unknown-statement":
			code, state = erUnknownStmtHandler, "HY000"
		case d.Rule == "unsupported-command" && d.Class.Kind == "UNKNOWN COMMAND":
			code, state = erUnknownCom, "08S01"
		case d.Rule == "change-user":
			code, state = erAccessDenied, "28000"
		case d.Rule == "replication", d.Rule == "unsupported-command",
			d.Rule == "access-level" && d.Class.Required >= authz.AccessAdmin:
			code = erSpecificAccess
		}
	}
	return errPacket(code, state, ref.Msg)
}

// refusedDecision is the decision that refused v: the first refused
// statement that was not refused only for another's sake.
func refusedDecision(v authz.Verdict) *authz.Decision {
	for i := range v.Statements {
		if d := &v.Statements[i]; !d.Allow && d.Rule != "batch" {
			return d
		}
	}
	return nil
}
