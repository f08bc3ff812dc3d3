// Package oci implements runtime.Runtime over an OCI runtime binary (runc
// or crun), driven through its command line like containerd's go-runc.
package oci
