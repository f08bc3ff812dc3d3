// Package cgroups reads facts about a container's cgroups (mode, usage,
// member processes) and removes them after a crash; it never configures
// limits, which is the OCI runtime's job.
package cgroups
