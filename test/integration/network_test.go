package integration

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func requireNetworking(t *testing.T) {
	t.Helper()
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/portmap", "/usr/sbin/iptables-save"} {
		if !exists(p) {
			t.Skipf("networking tests need %s (containernetworking-plugins, iptables)", p)
		}
	}
}

// loadWebImage loads "web": busybox plus /www/index.html and /data/seed.txt,
// exposing 80/tcp and 8081/tcp, with VOLUME /data and httpd as its command.
func (e *env) loadWebImage() {
	e.t.Helper()
	base := busyboxImage(e.t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct{ name, body string }{{"www/index.html", "hello from berth\n"}, {"data/seed.txt", "seeded by the image\n"}} {
		dir := filepath.Dir(f.name)
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: time.Now()})
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Now()})
		_, _ = tw.Write([]byte(f.body))
	}
	tw.Close()
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		e.t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		e.t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Cmd = []string{"httpd", "-f", "-p", "80", "-h", "/www"}
	cf.Config.WorkingDir = "/"
	cf.Config.ExposedPorts = map[string]struct{}{"80/tcp": {}, "8081/tcp": {}}
	cf.Config.Volumes = map[string]struct{}{"/data": {}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		e.t.Fatal(err)
	}
	archive := filepath.Join(e.t.TempDir(), "web.tar")
	tag, _ := name.NewTag("web:latest")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		e.t.Fatal(err)
	}
	e.must("load", "-i", archive)
	var _ v1.Image = img
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// hostAddr is a non-loopback IPv4 address of this host outside berth's
// bridges (to reach "the outside" without leaving the machine).
func hostAddr(t *testing.T) string {
	t.Helper()
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 || strings.HasPrefix(i.Name, "berth") || strings.HasPrefix(i.Name, "br-") || strings.HasPrefix(i.Name, "veth") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	t.Skip("no non-loopback IPv4 address on this host")
	return ""
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

func waitHTTP(t *testing.T, url string) string {
	t.Helper()
	var body string
	var err error
	for i := 0; i < 100; i++ {
		if body, err = httpGet(url); err == nil {
			return body
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, err)
	return ""
}

// leftovers lists what the network set-up of container id left on the
// host: iptables rules naming it or its address, leases, netns pins and
// veths on the bridge.
func (e *env) leftovers(id, ip, bridge string) []string {
	var out []string
	save, _ := exec.Command("iptables-save").Output()
	for _, line := range strings.Split(string(save), "\n") {
		if strings.Contains(line, id) || (ip != "" && strings.Contains(line, ip+"/32")) || (ip != "" && strings.Contains(line, ip+":")) {
			out = append(out, "rule: "+line)
		}
	}
	leases, _ := filepath.Glob(filepath.Join(e.stat, "cni", "networks", "*", "*"))
	for _, l := range leases {
		if data, err := os.ReadFile(l); err == nil && strings.Contains(string(data), id) {
			out = append(out, "lease: "+l)
		}
	}
	if exists(filepath.Join(e.stat, "netns", id)) {
		out = append(out, "netns pin")
	}
	if bridge != "" {
		links, _ := exec.Command("ip", "-o", "link", "show", "master", bridge).Output()
		if s := strings.TrimSpace(string(links)); s != "" {
			out = append(out, "veth: "+s)
		}
	}
	return out
}

func (e *env) inspect(ref, format string) string {
	e.t.Helper()
	return strings.TrimSpace(e.must("inspect", "--format", format, ref))
}

func TestPublishedPorts(t *testing.T) {
	requireNetworking(t)
	e := newEnv(t)
	e.loadWebImage()

	port := freeTCPPort(t)
	e.must("run", "-d", "--name", "web1", "-p", fmt.Sprintf("%d:80", port), "web")
	id := e.inspect("web1", "{{.ID}}")
	ip := strings.Split(e.inspect("web1", "{{(index .NetworkSettings.Networks 0).IPAddress}}"), "/")[0]
	if net.ParseIP(ip) == nil {
		t.Fatalf("no IP in NetworkSettings: %q", ip)
	}
	if gw := e.inspect("web1", "{{(index .NetworkSettings.Networks 0).Gateway}}"); gw != "10.88.0.1" {
		t.Errorf("gateway = %q", gw)
	}
	// From the host, on loopback (portmap's SNAT / route_localnet) and on
	// the host's own address.
	if body := waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); body != "hello from berth\n" {
		t.Fatalf("body = %q", body)
	}
	if body, err := httpGet(fmt.Sprintf("http://%s:%d/", hostAddr(t), port)); err != nil || body != "hello from berth\n" {
		t.Fatalf("via the host address: %q %v", body, err)
	}
	if out := e.must("port", "web1"); strings.TrimSpace(out) != fmt.Sprintf("80/tcp -> 0.0.0.0:%d", port) {
		t.Errorf("port = %q", out)
	}
	if out := e.must("ps", "--format", "{{.Ports}}"); !strings.Contains(out, fmt.Sprintf("0.0.0.0:%d->80/tcp", port)) {
		t.Errorf("ps PORTS = %q", out)
	}
	// The same host port twice is refused.
	if _, err := e.berth("run", "-d", "--name", "clash", "-p", fmt.Sprintf("%d:80", port), "web"); err == nil {
		t.Error("a second workload took the same host port")
	}
	e.berth("rm", "-f", "clash")

	// A bounded load through the published port: no errors.
	t.Run("load", func(t *testing.T) {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		const workers, each = 8, 250
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != 200 {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d of %d requests failed, first: %v", len(errs), workers*each, errs[0])
		}
	})

	// -P publishes every exposed port to a free host port.
	e.must("run", "-d", "--name", "web2", "-P", "web")
	out := e.must("port", "web2")
	var p80 string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, " -> ")
		_, hp, _ := net.SplitHostPort(v)
		if n, _ := strconv.Atoi(hp); n == 0 {
			t.Fatalf("port line %q", line)
		}
		if k == "80/tcp" {
			p80 = hp
		}
	}
	if len(strings.Split(strings.TrimSpace(out), "\n")) != 2 || p80 == "" {
		t.Fatalf("-P published %q", out)
	}
	if body := waitHTTP(t, "http://127.0.0.1:"+p80+"/"); body != "hello from berth\n" {
		t.Fatalf("-P body = %q", body)
	}
	if one := strings.TrimSpace(e.must("port", "web2", "80/tcp")); one != "0.0.0.0:"+p80 {
		t.Errorf("port web2 80/tcp = %q", one)
	}

	// rm releases rules, lease, namespace and veth.
	e.must("rm", "-f", "web1", "web2")
	if left := e.leftovers(id, ip, "berth0"); len(left) > 0 {
		t.Fatalf("left after rm:\n%s", strings.Join(left, "\n"))
	}
	if _, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
		t.Error("the port still answers after rm")
	}
}

