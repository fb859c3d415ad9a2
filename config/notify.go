package config

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// defaultTargetName is a notify target's name when the config gives none:
// the URL's host, made a token, and 8 hex digits of the URL's SHA-256, so
// two targets on one host differ and no secret part of the URL shows.
func defaultTargetName(raw string) string {
	host := raw
	if u, err := url.Parse(raw); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	b := []byte(host)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 40 {
		b = b[:40]
	}
	sum := sha256.Sum256([]byte(raw))
	return string(b) + "-" + hex.EncodeToString(sum[:4])
}

// DecodeWebhookSecret reads a Standard Webhooks secret: whsec_ and the
// base64 of 24 to 64 random bytes.
func DecodeWebhookSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, fmt.Errorf("does not start with whsec_")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("the part after whsec_ is not base64")
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("holds %d bytes; want 24 to 64 (e.g. whsec_$(head -c 32 /dev/urandom | base64))", len(key))
	}
	return key, nil
}

func (c *Config) validateNotify(bad func(key, format string, args ...any)) {
	if u := c.Console.PublicURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || pu.RawQuery != "" || pu.Fragment != "" {
			bad("console.public_url", "%q is not an http(s) URL without query (e.g. https://airlock.example.com)", u)
		}
	} else if len(c.Notify) > 0 {
		bad("console.public_url", "required when notify targets are set: each notification links to its page in the console")
	}
	names := map[string]bool{}
	for i := range c.Notify {
		t := &c.Notify[i]
		key := fmt.Sprintf("notify[%d]", i)
		switch {
		case t.Name == "" && t.URL == "":
			// reported as the missing url
		case !isToken(t.Name):
			bad(key+".name", "%q may hold only letters, digits, - and _", t.Name)
		case len(t.Name) > 64:
			bad(key+".name", "%q is longer than 64 characters", t.Name)
		case names[t.Name]:
			bad(key+".name", "%q is used by two targets (a URL given twice needs a name for each)", t.Name)
		}
		names[t.Name] = true
		// The URL is not quoted back: a Slack webhook URL is a secret.
		if pu, err := url.Parse(t.URL); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			bad(key+".url", "required: an http(s) URL")
		} else if pu.User != nil {
			bad(key+".url", "may not carry a user or password")
		}
		switch t.Format {
		case "standard":
			if t.SecretEnv == "" {
				bad(key+".secret_env", "required for format standard: the environment variable holding the signing secret (whsec_...)")
			} else if v := t.Secret(); v == "" {
				bad(key+".secret_env", "environment variable %s is empty or unset", t.SecretEnv)
			} else if _, err := DecodeWebhookSecret(v); err != nil {
				bad(key+".secret_env", "the secret in %s %v", t.SecretEnv, err)
			}
		case "slack":
			if t.SecretEnv != "" {
				bad(key+".secret_env", "not used with format slack: a Slack webhook's URL is its secret")
			}
		default:
			bad(key+".format", "%q is not standard or slack", t.Format)
		}
		if len(t.Events) == 0 {
			bad(key+".events", "required: any of %s", strings.Join(NotifyEvents, ", "))
		}
		seen := map[string]bool{}
		for j, e := range t.Events {
			switch {
			case !slices.Contains(NotifyEvents, e):
				bad(fmt.Sprintf("%s.events[%d]", key, j), "%q is not one of %s", e, strings.Join(NotifyEvents, ", "))
			case seen[e]:
				bad(fmt.Sprintf("%s.events[%d]", key, j), "%q is listed twice", e)
			}
			seen[e] = true
		}
		if t.Timeout < 100*time.Millisecond || t.Timeout > 2*time.Minute {
			bad(key+".timeout", "%s is out of range 100ms..2m", t.Timeout)
		}
		if t.RetryMin < 10*time.Millisecond {
			bad(key+".retry_min", "%s is shorter than 10ms", t.RetryMin)
		}
		if t.RetryMax < t.RetryMin || t.RetryMax > 6*time.Hour {
			bad(key+".retry_max", "%s must be at least retry_min (%s) and at most 6h", t.RetryMax, t.RetryMin)
		}
		if t.RetryFor < MinNotifyRetryFor || t.RetryFor > MaxNotifyRetryFor {
			bad(key+".retry_for", "%s is out of range %s..%s", t.RetryFor, MinNotifyRetryFor, MaxNotifyRetryFor)
		}
	}
}
