package recorder

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocumentedExampleVerifies checks the signed example session of
// docs/events.md with the public key the page gives, so the page keeps
// showing the format as the gateway writes it.
func TestDocumentedExampleVerifies(t *testing.T) {
	b, err := os.ReadFile("../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	key := regexp.MustCompile("public key `([A-Za-z0-9+/=]+)`").FindStringSubmatch(doc)
	if key == nil {
		t.Fatal("docs/events.md names no public key for its example")
	}
	start := strings.Index(doc, "## Examples")
	block := doc[start:]
	block = block[strings.Index(block, "```json\n")+len("```json\n"):]
	block = block[:strings.Index(block, "```")]
	var raws []json.RawMessage
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		raws = append(raws, json.RawMessage(line))
	}
	pub, err := ParsePublicKey([]byte(key[1]))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := NewKeyring(pub)
	if err != nil {
		t.Fatal(err)
	}
	if r := VerifyRaw("", raws, kr); !r.OK() || r.Events != 5 {
		t.Fatalf("the documented example does not verify: %+v", r)
	}
}
