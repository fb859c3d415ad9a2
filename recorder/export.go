package recorder

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// ExportFormat names the export file format; ExportVersion is its version.
const (
	ExportFormat  = "airlock-session-export"
	ExportVersion = 1
)

// Export is a self-contained copy of one session: its events exactly as
// stored in the stream, and the public key(s) the gateway published, so
// that `airlock sessions verify --file` can check it offline. The keys in
// a file prove nothing by themselves (whoever forges events can put their
// own key beside them): compare the fingerprint with the gateway's
// published one, or pin it with verify --key.
type Export struct {
	Format     string      `json:"format"`
	Version    int         `json:"version"`
	Session    string      `json:"session"`
	ExportedAt time.Time   `json:"exported_at"`
	Stream     string      `json:"stream,omitempty"`
	Keys       []PublicKey `json:"keys"`
	// Events are the stored message bodies in seq order, each the
	// canonical encoding of its event with hash and sig (docs/events.md).
	Events []json.RawMessage `json:"events"`
}

// NewExport builds the export of session from its stored events.
func NewExport(session, stream string, raws []json.RawMessage, keys []PublicKey, now time.Time) *Export {
	return &Export{
		Format: ExportFormat, Version: ExportVersion,
		Session: session, ExportedAt: now.UTC(), Stream: stream,
		Keys: keys, Events: raws,
	}
}

// Write writes x as indented JSON with one event per line.
func (x *Export) Write(w io.Writer) error {
	head := *x
	head.Events = nil
	b, err := json.MarshalIndent(&head, "", "  ")
	if err != nil {
		return err
	}
	// Replace the empty "events": null member with the events, one a line,
	// each compacted so the line is the stored message body.
	i := bytes.LastIndex(b, []byte(`"events": null`))
	if i < 0 {
		return errors.New("export: encoding lost its events member")
	}
	var out bytes.Buffer
	out.Write(b[:i])
	out.WriteString(`"events": [`)
	for j, raw := range x.Events {
		if j > 0 {
			out.WriteByte(',')
		}
		out.WriteString("\n    ")
		if err := json.Compact(&out, raw); err != nil {
			return fmt.Errorf("export: event %d: %w", j, err)
		}
	}
	out.WriteString("\n  ]\n}\n")
	_, err = w.Write(out.Bytes())
	return err
}

// ReadExport reads an export file.
func ReadExport(r io.Reader) (*Export, error) {
	var x Export
	dec := json.NewDecoder(io.LimitReader(r, 1<<30))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&x); err != nil {
		return nil, fmt.Errorf("export file: %w", err)
	}
	if x.Format != ExportFormat {
		return nil, fmt.Errorf("export file: format %q, want %q", x.Format, ExportFormat)
	}
	if x.Version != ExportVersion {
		return nil, fmt.Errorf("export file: version %d, this airlock reads %d", x.Version, ExportVersion)
	}
	return &x, nil
}

// FileKeys is the keyring of the keys in the file.
func (x *Export) FileKeys() (Keyring, error) { return NewKeyring(x.Keys...) }

// Verify checks the file's events against trusted; nil trusts the keys in
// the file itself.
func (x *Export) Verify(trusted Keyring) (Report, error) {
	if trusted == nil {
		kr, err := x.FileKeys()
		if err != nil {
			return Report{}, fmt.Errorf("export file: %w", err)
		}
		trusted = kr
	}
	return VerifyRaw(x.Session, x.Events, trusted), nil
}
