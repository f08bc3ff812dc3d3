package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/berthdev/berth/internal/errdefs"
	"golang.org/x/sys/unix"
)

// Default network: every workload joins it unless told otherwise.
const (
	DefaultName   = "berth"
	DefaultBridge = "berth0"
	DefaultSubnet = "10.88.0.0/16"
)

// userSubnets is where networks created without --subnet get a /24.
var userSubnetBase = net.IPv4(10, 89, 0, 0).To4()

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// Network is one berth network: a Linux bridge with an IPv4 subnet.
type Network struct {
	Name     string            `json:"name"`
	ID       string            `json:"id"`
	Driver   string            `json:"driver"`
	Bridge   string            `json:"bridge"`
	Subnet   string            `json:"subnet"`
	Gateway  string            `json:"gateway"`
	Internal bool              `json:"internal,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Created  time.Time         `json:"created"`
	// ConfList is the CNI configuration file berth wrote for it.
	ConfList string `json:"conflist"`
}

// CreateOptions describe a new network. Zero values pick defaults: a free
// 10.89.N.0/24 subnet, its first address as gateway.
type CreateOptions struct {
	Subnet   string
	Gateway  string
	Internal bool
	Labels   map[string]string
	// Bridge names the Linux bridge (default br-<ID[:12]>).
	Bridge string
}

// Store keeps network definitions as files in one directory: NAME.json
// (metadata) and NAME.conflist (what libcni runs).
type Store struct {
	dir     string
	dataDir string // host-local's lease directory
}

// OpenStore returns the store in dir; leases of its networks are kept in
// dataDir (runtime state: they die with the workloads at reboot).
func OpenStore(dir, dataDir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create network dir %s: %w", dir, err)
	}
	return &Store{dir: dir, dataDir: dataDir}, nil
}

// DataDir is host-local's lease directory.
func (s *Store) DataDir() string { return s.dataDir }

// lock serialises creations (names and subnets must stay unique).
func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Create defines a new network.
func (s *Store) Create(ctx context.Context, name string, o CreateOptions) (*Network, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("invalid network name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed: %w", name, errdefs.ErrInvalidArgument)
	}
	switch name {
	case "none", "host", "bridge", "default":
		return nil, fmt.Errorf("network name %q is reserved: %w", name, errdefs.ErrInvalidArgument)
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.create(ctx, name, o)
}

func (s *Store) create(ctx context.Context, name string, o CreateOptions) (*Network, error) {
	if _, err := os.Stat(s.metaPath(name)); err == nil {
		return nil, fmt.Errorf("network %s: %w", name, errdefs.ErrAlreadyExists)
	}
	existing, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	n := &Network{Name: name, ID: id, Driver: "bridge", Bridge: o.Bridge, Internal: o.Internal, Labels: o.Labels, Created: time.Now().UTC()}
	if n.Bridge == "" {
		n.Bridge = "br-" + id[:12]
	}
	var subnet *net.IPNet
	if o.Subnet != "" {
		ip, sn, err := net.ParseCIDR(o.Subnet)
		if err != nil || ip.To4() == nil {
			return nil, fmt.Errorf("invalid --subnet %q: give an IPv4 CIDR like 10.90.0.0/24: %w", o.Subnet, errdefs.ErrInvalidArgument)
		}
		if ones, _ := sn.Mask.Size(); ones > 30 {
			return nil, fmt.Errorf("subnet %s is too small: %w", o.Subnet, errdefs.ErrInvalidArgument)
		}
		for _, other := range existing {
			if _, osn, err := net.ParseCIDR(other.Subnet); err == nil && overlaps(sn, osn) {
				return nil, fmt.Errorf("subnet %s overlaps network %s (%s): %w", sn, other.Name, other.Subnet, errdefs.ErrConflict)
			}
		}
		subnet = sn
	} else {
		if subnet, err = freeSubnet(existing); err != nil {
			return nil, err
		}
	}
	n.Subnet = subnet.String()
	if o.Gateway != "" {
		gw := net.ParseIP(o.Gateway).To4()
		if gw == nil || !subnet.Contains(gw) || gw.Equal(subnet.IP) {
			return nil, fmt.Errorf("invalid --gateway %q: give an address inside %s: %w", o.Gateway, subnet, errdefs.ErrInvalidArgument)
		}
		n.Gateway = gw.String()
	} else {
		n.Gateway = nthIP(subnet, 1).String()
	}
	conf, err := ConfList(n, s.dataDir)
	if err != nil {
		return nil, err
	}
	n.ConfList = s.confPath(name)
	if err := writeAtomic(n.ConfList, conf); err != nil {
		return nil, err
	}
	meta, _ := json.MarshalIndent(n, "", "  ")
	if err := writeAtomic(s.metaPath(name), meta); err != nil {
		_ = os.Remove(n.ConfList)
		return nil, err
	}
	return n, nil
}

// EnsureDefault returns the default network, defining it on first use.
func (s *Store) EnsureDefault(ctx context.Context) (*Network, error) {
	if n, err := s.get(DefaultName); err == nil {
		return n, nil
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if n, err := s.get(DefaultName); err == nil {
		return n, nil
	}
	return s.create(ctx, DefaultName, CreateOptions{Subnet: DefaultSubnet, Bridge: DefaultBridge})
}

func (s *Store) metaPath(name string) string { return filepath.Join(s.dir, name+".json") }
func (s *Store) confPath(name string) string { return filepath.Join(s.dir, name+".conflist") }

func (s *Store) get(name string) (*Network, error) {
	data, err := os.ReadFile(s.metaPath(name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("network %s not found: %w", name, errdefs.ErrNotFound)
		}
		return nil, err
	}
	var n Network
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("decode network %s: %w", name, err)
	}
	return &n, nil
}

// Get finds a network by name, full ID or unique ID prefix. The default
// network is defined on first use.
func (s *Store) Get(ctx context.Context, ref string) (*Network, error) {
	if ref == DefaultName {
		return s.EnsureDefault(ctx)
	}
	if validName.MatchString(ref) {
		if n, err := s.get(ref); err == nil {
			return n, nil
		}
	}
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	var found *Network
	for _, n := range all {
		if ref != "" && strings.HasPrefix(n.ID, ref) {
			if found != nil {
				return nil, fmt.Errorf("%q matches several networks: %w", ref, errdefs.ErrInvalidArgument)
			}
			found = n
		}
	}
	if found == nil {
		return nil, fmt.Errorf("network %s not found: %w", ref, errdefs.ErrNotFound)
	}
	return found, nil
}

// List returns every network, by name.
func (s *Store) List(ctx context.Context) ([]*Network, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []*Network
	for _, ent := range ents {
		name, ok := strings.CutSuffix(ent.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		n, err := s.get(name)
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes a network's definition, its leases directory and its
// bridge. The caller checks that no workload uses it.
func (s *Store) Remove(ctx context.Context, n *Network) error {
	if err := DeleteBridge(n.Bridge); err != nil {
		return fmt.Errorf("remove network %s: %w", n.Name, err)
	}
	_ = os.RemoveAll(filepath.Join(s.dataDir, n.Name))
	_ = os.Remove(s.confPath(n.Name))
	if err := os.Remove(s.metaPath(n.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network %s: %w", n.Name, err)
	}
	return nil
}

// LoadConfList reads the network's CNI configuration.
func (s *Store) LoadConfList(n *Network) ([]byte, error) {
	data, err := os.ReadFile(s.confPath(n.Name))
	if err != nil {
		return nil, fmt.Errorf("read CNI configuration of network %s: %w", n.Name, err)
	}
	return data, nil
}

// freeSubnet picks the first 10.89.N.0/24 that overlaps neither a berth
// network nor a route of the host.
func freeSubnet(existing []*Network) (*net.IPNet, error) {
	var taken []*net.IPNet
	for _, n := range existing {
		if _, sn, err := net.ParseCIDR(n.Subnet); err == nil {
			taken = append(taken, sn)
		}
	}
	taken = append(taken, hostRoutes()...)
	for i := 0; i < 256; i++ {
		ip := net.IPv4(userSubnetBase[0], userSubnetBase[1], byte(i), 0).To4()
		cand := &net.IPNet{IP: ip, Mask: net.CIDRMask(24, 32)}
		free := true
		for _, t := range taken {
			if overlaps(cand, t) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return nil, fmt.Errorf("no free subnet left in 10.89.0.0/16: give --subnet: %w", errdefs.ErrUnavailable)
}

// hostRoutes are the host's IPv4 routes other than the default one.
func hostRoutes() []*net.IPNet {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []*net.IPNet
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 8 {
			continue
		}
		dst, err1 := hex.DecodeString(fs[1])
		mask, err2 := hex.DecodeString(fs[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			continue
		}
		// /proc/net/route is little-endian.
		d := make(net.IP, 4)
		binary.BigEndian.PutUint32(d, binary.LittleEndian.Uint32(dst))
		m := make(net.IPMask, 4)
		binary.BigEndian.PutUint32(m, binary.LittleEndian.Uint32(mask))
		if ones, _ := m.Size(); ones == 0 {
			continue
		}
		out = append(out, &net.IPNet{IP: d, Mask: m})
	}
	return out
}

func overlaps(a, b *net.IPNet) bool { return a.Contains(b.IP) || b.Contains(a.IP) }

// nthIP is the subnet's address number n.
func nthIP(sn *net.IPNet, n uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, binary.BigEndian.Uint32(sn.IP.To4())+n)
	return ip
}

func newID() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate network ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
