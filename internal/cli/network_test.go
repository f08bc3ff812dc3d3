package cli

import (
	"reflect"
	"testing"

	"github.com/berthdev/berth/internal/engine"
	"github.com/berthdev/berth/internal/errdefs"
)

func TestParsePublish(t *testing.T) {
	pb := func(ip string, host, ctr uint16, proto string) engine.PortBinding {
		return engine.PortBinding{HostIP: ip, HostPort: host, ContainerPort: ctr, Protocol: proto}
	}
	for _, tc := range []struct {
		in   string
		want []engine.PortBinding
	}{
		{"80", []engine.PortBinding{pb("", 0, 80, "tcp")}},
		{"8080:80", []engine.PortBinding{pb("", 8080, 80, "tcp")}},
		{"8080:80/udp", []engine.PortBinding{pb("", 8080, 80, "udp")}},
		{"127.0.0.1:8080:80/TCP", []engine.PortBinding{pb("127.0.0.1", 8080, 80, "tcp")}},
		{"127.0.0.1::80", []engine.PortBinding{pb("127.0.0.1", 0, 80, "tcp")}},
		{"[::1]:8080:80", []engine.PortBinding{pb("::1", 8080, 80, "tcp")}},
		{"8000-8001:80-81", []engine.PortBinding{pb("", 8000, 80, "tcp"), pb("", 8001, 81, "tcp")}},
	} {
		got, err := parsePublish(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parsePublish(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "0", "x:80", "80/sctp", "1.2.3.4:5:6:7", "nothost:8080:80", "8000-8002:80-81", "70000:80", "[::1:80:80", "81-80"} {
		if _, err := parsePublish(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("parsePublish(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestParseVolume(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want engine.MountSpec
	}{
		{"/data", engine.MountSpec{Type: "volume", Target: "/data"}},
		{"/data:ro", engine.MountSpec{Type: "volume", Target: "/data", ReadOnly: true}},
		{"vol:/data", engine.MountSpec{Type: "volume", Source: "vol", Target: "/data"}},
		{"vol:/data:ro,nocopy", engine.MountSpec{Type: "volume", Source: "vol", Target: "/data", ReadOnly: true, NoCopy: true}},
		{"/srv/www:/www:rw,z", engine.MountSpec{Type: "bind", Source: "/srv/www", Target: "/www", CreateHostPath: true}},
		{"/srv:/srv:ro,rshared", engine.MountSpec{Type: "bind", Source: "/srv", Target: "/srv", ReadOnly: true, CreateHostPath: true, Options: []string{"rshared"}}},
	} {
		got, err := parseVolume(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseVolume(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"data", "vol:data", "./rel:/x", "~/x:/x", "a:/b:c:d", "vol:/data:bogus"} {
		if _, err := parseVolume(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("parseVolume(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestParseMount(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want engine.MountSpec
	}{
		{"type=bind,source=/h,target=/c,readonly", engine.MountSpec{Type: "bind", Source: "/h", Target: "/c", ReadOnly: true}},
		{"type=bind,src=/h,dst=/c,ro=false,bind-propagation=rslave", engine.MountSpec{Type: "bind", Source: "/h", Target: "/c", Options: []string{"rslave"}}},
		{"source=v,target=/c", engine.MountSpec{Type: "volume", Source: "v", Target: "/c"}},
		{"type=volume,destination=/c,volume-nocopy", engine.MountSpec{Type: "volume", Target: "/c", NoCopy: true}},
		{"type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1770", engine.MountSpec{Type: "tmpfs", Target: "/t", Options: []string{"size=67108864", "mode=1770"}}},
	} {
		got, err := parseMount(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseMount(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"type=bind,target=/c", "type=nfs,target=/c", "source=v", "type=tmpfs,source=x,target=/t", "type=bind,source=/h,target=/c,readonly=maybe", "type=tmpfs,target=/t,tmpfs-mode=999", "type=bind,source=/h,target=/c,colour=red"} {
		if _, err := parseMount(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("parseMount(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestParseTmpfs(t *testing.T) {
	got, err := parseTmpfs("/run:size=1m,mode=700")
	if want := (engine.MountSpec{Type: "tmpfs", Target: "/run", Options: []string{"noexec", "size=1m", "mode=700"}}); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseTmpfs = %+v %v", got, err)
	}
	got, _ = parseTmpfs("/x:exec,ro")
	if want := (engine.MountSpec{Type: "tmpfs", Target: "/x", ReadOnly: true}); !reflect.DeepEqual(got, want) {
		t.Errorf("parseTmpfs exec = %+v", got)
	}
	if _, err := parseTmpfs("rel"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("relative tmpfs: %v", err)
	}
}

func TestNetVolFlagsApply(t *testing.T) {
	f := netVolFlags{networks: []string{"a", "b"}, aliases: []string{"x"}, publish: []string{"80"}, volumes: []string{"v:/v"}, tmpfs: []string{"/t"}}
	var cfg engine.ContainerConfig
	if err := f.apply(&cfg); err != nil {
		t.Fatal(err)
	}
	want := []engine.EndpointConfig{{Network: "a", Aliases: []string{"x"}}, {Network: "b", Aliases: []string{"x"}}}
	if cfg.NetworkMode != "a" || !reflect.DeepEqual(cfg.Networks, want) || len(cfg.Ports) != 1 || len(cfg.Mounts) != 2 {
		t.Errorf("apply: %+v", cfg)
	}
	f = netVolFlags{networks: []string{"host", "b"}}
	if err := f.apply(&engine.ContainerConfig{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("host plus another network: %v", err)
	}
}

func TestFormatPorts(t *testing.T) {
	got := formatPorts([]engine.PortBinding{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, {HostIP: "127.0.0.1", HostPort: 53, ContainerPort: 53, Protocol: "udp"}})
	if got != "0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp" {
		t.Errorf("formatPorts = %q", got)
	}
}
