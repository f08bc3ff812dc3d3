// Package progress renders transfer progress for pulls and pushes: one live
// line per item plus a total on a terminal, one plain line per finished item
// otherwise.
package progress
