package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/config"
)

// Store keeps console sessions and one-time sign-in links in a JetStream
// key-value bucket, so every gateway replica serves every session.
//
// Keys hold only the SHA-256 of a cookie or link secret: whoever reads the
// bucket learns who is signed in, not how to be them.
type Store struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// ErrNoSession is returned for a cookie or link that is unknown, used,
// expired or signed out.
var ErrNoSession = errors.New("console: no such session")

// LinkTTL is how long a sign-in link works.
const LinkTTL = 60 * time.Second

// OpenStore creates (or updates) the bucket. Its entries vanish after
// lifetime: a session ends by then anyway, and an unused link earlier.
func OpenStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, lifetime time.Duration) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "airlock web console sessions and sign-in links (by SHA-256 of their secrets)",
		History:     1,
		TTL:         lifetime + time.Minute,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("console: bucket %q: %w", bucket, err)
	}
	return &Store{kv: kv, now: func() time.Time { return time.Now().UTC() }}, nil
}

// session is what the bucket holds of a console session.
type session struct {
	Name string      `json:"name"`
	Role config.Role `json:"role"`
	// TokenFP is a prefix of the identity's token_sha256 at sign-in: a
	// rotated token ends the sessions it opened.
	TokenFP  string    `json:"token_fp"`
	Created  time.Time `json:"created"`
	LastSeen time.Time `json:"last_seen"`
}

// link is what the bucket holds of an unused sign-in link.
type link struct {
	Name    string      `json:"name"`
	Role    config.Role `json:"role"`
	TokenFP string      `json:"token_fp"`
	Expires time.Time   `json:"expires"`
}

func tokenFP(id *config.Identity) string {
	if len(id.TokenSHA256) < 16 {
		return id.TokenSHA256
	}
	return id.TokenSHA256[:16]
}

// newSecret returns 256 random bits, base64url.
func newSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("console: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func key(kind, secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return kind + "." + hex.EncodeToString(sum[:])
}

// validSecret says whether s could be one of ours, so junk never reaches
// the bucket as a key.
func validSecret(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// NewLink stores a sign-in link for who and returns its secret.
func (s *Store) NewLink(ctx context.Context, who *config.Identity) (secret string, expires time.Time, err error) {
	secret = newSecret()
	expires = s.now().Add(LinkTTL)
	b, _ := json.Marshal(link{Name: who.Name, Role: who.Role, TokenFP: tokenFP(who), Expires: expires})
	if _, err := s.kv.Create(ctx, key("link", secret), b); err != nil {
		return "", time.Time{}, fmt.Errorf("console: storing sign-in link: %w", err)
	}
	return secret, expires, nil
}

// PeekLink returns the link's identity name without using the link.
func (s *Store) PeekLink(ctx context.Context, secret string) (*link, error) {
	l, _, err := s.getLink(ctx, secret)
	return l, err
}

func (s *Store) getLink(ctx context.Context, secret string) (*link, uint64, error) {
	if !validSecret(secret) {
		return nil, 0, ErrNoSession
	}
	e, err := s.kv.Get(ctx, key("link", secret))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNoSession
	}
	if err != nil {
		return nil, 0, err
	}
	var l link
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		return nil, 0, fmt.Errorf("console: stored link unreadable: %w", err)
	}
	if !s.now().Before(l.Expires) {
		return nil, 0, ErrNoSession
	}
	return &l, e.Revision(), nil
}

// UseLink spends the link: the delete is conditional on the revision read,
// so of two replicas (or two tabs) racing, exactly one succeeds.
func (s *Store) UseLink(ctx context.Context, secret string) (*link, error) {
	l, rev, err := s.getLink(ctx, secret)
	if err != nil {
		return nil, err
	}
	if err := s.kv.Delete(ctx, key("link", secret), jetstream.LastRevision(rev)); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return nil, ErrNoSession
		}
		return nil, fmt.Errorf("console: spending sign-in link: %w", err)
	}
	return l, nil
}

// NewSession stores a session for who and returns the cookie's value.
func (s *Store) NewSession(ctx context.Context, who *config.Identity) (string, error) {
	id := newSecret()
	now := s.now()
	b, _ := json.Marshal(session{Name: who.Name, Role: who.Role, TokenFP: tokenFP(who), Created: now, LastSeen: now})
	if _, err := s.kv.Create(ctx, key("session", id), b); err != nil {
		return "", fmt.Errorf("console: storing session: %w", err)
	}
	return id, nil
}

// touchEvery is how stale last_seen may get before a request rewrites it:
// idle expiry is that much coarse, and most requests write nothing.
const touchEvery = time.Minute

// Session returns the session of cookie value id if it is still valid,
// and refreshes its last use.
func (s *Store) Session(ctx context.Context, id string, idle, lifetime time.Duration) (*session, error) {
	if !validSecret(id) {
		return nil, ErrNoSession
	}
	k := key("session", id)
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, err
	}
	var ss session
	if err := json.Unmarshal(e.Value(), &ss); err != nil {
		return nil, fmt.Errorf("console: stored session unreadable: %w", err)
	}
	now := s.now()
	if now.Sub(ss.LastSeen) >= idle || now.Sub(ss.Created) >= lifetime {
		_ = s.kv.Delete(ctx, k)
		return nil, ErrNoSession
	}
	if now.Sub(ss.LastSeen) >= touchEvery {
		ss.LastSeen = now
		b, _ := json.Marshal(ss)
		// A lost race means another request touched it just now.
		_, _ = s.kv.Update(ctx, k, b, e.Revision())
	}
	return &ss, nil
}

// EndSession deletes the session of cookie value id.
func (s *Store) EndSession(ctx context.Context, id string) error {
	if !validSecret(id) {
		return nil
	}
	return s.kv.Delete(ctx, key("session", id))
}
