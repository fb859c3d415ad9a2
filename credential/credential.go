// Package credential makes grant tokens and the verifiers that let a gateway
// check a token it never stores.
//
// A verifier is a SCRAM-SHA-256 stored key (RFC 5802, RFC 7677): it checks a
// SCRAM proof, so a Postgres client can prove the token without sending it,
// and it checks a cleartext token sent inside TLS. The salt is derived from
// the agent's name, so every grant of one agent shares it; the gateway can
// then send the salt before it knows which of the agent's grants the client
// holds, and test the proof against each of them.
package credential

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"strings"
)

// TokenPrefix starts every grant token, so a leaked one is recognisable.
const TokenPrefix = "alk_"

// Iterations is the PBKDF2 iteration count of every verifier, PostgreSQL's
// default. Tokens carry 160 random bits, so the count guards nothing that
// brute force could reach; it stays at the default clients expect.
const Iterations = 4096

var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewToken returns a fresh token: the prefix and 160 random bits.
func NewToken() string {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("credential: no randomness: " + err.Error())
	}
	return TokenPrefix + strings.ToLower(tokenEncoding.EncodeToString(b[:]))
}

// Verifier is what is stored instead of a token.
type Verifier struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iterations"`
	StoredKey  []byte `json:"stored_key"`
	ServerKey  []byte `json:"server_key"`

	// MySQLNative is SHA1(SHA1(token)), what mysql_native_password checks
	// a client's scramble against. MySQLSHA2 is SHA256(SHA256(token)),
	// what caching_sha2_password's fast path checks against. Neither lets
	// its holder answer a challenge: that takes SHA1(token) or
	// SHA256(token). Grants made before MySQL support lack them; their
	// tokens still pass as a clear password inside TLS (CheckToken).
	MySQLNative []byte `json:"mysql_native,omitempty"`
	MySQLSHA2   []byte `json:"mysql_sha2,omitempty"`
}

// Salt is the SCRAM salt of every token issued to agent.
func Salt(agent string) []byte {
	h := sha256.Sum256([]byte("airlock grant token salt\x00" + agent))
	return h[:16]
}

// NewVerifier derives the verifier of token for agent.
func NewVerifier(agent, token string) *Verifier {
	salted := saltedPassword(token, Salt(agent), Iterations)
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	sha1Once := sha1.Sum([]byte(token))
	sha1Twice := sha1.Sum(sha1Once[:])
	sha2Once := sha256.Sum256([]byte(token))
	sha2Twice := sha256.Sum256(sha2Once[:])
	return &Verifier{
		Salt:        Salt(agent),
		Iterations:  Iterations,
		StoredKey:   stored[:],
		ServerKey:   mac(salted, "Server Key"),
		MySQLNative: sha1Twice[:],
		MySQLSHA2:   sha2Twice[:],
	}
}

// CheckMySQLNative reports whether scramble is a mysql_native_password
// answer to the 20-byte challenge made with the token of v:
// SHA1(token) XOR SHA1(challenge + SHA1(SHA1(token))).
func (v *Verifier) CheckMySQLNative(challenge, scramble []byte) bool {
	if len(scramble) != sha1.Size || len(v.MySQLNative) != sha1.Size {
		return false
	}
	h := sha1.New()
	h.Write(challenge)
	h.Write(v.MySQLNative)
	stage1 := h.Sum(nil)
	for i := range stage1 {
		stage1[i] ^= scramble[i]
	}
	got := sha1.Sum(stage1)
	return subtle.ConstantTimeCompare(got[:], v.MySQLNative) == 1
}

// CheckMySQLSHA2 reports whether scramble is a caching_sha2_password
// fast-path answer to the challenge made with the token of v:
// SHA256(token) XOR SHA256(SHA256(SHA256(token)) + challenge).
func (v *Verifier) CheckMySQLSHA2(challenge, scramble []byte) bool {
	if len(scramble) != sha256.Size || len(v.MySQLSHA2) != sha256.Size {
		return false
	}
	h := sha256.New()
	h.Write(v.MySQLSHA2)
	h.Write(challenge)
	stage1 := h.Sum(nil)
	for i := range stage1 {
		stage1[i] ^= scramble[i]
	}
	got := sha256.Sum256(stage1)
	return subtle.ConstantTimeCompare(got[:], v.MySQLSHA2) == 1
}

// CheckToken reports whether token is the one v was made from.
func (v *Verifier) CheckToken(token string) bool {
	salted := saltedPassword(token, v.Salt, v.Iterations)
	stored := sha256.Sum256(mac(salted, "Client Key"))
	return subtle.ConstantTimeCompare(stored[:], v.StoredKey) == 1
}

// CheckProof reports whether a SCRAM client proof over authMessage was made
// with the token of v.
func (v *Verifier) CheckProof(authMessage string, proof []byte) bool {
	if len(proof) != sha256.Size || len(v.StoredKey) != sha256.Size {
		return false
	}
	sig := mac(v.StoredKey, authMessage)
	clientKey := make([]byte, sha256.Size)
	for i := range clientKey {
		clientKey[i] = proof[i] ^ sig[i]
	}
	stored := sha256.Sum256(clientKey)
	return subtle.ConstantTimeCompare(stored[:], v.StoredKey) == 1
}

// ServerSignature is the signature the server sends in its final SCRAM
// message, proving it too knows the verifier.
func (v *Verifier) ServerSignature(authMessage string) []byte {
	return mac(v.ServerKey, authMessage)
}

func saltedPassword(token string, salt []byte, iter int) []byte {
	k, err := pbkdf2.Key(sha256.New, token, salt, iter, sha256.Size)
	if err != nil {
		panic("credential: pbkdf2: " + err.Error())
	}
	return k
}

func mac(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
