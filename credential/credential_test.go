package credential

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"strings"
	"testing"
)

// clientProof computes what a SCRAM client sends, from the token itself.
func clientProof(t *testing.T, token string, salt []byte, iter int, authMessage string) []byte {
	t.Helper()
	salted, err := pbkdf2.Key(sha256.New, token, salt, iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	h := hmac.New(sha256.New, salted)
	h.Write([]byte("Client Key"))
	clientKey := h.Sum(nil)
	stored := sha256.Sum256(clientKey)
	h = hmac.New(sha256.New, stored[:])
	h.Write([]byte(authMessage))
	sig := h.Sum(nil)
	for i := range clientKey {
		clientKey[i] ^= sig[i]
	}
	return clientKey
}

func TestTokenShape(t *testing.T) {
	a, b := NewToken(), NewToken()
	if a == b || !strings.HasPrefix(a, TokenPrefix) || len(a) != len(TokenPrefix)+32 {
		t.Fatalf("tokens %q %q", a, b)
	}
}

func TestVerifier(t *testing.T) {
	tok := NewToken()
	v := NewVerifier("agent-1", tok)
	if !v.CheckToken(tok) || v.CheckToken(tok+"x") || v.CheckToken(NewToken()) {
		t.Fatal("CheckToken")
	}
	const am = "n=,r=abc,r=abcdef,s=c2FsdA==,i=4096,c=biws,r=abcdef"
	if !v.CheckProof(am, clientProof(t, tok, Salt("agent-1"), Iterations, am)) {
		t.Fatal("a correct proof is refused")
	}
	if v.CheckProof(am+"x", clientProof(t, tok, Salt("agent-1"), Iterations, am)) {
		t.Fatal("a proof over another exchange is accepted")
	}
	if v.CheckProof(am, clientProof(t, tok, Salt("agent-2"), Iterations, am)) {
		t.Fatal("a proof salted for another agent is accepted")
	}
	if v.CheckProof(am, []byte("short")) {
		t.Fatal("a short proof is accepted")
	}
	if v2 := NewVerifier("agent-2", tok); string(v2.StoredKey) == string(v.StoredKey) {
		t.Fatal("two agents share a stored key for the same token")
	}
}
