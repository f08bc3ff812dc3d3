package spec

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
)

// WithUser runs the process as user, resolved like Docker's --user against
// the /etc/passwd and /etc/group found in rootfs (symlinks followed inside
// rootfs only):
//
//   - "" is uid 0 (root);
//   - "name" or "uid" takes the uid, primary gid and home from passwd, and
//     the supplementary groups listing the name in /etc/group;
//   - "user:group" or "user:gid" sets the primary group explicitly, with no
//     supplementary groups;
//   - numeric ids need no passwd or group entry; an unknown name is an error
//     wrapping errdefs.ErrInvalidArgument.
//
// HOME is set from passwd (or "/") unless the environment has one already.
func WithUser(rootfs, user string) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		u, err := resolveUser(rootfs, user)
		if err != nil {
			return err
		}
		p := ensureProcess(s)
		p.User = specs.User{UID: u.uid, GID: u.gid, AdditionalGids: u.sgids}
		if !slices.ContainsFunc(p.Env, func(kv string) bool { return strings.HasPrefix(kv, "HOME=") }) {
			p.Env = append(p.Env, "HOME="+u.home)
		}
		return nil
	}
}

type execUser struct {
	uid, gid uint32
	sgids    []uint32
	home     string
}

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

func resolveUser(rootfs, spec string) (execUser, error) {
	fail := func(format string, args ...any) (execUser, error) {
		return execUser{}, fmt.Errorf("resolve user %q: %s: %w", spec, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
	}
	userArg, groupArg, hasGroup := strings.Cut(spec, ":")
	if hasGroup && groupArg == "" {
		return fail("empty group")
	}
	users, err := readPasswd(rootfs)
	if err != nil {
		return execUser{}, fmt.Errorf("resolve user %q: %w", spec, err)
	}
	u := execUser{home: "/"}
	uid, uidErr := parseID(userArg)
	var matched *passwdEntry
	for i := range users {
		e := &users[i]
		if (userArg == "" && e.uid == 0) || (uidErr == nil && e.uid == uid) || (uidErr != nil && e.name == userArg) {
			matched = e
			break
		}
	}
	switch {
	case matched != nil:
		u.uid, u.gid, u.home = matched.uid, matched.gid, matched.home
		if u.home == "" {
			u.home = "/"
		}
	case userArg == "":
	case uidErr != nil:
		return fail("unable to find user %s: no matching entries in passwd file", userArg)
	default:
		u.uid = uid
	}
	if !hasGroup && matched == nil {
		return u, nil
	}
	groups, err := readGroup(rootfs)
	if err != nil {
		return execUser{}, fmt.Errorf("resolve user %q: %w", spec, err)
	}
	if hasGroup {
		gid, gidErr := parseID(groupArg)
		for _, g := range groups {
			if (gidErr == nil && g.gid == gid) || (gidErr != nil && g.name == groupArg) {
				u.gid = g.gid
				return u, nil
			}
		}
		if gidErr != nil {
			return fail("unable to find group %s: no matching entries in group file", groupArg)
		}
		u.gid = gid
		return u, nil
	}
	for _, g := range groups {
		if slices.Contains(g.members, matched.name) && !slices.Contains(u.sgids, g.gid) {
			u.sgids = append(u.sgids, g.gid)
		}
	}
	return u, nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// readRootfsFile calls line for each line of name inside rootfs; a missing
// file has no lines.
func readRootfsFile(rootfs, name string, line func(fields []string)) error {
	p, err := securejoin.SecureJoin(rootfs, name)
	if err != nil {
		return fmt.Errorf("open %s in %s: %w", name, rootfs, err)
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s in %s: %w", name, rootfs, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		line(strings.Split(t, ":"))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s in %s: %w", name, rootfs, err)
	}
	return nil
}

// readPasswd parses rootfs's /etc/passwd (name:x:uid:gid:gecos:home:shell),
// skipping malformed lines as libc does.
func readPasswd(rootfs string) ([]passwdEntry, error) {
	var out []passwdEntry
	err := readRootfsFile(rootfs, "/etc/passwd", func(f []string) {
		if len(f) < 4 {
			return
		}
		uid, err1 := parseID(f[2])
		gid, err2 := parseID(f[3])
		if err1 != nil || err2 != nil {
			return
		}
		e := passwdEntry{name: f[0], uid: uid, gid: gid}
		if len(f) > 5 {
			e.home = f[5]
		}
		out = append(out, e)
	})
	return out, err
}

// readGroup parses rootfs's /etc/group (name:x:gid:member,member).
func readGroup(rootfs string) ([]groupEntry, error) {
	var out []groupEntry
	err := readRootfsFile(rootfs, "/etc/group", func(f []string) {
		if len(f) < 3 {
			return
		}
		gid, err := parseID(f[2])
		if err != nil {
			return
		}
		g := groupEntry{name: f[0], gid: gid}
		if len(f) > 3 && f[3] != "" {
			g.members = strings.Split(f[3], ",")
		}
		out = append(out, g)
	})
	return out, err
}
