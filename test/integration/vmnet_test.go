package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MicroVMs on berth's networks. Names do not resolve inside a VM yet: the
// guest sees /etc/hosts only once bind mounts reach VMs, so these tests
// address peers by IP.

// hostListener serves "outside\n" on all of the host's addresses and
// returns a URL for it on the host's own (non-bridge) address.
func hostListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "outside\n") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return fmt.Sprintf("http://%s:%d/", hostAddr(t), l.Addr().(*net.TCPAddr).Port)
}

// ipOf is the address part of an endpoint's CIDR.
func ipOf(cidr string) string { return strings.Split(cidr, "/")[0] }

// TestVMNetPublishedPort runs busybox httpd in a microVM on the default
// network with -p: the host reaches it through the published port, the
// guest holds the namespace's MAC and address and reaches the outside. Then
// the monitor and QEMU are killed with SIGKILL and rm -f still leaves
// nothing: no netns pin, veth, tap, rule or lease.
func TestVMNetPublishedPort(t *testing.T) {
	requireNetworking(t)
	e := vmEnv(t)
	e.loadWebImage()
	port := freeTCPPort(t)
	e.must("run", "-d", "--vm", "--name", "vweb", "-p", fmt.Sprintf("%d:80", port), "web")
	id := e.inspect("vweb", "{{.ID}}")
	cidr := e.inspect("vweb", "{{(index .NetworkSettings.Networks 0).IPAddress}}")
	mac := e.inspect("vweb", "{{(index .NetworkSettings.Networks 0).MAC}}")
	if !strings.HasPrefix(cidr, "10.88.") || mac == "" {
		t.Fatalf("a VM on the default network got %q, MAC %q", cidr, mac)
	}
	if body := waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); body != "hello from berth\n" {
		t.Fatalf("published port: body %q", body)
	}
	if body, err := httpGet(fmt.Sprintf("http://%s:%d/", hostAddr(t), port)); err != nil || body != "hello from berth\n" {
		t.Fatalf("published port on the host address: %q %v", body, err)
	}
	out := e.must("exec", "vweb", "sh", "-c", "uname -r; ip -o link show eth0; ip -o -4 addr show eth0; ip route")
	for _, want := range []string{"link/ether " + mac, "inet " + cidr, "default via 10.88.0.1 dev eth0"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest network lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, hostKernel()) {
		t.Fatalf("exec ran on the host's kernel, not in a VM:\n%s", out)
	}
	// Out through the bridge's NAT to the host's own address.
	if got, err := e.berth("exec", "vweb", "timeout", "5", "wget", "-qO-", hostListener(t)); err != nil || got != "outside\n" {
		t.Errorf("VM → host address: %q %v", got, err)
	}

	mpid, _ := strconv.Atoi(e.inspect("vweb", "{{.State.MonitorPid}}"))
	qpid, _ := strconv.Atoi(e.inspect("vweb", "{{.State.Pid}}"))
	if mpid == 0 || qpid == 0 {
		t.Fatalf("monitor %d, QEMU %d", mpid, qpid)
	}
	syscall.Kill(mpid, syscall.SIGKILL)
	syscall.Kill(qpid, syscall.SIGKILL)
	waitFor(t, "QEMU to die", func() bool { return syscall.Kill(qpid, 0) != nil })
	if left := e.leftovers(id, ipOf(cidr), ""); len(left) == 0 {
		t.Fatal("nothing left to release after SIGKILL: the test proves nothing")
	}
	e.must("rm", "-f", "vweb")
	if left := e.leftovers(id, ipOf(cidr), "berth0"); len(left) > 0 {
		t.Fatalf("left after rm -f:\n%s", strings.Join(left, "\n"))
	}
	if links, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(links), "tap0_") {
		t.Errorf("a tap is in the host's namespace:\n%s", links)
	}
	if _, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
		t.Error("the port still answers after rm -f")
	}
	e.checkNoVMLeftovers()
}

