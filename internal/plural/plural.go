// Package plural writes counts with their noun in the right number:
// "1 event", "2 events", "0 events".
package plural

import "strconv"

// N is n and noun, with an "s" added unless n is 1: N(1, "event") is
// "1 event", N(3, "event") "3 events".
func N[I ~int | ~int64 | ~uint64 | ~uint32 | ~int32](n I, noun string) string {
	return Of(n, noun, noun+"s")
}

// Of is n with one when n is 1, else with many: Of(2, "entry", "entries").
func Of[I ~int | ~int64 | ~uint64 | ~uint32 | ~int32](n I, one, many string) string {
	s := strconv.FormatInt(int64(n), 10)
	if n == 1 {
		return s + " " + one
	}
	return s + " " + many
}
