package build

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/berthdev/berth/internal/errdefs"
)

// resolveChown turns --chown's user[:group] (names or IDs) into IDs, names
// looked up in rootfs's /etc/passwd and /etc/group. A user without a group
// gets the group with the same numeric ID, as in Docker.
func resolveChown(rootfs, spec string) (*owner, error) {
	if spec == "" {
		return nil, nil
	}
	user, group, hasGroup := strings.Cut(spec, ":")
	uid, err := lookupID(rootfs, "/etc/passwd", user)
	if err != nil {
		return nil, fmt.Errorf("--chown=%s: %w", spec, err)
	}
	gid := uid
	if hasGroup {
		if gid, err = lookupID(rootfs, "/etc/group", group); err != nil {
			return nil, fmt.Errorf("--chown=%s: %w", spec, err)
		}
	}
	return &owner{uid: uid, gid: gid}, nil
}

// lookupID returns name's numeric ID (the third field) from a passwd or
// group file in rootfs; a number is taken as is.
func lookupID(rootfs, file, name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("negative ID %d: %w", n, errdefs.ErrInvalidArgument)
		}
		return n, nil
	}
	p, err := securejoin.SecureJoin(rootfs, file)
	if err != nil {
		return 0, err
	}
	f, err := os.Open(p)
	if err != nil {
		return 0, fmt.Errorf("look up %q: no %s in the image: %w", name, file, errdefs.ErrNotFound)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 3 && fields[0] == name {
			n, err := strconv.Atoi(fields[2])
			if err != nil {
				return 0, fmt.Errorf("look up %q in %s: bad ID %q: %w", name, file, fields[2], errdefs.ErrCorrupt)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%q not found in the image's %s: %w", name, file, errdefs.ErrNotFound)
}