func TestUserNetworkNames(t *testing.T) {
	requireNetworking(t)
	e := newEnv(t)
	e.loadWebImage()
	e.importBusybox("bb")

	e.must("network", "create", "appnet")
	t.Cleanup(func() { e.berth("network", "rm", "appnet") })
	bridge := e.inspectNetwork("appnet", "{{.Bridge}}")
	subnet := e.inspectNetwork("appnet", "{{.Subnet}}")
	if !strings.HasPrefix(subnet, "10.89.") {
		t.Errorf("subnet = %q", subnet)
	}
	e.must("run", "-d", "--name", "srv", "--network", "appnet", "--network-alias", "api", "web")
	for _, host := range []string{"srv", "api"} {
		out, err := e.berth("run", "--rm", "--network", "appnet", "bb", "timeout", "5", "wget", "-qO-", "http://"+host+"/")
		if err != nil || out != "hello from berth\n" {
			t.Fatalf("wget http://%s/ from a second container: %q %v", host, out, err)
		}
	}
	// A member that joins later is in the hosts file of the earlier one.
	e.must("run", "-d", "--name", "late", "--network", "appnet", "bb", "sleep", "300")
	lateIP := strings.Split(e.inspect("late", "{{(index .NetworkSettings.Networks 0).IPAddress}}"), "/")[0]
	if out := e.must("exec", "srv", "cat", "/etc/hosts"); !strings.Contains(out, lateIP+"\tlate") {
		t.Errorf("srv's /etc/hosts lacks late (%s):\n%s", lateIP, out)
	}
	if out, err := e.berth("exec", "late", "timeout", "5", "wget", "-qO-", "http://api/"); err != nil || out != "hello from berth\n" {
		t.Errorf("late → api: %q %v", out, err)
	}
	// --hostname, --dns, --dns-search, --add-host.
	out := e.must("run", "--rm", "--network", "appnet", "--hostname", "h1", "--dns", "192.0.2.53", "--dns-search", "example.test", "--add-host", "db.example:192.0.2.7", "bb",
		"sh", "-c", "hostname; cat /etc/resolv.conf; cat /etc/hosts")
	for _, want := range []string{"h1\n", "nameserver 192.0.2.53", "search example.test", "192.0.2.7\tdb.example", "\tsrv api "} {
		if !strings.Contains(out, want) {
			t.Errorf("run output lacks %q:\n%s", want, out)
		}
	}
	// network inspect lists the members; rm of a network in use is refused.
	if out := e.must("network", "inspect", "appnet"); !strings.Contains(out, `"srv"`) || !strings.Contains(out, `"late"`) {
		t.Errorf("network inspect:\n%s", out)
	}
	if _, err := e.berth("network", "rm", "appnet"); err == nil {
		t.Fatal("network rm of a network in use succeeded")
	}
	// disconnect / connect a running workload.
	e.must("network", "disconnect", "appnet", "late")
	if out, _ := e.berth("exec", "late", "ip", "-o", "-4", "addr"); strings.Contains(out, "eth0") {
		t.Errorf("eth0 still there after disconnect: %s", out)
	}
	e.must("network", "connect", "--alias", "lately", "appnet", "late")
	if out, err := e.berth("exec", "srv", "timeout", "5", "wget", "-qO-", "http://srv/"); err != nil || out != "hello from berth\n" {
		t.Errorf("srv → itself: %q %v", out, err)
	}
	if out := e.must("exec", "srv", "cat", "/etc/hosts"); !strings.Contains(out, "lately") {
		t.Errorf("srv's /etc/hosts lacks the connected alias:\n%s", out)
	}
	srvID := e.inspect("srv", "{{.ID}}")
	e.must("rm", "-f", "srv", "late")
	if left := e.leftovers(srvID, "", bridge); len(left) > 0 {
		t.Fatalf("left after rm:\n%s", strings.Join(left, "\n"))
	}
	e.must("network", "rm", "appnet")
	if out, err := exec.Command("ip", "link", "show", bridge).CombinedOutput(); err == nil {
		t.Errorf("bridge %s still exists: %s", bridge, out)
	}
	if out := e.must("network", "ls", "--format", "{{.Name}}"); strings.Contains(out, "appnet") {
		t.Errorf("network ls after rm: %s", out)
	}
}

