// Package kmod works out in which order to load kernel modules, from the
// depends= entries in each .ko file's .modinfo ELF section: Debian's kernel
// package ships no modules.dep that berth could use without depmod.
package kmod

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/berthdev/berth/internal/errdefs"
)

// Info is what a module's .modinfo section says about it.
type Info struct {
	// Name is the module name (file name without .ko).
	Name string
	// Depends are the modules that must be loaded first.
	Depends []string
}

// ReadInfo parses the .modinfo section of the module file at path.
func ReadInfo(path string) (Info, error) {
	f, err := elf.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("read module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return Info{}, fmt.Errorf("read module %s: no .modinfo section: %w", path, errdefs.ErrCorrupt)
	}
	data, err := sec.Data()
	if err != nil {
		return Info{}, fmt.Errorf("read module %s: %w", path, err)
	}
	info := Info{Name: strings.TrimSuffix(filepath.Base(path), ".ko")}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			info.Name = v
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					info.Depends = append(info.Depends, d)
				}
			}
		}
	}
	return info, nil
}

// Order returns the .ko file names in dir needed to load want, each after
// its dependencies. A wanted module without a file is taken to be built in
// and skipped; a missing dependency of a present module is an error.
func Order(dir string, want []string) ([]string, error) {
	infos := map[string]Info{}
	var load func(name string) (Info, bool, error)
	load = func(name string) (Info, bool, error) {
		if in, ok := infos[name]; ok {
			return in, true, nil
		}
		path := filepath.Join(dir, name+".ko")
		if _, err := os.Stat(path); err != nil {
			return Info{}, false, nil
		}
		in, err := ReadInfo(path)
		if err != nil {
			return Info{}, false, err
		}
		infos[name] = in
		return in, true, nil
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, by string) error
	visit = func(name, by string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("order modules in %s: dependency cycle through %s: %w", dir, name, errdefs.ErrCorrupt)
		case 2:
			return nil
		}
		in, ok, err := load(name)
		if err != nil {
			return err
		}
		if !ok {
			if by != "" {
				return fmt.Errorf("order modules in %s: %s.ko, needed by %s, is missing: %w", dir, name, by, errdefs.ErrUnavailable)
			}
			state[name] = 2
			return nil
		}
		state[name] = 1
		for _, d := range in.Depends {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name+".ko")
		return nil
	}
	for _, w := range want {
		if err := visit(w, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}
