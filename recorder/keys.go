package recorder

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KeyAlgorithm is the only signature algorithm of format v2.
const KeyAlgorithm = "ed25519"

// Default file names of a signing key generated in the data directory.
const (
	SigningKeyFile       = "signing.key" // PKCS#8 PEM, mode 0600
	SigningPublicKeyFile = "signing.pub" // OpenSSH authorized_keys line
)

// Signer holds the gateway's ed25519 private key.
type Signer struct {
	priv ed25519.PrivateKey
	pub  PublicKey
}

// PublicKey is a gateway's public key as published on GET /v1/keys, in
// export files and in the gateway's start log.
type PublicKey struct {
	Algorithm string `json:"algorithm"`
	// Key is the raw 32-byte ed25519 public key, base64 (standard, padded).
	Key string `json:"public_key"`
	// Fingerprint is the OpenSSH SHA256 fingerprint of the key, the value
	// of the key field of signed events ("SHA256:..."); ssh-keygen -lf on
	// the SSH form prints the same.
	Fingerprint string `json:"fingerprint"`
	// SSH is the key as an OpenSSH authorized_keys line.
	SSH string `json:"ssh"`
}

// NewSigner wraps an ed25519 private key.
func NewSigner(priv ed25519.PrivateKey) *Signer {
	return &Signer{priv: priv, pub: publicKeyOf(priv.Public().(ed25519.PublicKey))}
}

// GenerateSigner returns a signer with a new random key.
func GenerateSigner() (*Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return NewSigner(priv), nil
}

// Public is the signer's public key.
func (s *Signer) Public() PublicKey { return s.pub }

// Fingerprint is the signer's key fingerprint.
func (s *Signer) Fingerprint() string { return s.pub.Fingerprint }

// sign signs an event hash; see signedMessage.
func (s *Signer) sign(sum *[sha256.Size]byte) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(s.priv, signedMessage(sum)))
}

// signDomain prefixes every signed message, so that an event signature can
// never be passed off as a signature over anything else the key signs.
const signDomain = "airlock event v2\n"

// signedMessage is what a signature covers: signDomain followed by the 32
// bytes of the event's SHA-256 (not its hex).
func signedMessage(sum *[sha256.Size]byte) []byte {
	m := make([]byte, 0, len(signDomain)+sha256.Size)
	return append(append(m, signDomain...), sum[:]...)
}

func publicKeyOf(pub ed25519.PublicKey) PublicKey {
	blob := sshBlob(pub)
	sum := sha256.Sum256(blob)
	return PublicKey{
		Algorithm:   KeyAlgorithm,
		Key:         base64.StdEncoding.EncodeToString(pub),
		Fingerprint: "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:]),
		SSH:         "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob) + " airlock-gateway",
	}
}

// sshBlob is the OpenSSH wire encoding of an ed25519 public key, which
// its SHA256 fingerprint hashes.
func sshBlob(pub ed25519.PublicKey) []byte {
	const name = "ssh-ed25519"
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(pub)))
	return append(b, pub...)
}

// Ed25519 decodes the key.
func (k PublicKey) Ed25519() (ed25519.PublicKey, error) {
	if k.Algorithm != "" && k.Algorithm != KeyAlgorithm {
		return nil, fmt.Errorf("key %s: algorithm %q, want %s", k.Fingerprint, k.Algorithm, KeyAlgorithm)
	}
	b, err := base64.StdEncoding.DecodeString(k.Key)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key %s: public_key is not a base64 ed25519 key", k.Fingerprint)
	}
	pub := ed25519.PublicKey(b)
	if fp := publicKeyOf(pub).Fingerprint; k.Fingerprint != "" && fp != k.Fingerprint {
		return nil, fmt.Errorf("key: fingerprint %s does not match its public key (%s)", k.Fingerprint, fp)
	}
	return pub, nil
}

