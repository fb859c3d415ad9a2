package recorder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// ExportFormat names the export file format; ExportVersion is its version.
// Version 2 adds the chunks of values stored outside events (event format
// v4); version 1 files are read too.
const (
	ExportFormat  = "airlock-session-export"
	ExportVersion = 2
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
	// Chunks hold the values the events store outside themselves (a long
	// statement's text, many parameters), with the headers that place
	// them; their bodies in base64 (version 2).
	Chunks []Chunk `json:"chunks,omitempty"`
}

// NewExport builds the export of session from its stored events.
func NewExport(session, stream string, raws []json.RawMessage, keys []PublicKey, now time.Time) *Export {
	return &Export{
		Format: ExportFormat, Version: ExportVersion,
		Session: session, ExportedAt: now.UTC(), Stream: stream,
		Keys: keys, Events: raws,
	}
}

// Write writes x as indented JSON with one event, and one chunk, per line.
func (x *Export) Write(w io.Writer) error {
	head := *x
	head.Events, head.Chunks = nil, nil
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
	out := bufio.NewWriter(w)
	out.Write(b[:i])
	out.WriteString(`"events": [`)
	var line bytes.Buffer
	for j, raw := range x.Events {
		if j > 0 {
			out.WriteByte(',')
		}
		out.WriteString("\n    ")
		line.Reset()
		if err := json.Compact(&line, raw); err != nil {
			return fmt.Errorf("export: event %d: %w", j, err)
		}
		out.Write(line.Bytes())
	}
	out.WriteString("\n  ]")
	if len(x.Chunks) > 0 {
		out.WriteString(",\n  \"chunks\": [")
		enc := json.NewEncoder(&line)
		for j := range x.Chunks {
			if j > 0 {
				out.WriteByte(',')
			}
			out.WriteString("\n    ")
			line.Reset()
			if err := enc.Encode(&x.Chunks[j]); err != nil {
				return fmt.Errorf("export: chunk %d: %w", j, err)
			}
			out.Write(bytes.TrimSuffix(line.Bytes(), []byte("\n")))
		}
		out.WriteString("\n  ]")
	}
	out.WriteString("\n}\n")
	return out.Flush()
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
	if x.Version < 1 || x.Version > ExportVersion {
		return nil, fmt.Errorf("export file: version %d, this airlock reads 1 to %d", x.Version, ExportVersion)
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
	return VerifyStored(x.Session, x.Events, x.Chunks, trusted), nil
}
