package control

import (
	"strings"
	"testing"

	"github.com/airlockhq/airlock/config"
)

func TestClosest(t *testing.T) {
	names := []string{"demo-pg", "shop-mysql", "web-1", "build-box", "orders-db"}
	for _, c := range []struct{ in, want string }{
		{"shop-mysq", "shop-mysql"},  // a letter missing
		{"shop-sql", "shop-mysql"},   // two
		{"Shop-MySQL", "shop-mysql"}, // case
		{"demo_pg", "demo-pg"},
		{"web-2", "web-1"},
		{"buildbox", "build-box"},
		{"orders", "orders-db"}, // a suffix forgotten
		{"mysql", "shop-mysql"},
		{"billing", ""}, // nothing like it
		{"x", ""},
	} {
		if got := Closest(c.in, names); got != c.want {
			t.Errorf("Closest(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := Closest("pg", nil); got != "" {
		t.Errorf("Closest with no names = %q", got)
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"shop-mysq", "shop-mysql", 1}, {"ü", "u", 1}} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}

func TestResourcesListing(t *testing.T) {
	cfg, err := config.Parse([]byte(`
listen: { postgres: 127.0.0.1:15432, mysql: "0.0.0.0:13306", ssh: "127.0.0.1:2222", http: 127.0.0.1:2 }
identities:
  - { name: agent-1, role: agent, token_sha256: "` + tokenHash("agent-tok") + `" }
resources:
  - { name: demo-pg, protocol: postgres, address: "127.0.0.1:5432", database: app, user: postgres, auth: { type: password, password_env: X } }
  - { name: shop-mysql, protocol: mysql, address: "127.0.0.1:3306", database: app, user: root, auth: { type: password, password_env: X } }
  - { name: box, protocol: ssh, address: "127.0.0.1:22", user: deploy, auth: { type: private_key, key_file: /dev/null }, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl" }
`))
	if err != nil {
		t.Fatal(err)
	}
	rs := Resources(cfg, cfg.Identity("agent-1"), "gw.example:8080")
	if len(rs) != 3 {
		t.Fatalf("%+v", rs)
	}
	want := []struct{ name, proto, access, connect string }{
		{"demo-pg", "postgres", "read write ddl admin", `psql "host=127.0.0.1 port=15432 user=agent-1 dbname=demo-pg sslmode=require"`},
		{"shop-mysql", "mysql", "read write ddl admin", "mysql -h gw.example -P 13306 -u agent-1 -p shop-mysql"},
		{"box", "ssh", "command shell files:read files:read-write forward", "ssh -p 2222 agent-1+box@127.0.0.1"},
	}
	for i, w := range want {
		r := rs[i]
		if r.Name != w.name || r.Protocol != w.proto || strings.Join(r.Access, " ") != w.access || r.Connect != w.connect {
			t.Errorf("resource %d: %+v, want %+v", i, r, w)
		}
	}
	msg := UnknownResource(cfg, "shop-mysq")
	if !strings.Contains(msg, "did you mean shop-mysql?") || !strings.Contains(msg, "airlock resources") {
		t.Errorf("UnknownResource: %q", msg)
	}
	if msg := UnknownResource(cfg, "billing"); strings.Contains(msg, "did you mean") || !strings.Contains(msg, "airlock resources") {
		t.Errorf("UnknownResource with nothing close: %q", msg)
	}
}
