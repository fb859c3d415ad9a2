package awsauth

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/aws/smithy-go"
)

// Error is a failure to mint or use an AWS credential. Its text is for the
// agent: what failed, why, and what the gateway's IAM identity needs. The
// SDK's full error (request ids, the denied principal) goes to the
// operator's log through LogValue.
type Error struct {
	// Action is the IAM action involved (rds-db:connect,
	// ec2-instance-connect:SendSSHPublicKey, ...), when there is one.
	Action string
	// Code is AWS's error code, when AWS answered.
	Code string
	Msg  string
	Err  error
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// LogValue adds the cause for the operator.
func (e *Error) LogValue() slog.Value {
	if e.Err == nil {
		return slog.StringValue(e.Msg)
	}
	return slog.StringValue(e.Msg + " [cause: " + e.Err.Error() + "]")
}

// noCredentials is the error for a credential chain that found nothing.
func noCredentials(action string, err error) *Error {
	need := "an AWS identity"
	if action != "" {
		need = "an AWS identity allowed " + action
	}
	return &Error{Action: action, Code: "NoCredentials", Err: err, Msg: fmt.Sprintf(
		"no AWS credentials: the gateway needs %s (environment variables, shared config, web identity, or the instance's or task's role; see docs/aws.md)", need)}
}

// classify turns an AWS API error on action (for resource, an ARN or id)
// into an Error that names the cause and the permission needed.
func classify(err error, action, resource string) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var api smithy.APIError
	if !errors.As(err, &api) {
		return &Error{Action: action, Err: err, Msg: fmt.Sprintf("cannot reach AWS for %s: %v", action, rootCause(err))}
	}
	code, msg := api.ErrorCode(), api.ErrorMessage()
	out := &Error{Action: action, Code: code, Err: err}
	switch {
	case code == "AccessDenied" || code == "AccessDeniedException" || code == "UnauthorizedOperation" || code == "AuthException" || code == "AuthFailure":
		out.Msg = fmt.Sprintf("AWS denied %s on %s to the gateway's identity (%s): allow %s in its IAM policy (docs/aws.md)", action, resource, code, action)
	case strings.Contains(code, "Throttl") || code == "RequestLimitExceeded" || strings.HasPrefix(code, "TooManyRequests") || code == "SlowDown":
		out.Msg = fmt.Sprintf("AWS is throttling %s (%s): too many requests from this account; try again in a moment", action, code)
	case code == "ExpiredToken" || code == "ExpiredTokenException" || code == "InvalidClientTokenId" || code == "UnrecognizedClientException" ||
		code == "SignatureDoesNotMatch" || code == "IncompleteSignature" || code == "InvalidSignatureException":
		out.Msg = fmt.Sprintf("AWS did not accept the gateway's credentials for %s (%s): they are invalid or expired, or the gateway's clock is off", action, code)
	case code == "EC2InstanceNotFoundException" || code == "InvalidInstanceID.NotFound":
		out.Msg = fmt.Sprintf("EC2 instance %s was not found (%s): check auth.instance_id and auth.region", resource, code)
	case code == "EC2InstanceStateInvalidException":
		out.Msg = fmt.Sprintf("EC2 instance %s is not running (%s)", resource, code)
	case code == "EC2InstanceUnavailableException" || code == "ServiceException" || code == "ServiceUnavailable" || code == "InternalError":
		out.Msg = fmt.Sprintf("AWS could not serve %s right now (%s); try again in a moment", action, code)
	default:
		out.Msg = fmt.Sprintf("AWS refused %s on %s: %s: %s", action, resource, code, msg)
	}
	return out
}

// rootCause is the innermost error, without the SDK's operation and retry
// wrapping, for a short message.
func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
