package build

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/berthdev/berth/internal/errdefs"
)

// plan is a parsed Dockerfile with the stages to build chosen.
type plan struct {
	file     string
	lex      *shell.Lex
	warnings []string
	stages   []*stagePlan
	target   *stagePlan
	// global are the ARGs declared before the first FROM, with their values
	// (build args applied), plus the automatic platform args.
	global *argScope
	// buildArgs are the --build-arg values; consumed records those declared.
	buildArgs map[string]string
	consumed  map[string]bool
}

// stagePlan is one FROM … section.
type stagePlan struct {
	index  int
	stage  instructions.Stage
	base   string     // FROM's argument, expanded
	from   *stagePlan // base stage, or nil for an image or scratch
	needed bool
}

// name is how a stage is referred to in messages.
func (s *stagePlan) name() string {
	if s.stage.Name != "" {
		return s.stage.Name
	}
	return strconv.Itoa(s.index)
}

// argScope is an ordered set of declared ARGs and their values.
type argScope struct {
	names  []string
	values map[string]string
	set    map[string]bool // has a value
}

func newArgScope() *argScope {
	return &argScope{values: map[string]string{}, set: map[string]bool{}}
}

func (a *argScope) declare(name string, value string, has bool) {
	if _, ok := a.values[name]; !ok && !a.set[name] {
		a.names = append(a.names, name)
	}
	if !has {
		if !a.set[name] {
			a.values[name] = ""
		}
		return
	}
	a.values[name], a.set[name] = value, true
}

func (a *argScope) clone() *argScope {
	c := newArgScope()
	c.names = append(c.names, a.names...)
	for k, v := range a.values {
		c.values[k] = v
	}
	for k, v := range a.set {
		c.set[k] = v
	}
	return c
}

// env returns the ARGs that have a value, as KEY=VALUE in declaration order.
func (a *argScope) env() []string {
	var out []string
	for _, n := range a.names {
		if a.set[n] {
			out = append(out, n+"="+a.values[n])
		}
	}
	return out
}

// proxyArgs may be given with --build-arg without being declared; they
// reach RUN commands but not the image or the cache key, as in Docker.
var proxyArgs = map[string]bool{
	"HTTP_PROXY": true, "http_proxy": true, "HTTPS_PROXY": true, "https_proxy": true,
	"FTP_PROXY": true, "ftp_proxy": true, "NO_PROXY": true, "no_proxy": true,
	"ALL_PROXY": true, "all_proxy": true,
}

// parseDockerfile parses data (named file in messages) and plans the build
// of target (the last stage when empty).
func parseDockerfile(file string, data []byte, buildArgs map[string]string, target string) (*plan, error) {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, syntaxError(file, err)
	}
	p := &plan{file: file, lex: shell.NewLex(res.EscapeToken), buildArgs: buildArgs, consumed: map[string]bool{}}
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil {
			line = w.Location.Start.Line
		}
		p.warnings = append(p.warnings, fmt.Sprintf("%s:%d: %s", file, line, w.Short))
	}
	stages, metaArgs, err := instructions.Parse(res.AST, &linter.Linter{})
	if err != nil {
		return nil, syntaxError(file, err)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM instruction: %w", file, errdefs.ErrInvalidArgument)
	}
	// Global scope: automatic platform args, then the meta ARGs in order.
	p.global = newArgScope()
	os_, arch, variant := hostPlatform()
	plat := os_ + "/" + arch
	if variant != "" {
		plat += "/" + variant
	}
	for _, kv := range [][2]string{
		{"TARGETPLATFORM", plat}, {"TARGETOS", os_}, {"TARGETARCH", arch}, {"TARGETVARIANT", variant},
		{"BUILDPLATFORM", plat}, {"BUILDOS", os_}, {"BUILDARCH", arch}, {"BUILDVARIANT", variant},
	} {
		p.global.declare(kv[0], kv[1], true)
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			expand := func(w string) (string, error) { return p.expand(w, p.global) }
			if err := p.declareArg(p.global, expand, kv, a.Location()); err != nil {
				return nil, err
			}
		}
	}
	for i := range stages {
		sp := &stagePlan{index: i, stage: stages[i]}
		base, err := p.expand(stages[i].BaseName, p.global)
		if err != nil {
			return nil, located(file, stages[i].Location, fmt.Errorf("FROM %s: %w", stages[i].BaseName, err))
		}
		if base == "" {
			return nil, located(file, stages[i].Location, fmt.Errorf("FROM %s: the base name expands to nothing: %w", stages[i].BaseName, errdefs.ErrInvalidArgument))
		}
		sp.base = base
		for _, prev := range p.stages {
			if prev.stage.Name != "" && strings.EqualFold(prev.stage.Name, base) {
				sp.from = prev
			}
		}
		if stages[i].Platform != "" {
			pl, err := p.expand(stages[i].Platform, p.global)
			if err != nil {
				return nil, located(file, stages[i].Location, err)
			}
			if err := checkPlatform(pl); err != nil {
				return nil, located(file, stages[i].Location, err)
			}
		}
		p.stages = append(p.stages, sp)
	}
	p.target = p.stages[len(p.stages)-1]
	if target != "" {
		p.target = nil
		for _, s := range p.stages {
			if strings.EqualFold(s.stage.Name, target) {
				p.target = s
			}
		}
		if p.target == nil {
			return nil, fmt.Errorf("%s: target stage %q not found: %w", file, target, errdefs.ErrInvalidArgument)
		}
	}
	if err := p.markNeeded(p.target, map[*stagePlan]bool{}); err != nil {
		return nil, err
	}
	return p, nil
}