func (e *env) inspectNetwork(ref, format string) string {
	e.t.Helper()
	return strings.TrimSpace(e.must("network", "inspect", "--format", format, ref))
}

func TestInternalNetwork(t *testing.T) {
	requireNetworking(t)
	e := newEnv(t)
	e.importBusybox("bb")
	// Something to reach on the host's own address, outside every subnet.
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "outside\n") })}
	go srv.Serve(l)
	defer srv.Close()
	url := fmt.Sprintf("http://%s:%d/", hostAddr(t), l.Addr().(*net.TCPAddr).Port)

	// From the default bridge the host is reachable (positive control)…
	if out, err := e.berth("run", "--rm", "bb", "timeout", "5", "wget", "-qO-", url); err != nil || out != "outside\n" {
		t.Fatalf("default network → host: %q %v", out, err)
	}
	// …from an internal network it is not, and there is no default route.
	e.must("network", "create", "--internal", "--subnet", "10.99.7.0/24", "sealed")
	t.Cleanup(func() { e.berth("network", "rm", "sealed") })
	routes := e.must("run", "--rm", "--network", "sealed", "bb", "ip", "route")
	if strings.Contains(routes, "default") || !strings.Contains(routes, "10.99.7.0/24") {
		t.Fatalf("routes on an internal network:\n%s", routes)
	}
	if out, err := e.berth("run", "--rm", "--network", "sealed", "bb", "timeout", "3", "wget", "-qO-", url); err == nil || !strings.Contains(stderrOf(err)+out, "unreachable") {
		t.Fatalf("internal network → host: %q %v (want: network unreachable)", out, err)
	}
	if save, _ := exec.Command("iptables-save", "-t", "nat").Output(); strings.Contains(string(save), "10.99.7.") {
		t.Errorf("NAT rules for an internal network:\n%s", save)
	}
}

