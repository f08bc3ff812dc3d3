// Package spec generates OCI runtime specs (config.json) from composable
// option funcs, starting from Docker's defaults.
package spec