// declareArg declares the ARG kv in scope; ARG without a default takes the
// build arg, or the global value when the scope is a stage's. expand, when
// not nil, expands the default value.
func (p *plan) declareArg(scope *argScope, expand func(string) (string, error), kv instructions.KeyValuePairOptional, loc []parser.Range) error {
	name := kv.Key
	p.consumed[name] = true
	if v, ok := p.buildArgs[name]; ok {
		scope.declare(name, v, true)
		return nil
	}
	if kv.Value != nil {
		v := *kv.Value
		if expand != nil {
			var err error
			if v, err = expand(v); err != nil {
				return located(p.file, loc, fmt.Errorf("ARG %s: %w", name, err))
			}
		}
		scope.declare(name, v, true)
		return nil
	}
	if scope != p.global && p.global.set[name] {
		scope.declare(name, p.global.values[name], true)
		return nil
	}
	scope.declare(name, "", false)
	return nil
}

// expand substitutes variables in word from scope.
func (p *plan) expand(word string, scope *argScope) (string, error) {
	r, _, err := p.lex.ProcessWord(word, shell.EnvsFromSlice(scope.env()))
	return r, err
}

// markNeeded marks s and the stages it depends on (FROM a stage, COPY
// --from a stage).
func (p *plan) markNeeded(s *stagePlan, visiting map[*stagePlan]bool) error {
	if s.needed {
		return nil
	}
	if visiting[s] {
		return fmt.Errorf("%s: stage %s depends on itself: %w", p.file, s.name(), errdefs.ErrInvalidArgument)
	}
	visiting[s] = true
	if s.from != nil {
		if err := p.markNeeded(s.from, visiting); err != nil {
			return err
		}
	}
	for _, c := range s.stage.Commands {
		cp, ok := c.(*instructions.CopyCommand)
		if !ok || cp.From == "" {
			continue
		}
		from, err := p.expand(cp.From, p.global)
		if err != nil {
			return located(p.file, cp.Location(), err)
		}
		if dep := p.stageRef(from, s.index); dep != nil {
			if err := p.markNeeded(dep, visiting); err != nil {
				return err
			}
		}
	}
	s.needed = true
	return nil
}

// stageRef returns the stage that ref (a name or an index) names among the
// stages before stage before, or nil when ref is an image.
func (p *plan) stageRef(ref string, before int) *stagePlan {
	if n, err := strconv.Atoi(ref); err == nil {
		if n >= 0 && n < before {
			return p.stages[n]
		}
		return nil
	}
	for _, s := range p.stages[:before] {
		if s.stage.Name != "" && strings.EqualFold(s.stage.Name, ref) {
			return s
		}
	}
	return nil
}

// unusedBuildArgs lists --build-arg names no ARG declared, sorted.
func (p *plan) unusedBuildArgs() []string {
	var out []string
	for k := range p.buildArgs {
		if !p.consumed[k] && !proxyArgs[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// syntaxError names the Dockerfile and line of a parse error.
func syntaxError(file string, err error) error {
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		msg := err.Error()
		if !strings.Contains(msg, "line ") {
			msg = fmt.Sprintf("line %d: %s", le.Locations[0][0].Start.Line, msg)
		}
		return fmt.Errorf("%s: %s: %w", file, msg, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("%s: %v: %w", file, err, errdefs.ErrInvalidArgument)
}

// located prefixes err with the Dockerfile line of loc.
func located(file string, loc []parser.Range, err error) error {
	if len(loc) == 0 {
		return fmt.Errorf("%s: %w", file, err)
	}
	return fmt.Errorf("%s:%d: %w", file, loc[0].Start.Line, err)
}

// startLine is the first line of an instruction.
func startLine(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}
