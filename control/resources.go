package control

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/airlockhq/airlock/config"
)

// Resource is one resource as GET /v1/resources and airlock resources
// describe it: what a request may name and ask for, and how to connect
// once a grant is approved. It says nothing of the upstream (address,
// user, credentials): the agent never needs them.
type Resource struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"` // postgres, mysql or ssh
	// Access is what a request for the resource can ask for. A database:
	// the access levels read, write, ddl and admin (--access), each
	// including the ones before it. SSH: what an SSH grant can allow,
	// "command" (--command PATTERN), "shell" (--shell), "files:read" and
	// "files:read-write" (--files) and "forward" (--forward HOST:PORT);
	// an SSH grant allows nothing it does not name.
	Access []string `json:"access"`
	// Request is an airlock request command line for the resource.
	Request string `json:"request"`
	// Connect is how a client reaches the resource through this gateway
	// once a grant is approved (the token is the password); empty when
	// the gateway has no listener for the protocol.
	Connect string `json:"connect,omitempty"`
	// Address is the listener's host:port as in Connect, for programs
	// (airlock mcp connects there); empty when Connect is.
	Address string `json:"address,omitempty"`
}

// Access levels a database request can ask for, lowest first.
var dbAccess = []string{"read", "write", "ddl", "admin"}

// What an SSH grant can allow.
var sshAccess = []string{"command", "shell", "files:read", "files:read-write", "forward"}

// Resources describes the gateway's resources for who: every identity
// sees every resource (any agent may ask for any; approvers decide).
// host is the gateway's host name as the caller reached it, used in the
// connect lines when a listener binds every address.
func Resources(cfg *config.Config, who *config.Identity, host string) []Resource {
	agent := "AGENT"
	if who != nil && who.Role == config.RoleAgent {
		agent = who.Name
	}
	out := make([]Resource, 0, len(cfg.Resources))
	for _, r := range cfg.Resources {
		x := Resource{Name: r.Name, Protocol: r.Protocol}
		switch r.Protocol {
		case "ssh":
			x.Access = sshAccess
			x.Request = fmt.Sprintf(`airlock request --resource %s --task "..." --command "uname -a"`, r.Name)
			if h, p, ok := listenAt(cfg.Listen.SSH, host); ok {
				x.Address = net.JoinHostPort(h, p)
				x.Connect = fmt.Sprintf("ssh -p %s %s+%s@%s", p, agent, r.Name, h)
			}
		case "mysql":
			x.Access = dbAccess
			x.Request = fmt.Sprintf(`airlock request --resource %s --task "..." --access read`, r.Name)
			if h, p, ok := listenAt(cfg.Listen.MySQL, host); ok {
				x.Address = net.JoinHostPort(h, p)
				x.Connect = fmt.Sprintf("mysql -h %s -P %s -u %s -p %s", h, p, agent, r.Name)
			}
		default:
			x.Access = dbAccess
			x.Request = fmt.Sprintf(`airlock request --resource %s --task "..." --access read`, r.Name)
			if h, p, ok := listenAt(cfg.Listen.Postgres, host); ok {
				x.Address = net.JoinHostPort(h, p)
				x.Connect = fmt.Sprintf(`psql "host=%s port=%s user=%s dbname=%s sslmode=require"`, h, p, agent, r.Name)
			}
		}
		out = append(out, x)
	}
	return out
}

// listenAt is the host and port a client reaches the listener addr at:
// its own host, unless it binds every address, then the host the caller
// reached the HTTP API at.
func listenAt(addr, reached string) (host, port string, ok bool) {
	if addr == "" {
		return "", "", false
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", false
	}
	if ip := net.ParseIP(h); h == "" || ip != nil && ip.IsUnspecified() {
		h = reached
		if rh, _, err := net.SplitHostPort(reached); err == nil {
			h = rh
		}
		if h == "" {
			h = "GATEWAY"
		}
	}
	return h, p, true
}

func (a *API) resources(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	writeJSON(w, http.StatusOK, Resources(a.Service.Config, who, r.Host))
}

// UnknownResource is the refusal of a request naming no resource of cfg:
// the closest name, if one is close, and where the names are listed.
func UnknownResource(cfg *config.Config, name string) string {
	names := make([]string, len(cfg.Resources))
	for i, r := range cfg.Resources {
		names[i] = r.Name
	}
	msg := fmt.Sprintf("unknown resource %q", name)
	if c := Closest(name, names); c != "" {
		msg += fmt.Sprintf(": did you mean %s?", c)
	}
	return msg + " (airlock resources lists the resources you may request)"
}

// Closest is the name in names nearest to s by edit distance (Levenshtein,
// case ignored), or "" when none is near enough to be a likely typo: at
// most a third of the longer name's length, and at least 1 edit allowed
// ("pg" for "pq"). A name that contains s or is contained in it (a prefix
// typed, a suffix forgotten) counts as near.
func Closest(s string, names []string) string {
	ls := strings.ToLower(s)
	best, bestD := "", -1
	for _, n := range names {
		ln := strings.ToLower(n)
		d := editDistance(ls, ln)
		limit := max(len(ls), len(ln)) / 3
		if limit < 1 {
			limit = 1
		}
		if d > limit && !(len(ls) >= 3 && (strings.Contains(ln, ls) || strings.Contains(ls, ln))) {
			continue
		}
		if bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