// ParsePublicKey reads a public key in any of the forms airlock prints: an
// OpenSSH line ("ssh-ed25519 AAAA... comment"), a PEM "PUBLIC KEY" block,
// or the base64 of the raw 32 bytes.
func ParsePublicKey(text []byte) (PublicKey, error) {
	s := strings.TrimSpace(string(text))
	if blk, _ := pem.Decode([]byte(s)); blk != nil {
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return PublicKey{}, fmt.Errorf("public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return PublicKey{}, fmt.Errorf("public key: %T, want ed25519", k)
		}
		return publicKeyOf(pub), nil
	}
	if rest, ok := strings.CutPrefix(s, "ssh-ed25519 "); ok {
		f := strings.Fields(rest)
		blob, err := base64.StdEncoding.DecodeString(f[0])
		if err != nil {
			return PublicKey{}, fmt.Errorf("public key: ssh-ed25519: %w", err)
		}
		want := sshBlob(make(ed25519.PublicKey, ed25519.PublicKeySize))
		if len(blob) != len(want) || !bytes.Equal(blob[:len(want)-ed25519.PublicKeySize], want[:len(want)-ed25519.PublicKeySize]) {
			return PublicKey{}, errors.New("public key: malformed ssh-ed25519 key")
		}
		return publicKeyOf(ed25519.PublicKey(blob[len(blob)-ed25519.PublicKeySize:])), nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return PublicKey{}, errors.New("public key: want an ssh-ed25519 line, a PEM PUBLIC KEY or base64 of 32 bytes")
	}
	return publicKeyOf(ed25519.PublicKey(b)), nil
}

// LoadSigningKey reads the gateway's signing key. With path empty the key
// is dataDir/signing.key, generated on first use (with signing.pub beside
// it); a configured path must exist, since generating a key where the
// operator pointed at a missing one would silently change the gateway's
// identity. created reports a newly generated key.
//
// The file is a PKCS#8 PEM ed25519 private key, as written by
// `openssl genpkey -algorithm ed25519`.
func LoadSigningKey(path, dataDir string) (s *Signer, created bool, err error) {
	configured := path != ""
	if !configured {
		path = filepath.Join(dataDir, SigningKeyFile)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !configured {
		s, err := generateKeyFile(path)
		return s, err == nil, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("signing key: %w", err)
	}
	s, err = parsePrivateKey(b)
	if err != nil {
		return nil, false, fmt.Errorf("signing key %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("signing key %s: mode %o lets other users read it; chmod 600 it", path, fi.Mode().Perm())
	}
	return s, false, nil
}

func parsePrivateKey(b []byte) (*Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block (want a PKCS#8 PEM ed25519 key: openssl genpkey -algorithm ed25519)")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("PKCS#8: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%T key, want ed25519", k)
	}
	return NewSigner(priv), nil
}

// generateKeyFile writes a new key to path (0600) and its public half to
// signing.pub beside it. The key is written to a temporary name and linked
// into place, so two gateways starting on one data dir cannot both win.
func generateKeyFile(path string) (*Signer, error) {
	s, err := GenerateSigner()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(s.priv)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			s, _, err := LoadSigningKey(path, "")
			return s, err
		}
		return nil, fmt.Errorf("signing key: %w", err)
	}
	pubPath := filepath.Join(filepath.Dir(path), SigningPublicKeyFile)
	if err := os.WriteFile(pubPath, []byte(s.pub.SSH+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("signing key: public half: %w", err)
	}
	return s, nil
}

// Keyring is the set of public keys a verification trusts, by fingerprint.
type Keyring map[string]ed25519.PublicKey

// NewKeyring trusts keys.
func NewKeyring(keys ...PublicKey) (Keyring, error) {
	kr := Keyring{}
	for _, k := range keys {
		if err := kr.Add(k); err != nil {
			return nil, err
		}
	}
	return kr, nil
}

// Add trusts k.
func (kr Keyring) Add(k PublicKey) error {
	pub, err := k.Ed25519()
	if err != nil {
		return err
	}
	kr[publicKeyOf(pub).Fingerprint] = pub
	return nil
}

// Fingerprints lists the trusted keys.
func (kr Keyring) Fingerprints() []string {
	out := make([]string, 0, len(kr))
	for fp := range kr {
		out = append(out, fp)
	}
	return out
}
