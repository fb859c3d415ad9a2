package authz

import (
	"slices"
	"sync"
)

// DecisionCache keeps recent verdicts, keyed by the exact message text,
// the grant and the session settings that change a decision. Never by a
// normalized fingerprint: literals matter (set_config('role', ...) and
// set_config('application_name', ...) share one). A hit is checked
// against every field of the grant a decision reads (ID, resource, task,
// access, state, scope), so an updated grant never gets a verdict made for
// its older version. Messages whose verdict depends on session state
// (PREPARE, EXECUTE, USE, HANDLER, ...) are not cached.
//
// It is bounded (least recently used entries go first) and safe for
// concurrent use; one cache serves every session of a gateway.
type DecisionCache struct {
	mu         sync.Mutex
	max        int
	m          map[cacheKey]*cacheEntry
	head, tail *cacheEntry // head is the most recently used
	hits, miss uint64
}

// maxCachedText is the longest message the cache keeps: long messages are
// rarely repeated and would crowd the cache's memory.
const maxCachedText = 16 << 10

// CacheKey is what a dialect's session keys a verdict by; the cache adds
// the grant's ID.
type CacheKey struct {
	// Settings names the dialect and the session settings the decision
	// read (default schema, current databases, sql_mode, server version).
	Settings string
	// Text is the message as the client sent it.
	Text string
	// Prepare is set for a message that prepares a statement (Parse,
	// COM_STMT_PREPARE) rather than runs it.
	Prepare bool
}

type cacheKey struct {
	CacheKey
	grant string
}

type cacheEntry struct {
	key        cacheKey
	g          grantSnap
	v          Verdict
	prev, next *cacheEntry
}

// grantSnap is the part of a grant a decision reads.
type grantSnap struct {
	id, resource, task string
	access             Access
	state              State
	scope              Scope
}

func snapGrant(g *Grant) grantSnap {
	if g == nil {
		return grantSnap{access: -1}
	}
	sc := g.Scope
	sc.Tables = slices.Clone(sc.Tables)
	sc.Functions = slices.Clone(sc.Functions)
	return grantSnap{id: g.ID, resource: g.Resource, task: g.Task, access: g.Access, state: g.State, scope: sc}
}

func (s *grantSnap) matches(g *Grant) bool {
	if g == nil {
		return s.access == -1
	}
	return s.id == g.ID && s.resource == g.Resource && s.task == g.Task && s.access == g.Access &&
		s.state == g.State && s.scope.AllowDrop == g.Scope.AllowDrop &&
		s.scope.AllowUnfiltered == g.Scope.AllowUnfiltered && s.scope.MaxTables == g.Scope.MaxTables &&
		s.scope.AllowFileLoad == g.Scope.AllowFileLoad && s.scope.AllowServerFiles == g.Scope.AllowServerFiles &&
		slices.Equal(s.scope.Tables, g.Scope.Tables) && slices.Equal(s.scope.Functions, g.Scope.Functions)
}

// NewDecisionCache makes a cache of at most size verdicts (4096 when size
// is not positive).
func NewDecisionCache(size int) *DecisionCache {
	if size <= 0 {
		size = 4096
	}
	return &DecisionCache{max: size, m: make(map[cacheKey]*cacheEntry, size)}
}

// Stats returns the number of hits and misses so far.
func (c *DecisionCache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.miss
}

// Len is the number of verdicts held.
func (c *DecisionCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func grantID(g *Grant) string {
	if g == nil {
		return ""
	}
	return g.ID
}

// Get returns a copy of the verdict cached for k under g.
func (c *DecisionCache) Get(k CacheKey, g *Grant) (Verdict, bool) {
	key := cacheKey{k, grantID(g)}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[key]
	if e == nil || !e.g.matches(g) {
		c.miss++
		return Verdict{}, false
	}
	c.hits++
	c.moveFront(e)
	// The caller may change its copy; the cached one stays as made.
	return Verdict{Allow: e.v.Allow, Statements: slices.Clone(e.v.Statements)}, true
}

// Put keeps v as the verdict for k under g, unless the message is too
// long to be worth keeping.
func (c *DecisionCache) Put(k CacheKey, g *Grant, v Verdict) {
	if len(k.Text) > maxCachedText {
		return
	}
	key := cacheKey{k, grantID(g)}
	v.Statements = slices.Clone(v.Statements)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[key]; e != nil {
		e.g, e.v = snapGrant(g), v
		c.moveFront(e)
		return
	}
	e := &cacheEntry{key: key, g: snapGrant(g), v: v}
	c.m[key] = e
	c.pushFront(e)
	for len(c.m) > c.max {
		old := c.tail
		c.unlink(old)
		delete(c.m, old.key)
	}
}

func (c *DecisionCache) pushFront(e *cacheEntry) {
	e.prev, e.next = nil, c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *DecisionCache) unlink(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (c *DecisionCache) moveFront(e *cacheEntry) {
	if c.head == e {
		return
	}
	c.unlink(e)
	c.pushFront(e)
}
