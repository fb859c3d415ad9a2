package postgres

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"github.com/airlockhq/airlock/credential"
)

// scramServer is the server side of one SCRAM-SHA-256 exchange (RFC 5802,
// RFC 7677) without channel binding. It never sees the token: it checks
// the client's proof against each candidate verifier.
type scramServer struct {
	salt []byte

	gs2Header       string
	clientFirstBare string
	serverFirst     string
	nonce           string
	authMessage     string
}

var errSCRAM = errors.New("malformed SCRAM message")

// first reads the client-first-message and returns the server-first-message.
func (s *scramServer) first(msg string) (string, error) {
	// gs2-header: cbind-flag "," [authzid] ","
	flag, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return "", errSCRAM
	}
	switch {
	case flag == "n", flag == "y":
		// "y": the client could bind to the channel but we did not offer
		// SCRAM-SHA-256-PLUS; that is fine.
	case strings.HasPrefix(flag, "p="):
		return "", errors.New("SCRAM channel binding was not offered; use SCRAM-SHA-256")
	default:
		return "", errSCRAM
	}
	authzid, bare, ok := strings.Cut(rest, ",")
	if !ok || authzid != "" {
		return "", errors.New("SCRAM authorization identity is not supported")
	}
	s.gs2Header = flag + "," + authzid + ","
	s.clientFirstBare = bare
	var clientNonce string
	for _, attr := range strings.Split(bare, ",") {
		if v, ok := strings.CutPrefix(attr, "r="); ok {
			clientNonce = v
		}
	}
	if clientNonce == "" {
		return "", errSCRAM
	}
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	s.nonce = clientNonce + base64.StdEncoding.EncodeToString(b[:])
	s.serverFirst = "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(s.salt) + ",i=" + strconv.Itoa(credential.Iterations)
	return s.serverFirst, nil
}

// final reads the client-final-message and returns the client's proof,
// after checking that it answers this exchange.
func (s *scramServer) final(msg string) ([]byte, error) {
	withoutProof, proof64, ok := strings.Cut(msg, ",p=")
	if !ok {
		return nil, errSCRAM
	}
	var cbind, nonce string
	for _, attr := range strings.Split(withoutProof, ",") {
		switch {
		case strings.HasPrefix(attr, "c="):
			cbind = attr[2:]
		case strings.HasPrefix(attr, "r="):
			nonce = attr[2:]
		}
	}
	if cbind != base64.StdEncoding.EncodeToString([]byte(s.gs2Header)) {
		return nil, errors.New("SCRAM channel binding does not match")
	}
	if nonce != s.nonce {
		return nil, errors.New("SCRAM nonce does not match")
	}
	proof, err := base64.StdEncoding.DecodeString(proof64)
	if err != nil {
		return nil, errSCRAM
	}
	s.authMessage = s.clientFirstBare + "," + s.serverFirst + "," + withoutProof
	return proof, nil
}

// serverFinal is the server-final-message proving the server holds v.
func (s *scramServer) serverFinal(v *credential.Verifier) string {
	return "v=" + base64.StdEncoding.EncodeToString(v.ServerSignature(s.authMessage))
}
