package testenv

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// emptySHA256 is the payload hash presigned requests are signed with.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// maxSkew is how far a signature's time may be from AWS's clock.
const maxSkew = 5 * time.Minute

// sigError is a signature check that failed: code is the AWS error code,
// msg says why, as AWS's message would.
type sigError struct{ code, msg string }

func (e *sigError) Error() string { return e.code + ": " + e.msg }

// signed is what a verified signature tells: who signed, for which
// region and service, when.
type signed struct {
	accessKey, arn  string
	region, service string
	at              time.Time
}

// scope parses "AKID/20240102/us-east-1/service/aws4_request".
func parseScope(cred string) (akid, date, region, service string, err error) {
	p := strings.Split(cred, "/")
	if len(p) != 5 || p[4] != "aws4_request" {
		return "", "", "", "", &sigError{"IncompleteSignature", fmt.Sprintf("credential %q is not ACCESS_KEY/DATE/REGION/SERVICE/aws4_request", cred)}
	}
	return p[0], p[1], p[2], p[3], nil
}

// lookup finds the credentials of akid, checking the session token a
// temporary key must come with and its expiry.
func (a *AWS) lookup(akid, sessionToken string, now time.Time) (aws.Credentials, awsCred, error) {
	a.mu.Lock()
	c, ok := a.creds[akid]
	a.mu.Unlock()
	if !ok {
		return aws.Credentials{}, c, &sigError{"InvalidClientTokenId", "The security token included in the request is invalid: unknown access key " + akid}
	}
	if c.sessionToken != sessionToken {
		return aws.Credentials{}, c, &sigError{"InvalidClientTokenId", "The security token included in the request is invalid"}
	}
	if !c.expires.IsZero() && !now.Before(c.expires) {
		return aws.Credentials{}, c, &sigError{"ExpiredToken", "The security token included in the request is expired"}
	}
	return aws.Credentials{AccessKeyID: akid, SecretAccessKey: c.secret, SessionToken: c.sessionToken}, c, nil
}

func parseAmzDate(s string) (time.Time, error) {
	t, err := time.Parse("20060102T150405Z", s)
	if err != nil {
		return time.Time{}, &sigError{"IncompleteSignature", fmt.Sprintf("X-Amz-Date %q is not YYYYMMDDTHHMMSSZ", s)}
	}
	return t, nil
}

// verifyHeader checks a request signed in its Authorization header: it
// rebuilds the request from the headers the client says it signed and
// signs it again with the emulator's copy of the secret key.
func (a *AWS) verifyHeader(r *http.Request, body []byte) (*signed, error) {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return nil, &sigError{"MissingAuthenticationToken", "Request is missing Authentication Token"}
	}
	fields := map[string]string{}
	for _, f := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	akid, date, region, service, err := parseScope(fields["Credential"])
	if err != nil {
		return nil, err
	}
	at, err := parseAmzDate(r.Header.Get("X-Amz-Date"))
	if err != nil {
		return nil, err
	}
	now := a.Clock.Now()
	if at.Format("20060102") != date {
		return nil, &sigError{"SignatureDoesNotMatch", "credential scope date does not match X-Amz-Date"}
	}
	if d := now.Sub(at); d > maxSkew || d < -maxSkew {
		return nil, &sigError{"SignatureDoesNotMatch", fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - 5 min.)", at.Format("20060102T150405Z"), now.UTC().Format("20060102T150405Z"), now.UTC().Format("20060102T150405Z"))}
	}
	creds, c, err := a.lookup(akid, r.Header.Get("X-Amz-Security-Token"), now)
	if err != nil {
		return nil, err
	}
	again, err := http.NewRequest(r.Method, "https://"+r.Host+r.URL.RequestURI(), nil)
	if err != nil {
		return nil, err
	}
	again.Host = r.Host
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		switch h {
		case "host":
		case "content-length":
			again.ContentLength = int64(len(body))
		default:
			again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, again, hex.EncodeToString(sum[:]), service, region, at); err != nil {
		return nil, err
	}
	if !hmac.Equal([]byte(again.Header.Get("Authorization")), []byte(auth)) {
		return nil, &sigError{"SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."}
	}
	return &signed{accessKey: akid, arn: c.arn, region: region, service: service, at: at}, nil
}

// presigned is a verified presigned URL.
type presigned struct {
	signed
	expires time.Duration
	query   url.Values // without the X-Amz-* signing parameters
}

// verifyPresigned checks a URL presigned with SigV4 (an RDS token, an EICE
// openTunnel URL): it signs the same request again with the emulator's
// copy of the secret key and the time the URL claims, then checks that
// time against Clock and the URL's expiry.
func (a *AWS) verifyPresigned(host, path string, q url.Values) (*presigned, error) {
	if q.Get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" {
		return nil, &sigError{"IncompleteSignature", "X-Amz-Algorithm must be AWS4-HMAC-SHA256"}
	}
	if q.Get("X-Amz-SignedHeaders") != "host" {
		return nil, &sigError{"IncompleteSignature", fmt.Sprintf("X-Amz-SignedHeaders %q: only host may be signed", q.Get("X-Amz-SignedHeaders"))}
	}
	akid, date, region, service, err := parseScope(q.Get("X-Amz-Credential"))
	if err != nil {
		return nil, err
	}
	at, err := parseAmzDate(q.Get("X-Amz-Date"))
	if err != nil {
		return nil, err
	}
	if at.Format("20060102") != date {
		return nil, &sigError{"SignatureDoesNotMatch", "credential scope date does not match X-Amz-Date"}
	}
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs <= 0 {
		return nil, &sigError{"IncompleteSignature", fmt.Sprintf("X-Amz-Expires %q is not a positive number of seconds", q.Get("X-Amz-Expires"))}
	}
	now := a.Clock.Now()
	creds, c, err := a.lookup(akid, q.Get("X-Amz-Security-Token"), now)
	if err != nil {
		return nil, err
	}
	bare := url.Values{}
	for k, v := range q {
		switch k {
		case "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token":
		default:
			bare[k] = v
		}
	}
	req, err := http.NewRequest(http.MethodGet, "https://"+host+path+"?"+bare.Encode(), nil)
	if err != nil {
		return nil, err
	}
	again, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req, emptySHA256, service, region, at)
	if err != nil {
		return nil, err
	}
	au, err := url.Parse(again)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal([]byte(au.Query().Get("X-Amz-Signature")), []byte(q.Get("X-Amz-Signature"))) {
		return nil, &sigError{"SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided (host, path, parameters, region, service or secret key differ)"}
	}
	exp := time.Duration(secs) * time.Second
	if at.Sub(now) > maxSkew {
		return nil, &sigError{"SignatureDoesNotMatch", fmt.Sprintf("signed at %s, in the future of %s", at.Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	if now.After(at.Add(exp)) {
		return nil, &sigError{"ExpiredToken", fmt.Sprintf("signed at %s for %s: expired at %s, now is %s", at.Format(time.RFC3339), exp, at.Add(exp).Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	delete(bare, "X-Amz-Expires")
	return &presigned{signed: signed{accessKey: akid, arn: c.arn, region: region, service: service, at: at}, expires: exp, query: bare}, nil
}

func userName() (string, error) {
	u, err := user.Current()
	if err != nil {
		return "", err
	}
	return u.Username, nil
}
