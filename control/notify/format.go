package notify

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// standardBody is the JSON body of a Standard Webhooks notification.
type standardBody struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      Data      `json:"data"`
}

// StandardBody is n's body in the standard format: {type, timestamp,
// data}.
func StandardBody(n *Notification) ([]byte, error) {
	return json.Marshal(standardBody{Type: n.Type, Timestamp: n.Time, Data: n.Data})
}

// Sign is the webhook-signature header of body sent with id at ts, under
// key (the bytes a whsec_ secret decodes to): "v1," and the base64 of
// HMAC-SHA256 over "id.timestamp.body" (Standard Webhooks).
func Sign(key []byte, id string, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(ts.Unix(), 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Slack's Block Kit limits (https://api.slack.com/reference/block-kit).
const (
	slackHeaderMax  = 150  // plain_text of a header block
	slackFieldMax   = 2000 // each text of a section's fields
	slackSectionMax = 3000 // a section's text
	slackButtonMax  = 75   // a button's text
	slackURLMax     = 3000 // a button's url
	slackTextMax    = 3000 // the fallback text we send (Slack allows more)
)

// SlackBody is n as a Block Kit message for a Slack incoming webhook:
// fallback text, a header, the facts as fields, and a button to the
// console page. Text that agents or approvers wrote is escaped so it
// cannot add links or mentions.
func SlackBody(n *Notification) ([]byte, error) {
	d := &n.Data
	title := slackTitle(n)
	fields := []map[string]any{}
	field := func(name, value string) {
		if value == "" {
			return
		}
		t := "*" + name + "*\n" + slackEscape(value)
		t, _ = cutEscaped(t, slackFieldMax)
		fields = append(fields, map[string]any{"type": "mrkdwn", "text": t})
	}
	field("Agent", d.Agent)
	field("Resource", d.Resource)
	field("Access", d.Access)
	if len(d.Tables) > 0 {
		field("Tables", strings.Join(d.Tables, ", "))
	}
	if d.SSH != "" {
		field("SSH", d.SSH)
	}
	if d.TTL != "" {
		field("Duration", d.TTL)
	}
	if d.By != "" {
		field("By", d.By)
	}
	if d.Rule != "" {
		field("Rule", d.Rule)
	}
	if len(fields) > 10 { // Slack's limit per section
		fields = fields[:10]
	}
	var body strings.Builder
	if d.Task != "" {
		body.WriteString("*Task:* " + slackEscape(d.Task))
	}
	if d.Statement != "" {
		stmt := strings.ReplaceAll(d.Statement, "```", "` ` `")
		body.WriteString("\n*Statement:*\n```" + slackEscape(stmt) + "```")
	}
	if len(d.Params) > 0 {
		body.WriteString("\n*Parameters:* " + slackEscape(strings.Join(d.Params, ", ")))
	}
	if d.Reason != "" {
		body.WriteString("\n*Reason:* " + slackEscape(d.Reason))
	}
	if d.Session != "" {
		body.WriteString("\n*Session:* " + slackEscape(d.Session))
	}
	id := cmp.Or(d.HoldID, d.RequestID, d.GrantID)
	if id != "" {
		body.WriteString("\n*Id:* " + slackEscape(id))
	}
	sectionText, _ := cutEscaped(strings.TrimPrefix(body.String(), "\n"), slackSectionMax)
	header, _ := cut(title, slackHeaderMax)
	blocks := []map[string]any{
		{"type": "header", "text": map[string]any{"type": "plain_text", "text": header, "emoji": false}},
	}
	section := map[string]any{"type": "section", "fields": fields}
	if sectionText != "" {
		section["text"] = map[string]any{"type": "mrkdwn", "text": sectionText}
	}
	if len(fields) == 0 && sectionText == "" {
		section["text"] = map[string]any{"type": "mrkdwn", "text": slackEscape(title)}
		delete(section, "fields")
	} else if len(fields) == 0 {
		delete(section, "fields")
	}
	blocks = append(blocks, section)
	if d.URL != "" && len(d.URL) <= slackURLMax {
		blocks = append(blocks, map[string]any{
			"type": "actions",
			"elements": []map[string]any{{
				"type":      "button",
				"text":      map[string]any{"type": "plain_text", "text": "Review in airlock"}, // within slackButtonMax
				"url":       d.URL,
				"action_id": "airlock_review",
				"style":     "primary",
			}},
		})
	}
	fallback := title
	if d.Task != "" {
		fallback += ": " + d.Task
	}
	fallback, _ = cutEscaped(slackEscape(fallback), slackTextMax)
	return json.Marshal(map[string]any{"text": fallback, "blocks": blocks})
}

func slackTitle(n *Notification) string {
	d := &n.Data
	switch n.Type {
	case RequestCreated:
		return fmt.Sprintf("Access request from %s for %s", d.Agent, d.Resource)
	case RequestApproved:
		return fmt.Sprintf("Request approved: %s on %s", d.Agent, d.Resource)
	case RequestDenied:
		return fmt.Sprintf("Request denied: %s on %s", d.Agent, d.Resource)
	case GrantRevoked:
		return fmt.Sprintf("Grant revoked: %s on %s", d.Agent, d.Resource)
	case GrantExpired:
		return fmt.Sprintf("Grant expired: %s on %s", d.Agent, d.Resource)
	case StatementDenied:
		return fmt.Sprintf("Statement denied: %s on %s", d.Agent, d.Resource)
	case StatementHeld:
		return fmt.Sprintf("Statement held for approval: %s on %s", d.Agent, d.Resource)
	case SessionInterrupted:
		return fmt.Sprintf("Session interrupted: %s on %s", d.Agent, d.Resource)
	}
	return n.Type
}

// slackEscape escapes the three characters Slack's mrkdwn treats as
// control characters, so text cannot form <links>, <@mentions> or
// <!here>.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// cutEscaped cuts escaped text to n bytes without splitting an escape
// (&amp; &lt; &gt;) or a character, marking a cut with "…".
func cutEscaped(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	s, _ = cut(s, n-len("…"))
	if i := strings.LastIndexByte(s, '&'); i >= 0 && i > len(s)-5 && !strings.Contains(s[i:], ";") {
		s = s[:i]
	}
	return s + "…", true
}