func TestNetworkModes(t *testing.T) {
	requireNetworking(t)
	e := newEnv(t)
	e.importBusybox("bb")
	if out := e.must("run", "--rm", "--network", "none", "bb", "ip", "-o", "link"); strings.Contains(out, "eth0") || !strings.Contains(out, "lo") {
		t.Errorf("--network none links:\n%s", out)
	}
	hostLinks, _ := exec.Command("ip", "-o", "link").Output()
	first := strings.Fields(string(hostLinks))
	if len(first) > 1 {
		name := strings.TrimSuffix(strings.Split(first[1], "@")[0], ":")
		if out := e.must("run", "--rm", "--network", "host", "bb", "ip", "-o", "link"); !strings.Contains(out, name) || strings.Count(out, "\n") != strings.Count(string(hostLinks), "\n") {
			t.Errorf("--network host sees:\n%s\nhost has:\n%s", out, hostLinks)
		}
	}
	if _, err := e.berth("run", "--rm", "--network", "none", "-p", "80", "bb", "true"); err == nil {
		t.Error("-p with --network none was accepted")
	}
	if _, err := e.berth("run", "--rm", "--network", "nosuchnet", "bb", "true"); err == nil {
		t.Error("an unknown network was accepted")
	}
}

// TestNetworkAfterSigkill kills the monitor and the workload with SIGKILL
// and drops the record behind berth's back: system prune still releases the
// attachment (CNI DEL from libcni's cache), the namespace pin and the lease.
func TestNetworkAfterSigkill(t *testing.T) {
	requireNetworking(t)
	e := newEnv(t)
	e.loadWebImage()
	port := freeTCPPort(t)
	e.must("run", "-d", "--name", "victim", "-p", fmt.Sprintf("%d:80", port), "web")
	id := e.inspect("victim", "{{.ID}}")
	ip := strings.Split(e.inspect("victim", "{{(index .NetworkSettings.Networks 0).IPAddress}}"), "/")[0]
	mpid, _ := strconv.Atoi(e.inspect("victim", "{{.State.MonitorPid}}"))
	pid, _ := strconv.Atoi(e.inspect("victim", "{{.State.Pid}}"))
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	syscall.Kill(mpid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "the workload to die", func() bool { return syscall.Kill(pid, 0) != nil })
	if left := e.leftovers(id, ip, ""); len(left) == 0 {
		t.Fatal("nothing to reconcile: the test proves nothing")
	}
	if err := os.Remove(e.root + "/berth.db"); err != nil {
		t.Fatal(err)
	}
	e.must("system", "prune")
	if left := e.leftovers(id, ip, "berth0"); len(left) > 0 {
		t.Fatalf("left after system prune:\n%s", strings.Join(left, "\n"))
	}
}