// TestVMNetUserNetwork puts a container and a microVM on one user network:
// each reaches the other's web server by IP. The VM is on the default
// network too: its second NIC gets eth1 and both default routes, as a
// container's namespace has them. A running VM's networks cannot change
// (no NIC hot-plug); rm -f releases its attachments.
func TestVMNetUserNetwork(t *testing.T) {
	requireNetworking(t)
	e := vmEnv(t)
	e.loadWebImage()
	e.must("network", "create", "vmapp")
	t.Cleanup(func() { e.berth("network", "rm", "vmapp") })
	bridge := e.inspectNetwork("vmapp", "{{.Bridge}}")
	e.must("run", "-d", "--name", "ctr", "--network", "vmapp", "web")
	e.must("run", "-d", "--vm", "--name", "vm", "--network", "vmapp", "--network", "berth", "web")
	ctrIP := ipOf(e.inspect("ctr", "{{(index .NetworkSettings.Networks 0).IPAddress}}"))
	vmIP := ipOf(e.inspect("vm", "{{(index .NetworkSettings.Networks 0).IPAddress}}"))
	vmID := e.inspect("vm", "{{.ID}}")
	if ctrIP == vmIP || !strings.HasPrefix(vmIP, "10.89.") {
		t.Fatalf("container %s, VM %s", ctrIP, vmIP)
	}
	if out, err := e.berth("exec", "vm", "timeout", "5", "wget", "-qO-", "http://"+ctrIP+"/"); err != nil || out != "hello from berth\n" {
		t.Errorf("VM → container %s: %q %v", ctrIP, out, err)
	}
	if out, err := e.berth("exec", "ctr", "timeout", "5", "wget", "-qO-", "http://"+vmIP+"/"); err != nil || out != "hello from berth\n" {
		t.Errorf("container → VM %s: %q %v", vmIP, out, err)
	}
	// By name, both ways; a container that joins after the VM booted is
	// found by its name and alias too: the VM's /etc/hosts is the engine's
	// managed file, shared live.
	e.must("run", "-d", "--name", "late", "--network", "vmapp", "--network-alias", "web2", "web")
	for _, c := range [][2]string{{"vm", "ctr"}, {"ctr", "vm"}, {"vm", "late"}, {"vm", "web2"}} {
		var out string
		var err error
		for i := 0; i < 20; i++ {
			if out, err = e.berth("exec", c[0], "timeout", "5", "wget", "-qO-", "http://"+c[1]+"/"); err == nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil || out != "hello from berth\n" {
			hosts, _ := e.berth("exec", c[0], "cat", "/etc/hosts")
			t.Errorf("%s → %s by name: %q %v\n/etc/hosts:\n%s", c[0], c[1], out, err, hosts)
		}
	}
	e.must("rm", "-f", "late")
	out := e.must("exec", "vm", "sh", "-c", "ip -o -4 addr; ip route; ping -c 1 -W 5 10.88.0.1 >/dev/null && echo eth1-ok")
	eth1 := e.inspect("vm", "{{(index .NetworkSettings.Networks 1).IPAddress}}")
	gw0 := e.inspect("vm", "{{(index .NetworkSettings.Networks 0).Gateway}}")
	for _, want := range []string{"eth0    inet " + vmIP + "/", "eth1    inet " + eth1, "default via " + gw0 + " dev eth0", "default via 10.88.0.1 dev eth1", "eth1-ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest on two networks lacks %q:\n%s", want, out)
		}
	}
	if _, err := e.berth("network", "disconnect", "vmapp", "vm"); err == nil || !strings.Contains(stderrOf(err), "stop it first") {
		t.Errorf("network disconnect of a running VM: %v", err)
	}
	e.must("rm", "-f", "vm")
	if left := e.leftovers(vmID, vmIP, ""); len(left) > 0 {
		t.Fatalf("left after rm -f:\n%s", strings.Join(left, "\n"))
	}
	if links, _ := exec.Command("ip", "-o", "link", "show", "master", bridge).Output(); strings.Count(string(links), "\n") != 1 {
		t.Errorf("want only the container's veth on %s:\n%s", bridge, links)
	}
	e.must("rm", "-f", "ctr")
}

// TestVMNetModes: --network none gives a VM only lo; --network host is
// refused with a hint, before anything boots.
func TestVMNetModes(t *testing.T) {
	requireNetworking(t)
	e := vmEnv(t)
	_, err := e.berth("run", "--rm", "--vm", "--network", "host", "bb", "true")
	if exitCode(err) != 125 || !strings.Contains(stderrOf(err), "host's network") || !strings.Contains(stderrOf(err), "-p") {
		t.Fatalf("--vm --network host: exit %d, %v", exitCode(err), err)
	}
	out := e.must("run", "--rm", "--vm", "--network", "none", "bb", "sh", "-c", "ip -o link; echo ROUTES; ip route")
	links, routes, _ := strings.Cut(out, "ROUTES\n")
	if n := strings.Count(links, "\n"); n != 1 || !strings.Contains(links, "lo:") || strings.TrimSpace(routes) != "" {
		t.Fatalf("--vm --network none: want lo only and no routes:\n%s", out)
	}
}

// TestVMNetInternal: on an --internal network a VM has its subnet but no
// default route, so the host's address is unreachable.
func TestVMNetInternal(t *testing.T) {
	requireNetworking(t)
	e := vmEnv(t)
	url := hostListener(t)
	e.must("network", "create", "--internal", "--subnet", "10.99.8.0/24", "vmsealed")
	t.Cleanup(func() { e.berth("network", "rm", "vmsealed") })
	out, err := e.berth("run", "--rm", "--vm", "--network", "vmsealed", "bb", "sh", "-c",
		"ip -o -4 addr show eth0; ip route; timeout 3 wget -qO- "+url+" && echo REACHED")
	if strings.Contains(out, "REACHED") || strings.Contains(out, "default") || !strings.Contains(out, "inet 10.99.8.") || !strings.Contains(out, "10.99.8.0/24 dev eth0") {
		t.Fatalf("VM on an internal network:\n%s\n%v", out, err)
	}
	if !strings.Contains(stderrOf(err), "unreachable") {
		t.Errorf("wget from an internal network: %v (want: network unreachable)", err)
	}
}

// hostKernel is the host's kernel release.
func hostKernel() string {
	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	var b []byte
	for _, c := range uts.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}
