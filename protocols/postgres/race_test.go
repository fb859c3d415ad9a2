//go:build race

package postgres

// raceEnabled: the race detector makes a few more values escape to the
// heap, so allocation ceilings are a little higher under it.
const raceEnabled = true
