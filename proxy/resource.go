package proxy

import "github.com/airlockhq/airlock/credential"

// ResourceOf returns the resource of the grant of agent whose verifier
// match accepts, or "" when none does (or grants cannot be read now). A
// grant is for one resource, so its token names it: a protocol whose
// client may connect without naming one (the mysql client opens a second
// connection without a database to KILL a running statement) finds it
// here, then authenticates as usual. Nothing is recorded.
func (c *Conn) ResourceOf(agent string, match func(*credential.Verifier) bool) string {
	if id := c.srv.Config.Identity(agent); id == nil || id.Role != "agent" {
		return ""
	}
	grants, err := c.srv.Grants.ForAgent(agent)
	if err != nil {
		return ""
	}
	for _, g := range grants {
		if g.Verifier != nil && match(g.Verifier) {
			return g.Resource
		}
	}
	return ""
}
