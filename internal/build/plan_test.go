package build

import (
	"errors"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/berthdev/berth/internal/errdefs"
)

func TestParsePlan(t *testing.T) {
	df := `ARG BASE=alpine
ARG V
FROM ${BASE}:${V:-3} AS deps
FROM busybox AS unused
FROM scratch AS tools
COPY --from=deps /x /x
FROM tools
COPY --from=0 /y /y
`
	p, err := parseDockerfile("Dockerfile", []byte(df), map[string]string{"V": "9", "NOPE": "1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.stages[0].base; got != "alpine:9" {
		t.Errorf("FROM expanded to %q", got)
	}
	if p.target != p.stages[3] || p.stages[3].from != p.stages[2] {
		t.Errorf("target %v, its base %v", p.target.name(), p.stages[3].from)
	}
	needed := ""
	for _, s := range p.stages {
		if s.needed {
			needed += s.name() + " "
		}
	}
	if needed != "deps tools 3 " {
		t.Errorf("needed stages %q", needed)
	}
	if u := p.unusedBuildArgs(); strings.Join(u, ",") != "NOPE" {
		t.Errorf("unused build args %v", u)
	}
	p, err = parseDockerfile("Dockerfile", []byte(df), nil, "unused")
	if err != nil || p.target != p.stages[1] || p.stages[0].needed {
		t.Errorf("--target unused: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, df, target, want string }{
		{"unknown instruction", "FROM a\nRUN x\nFORM b\n", "", "line 3"},
		{"no FROM", "RUN true\n", "", "line 1"},
		{"only ARG", "ARG X=1\n", "", "no FROM"},
		{"bad stage name", "FROM a AS 1x\n", "", "line 1"},
		{"missing target", "FROM a\n", "nope", `target stage "nope"`},
		{"foreign platform", "FROM --platform=linux/s390x a\n", "", "builds only for"},
		{"bad ONBUILD", "FROM a\nONBUILD FROM b\n", "", "line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseDockerfile("Dockerfile", []byte(tc.df), nil, tc.target)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v, want %q (invalid argument)", err, tc.want)
			}
		})
	}
}

func TestArgScopes(t *testing.T) {
	df := "ARG A=global\nARG B\nFROM x\nARG A\nARG B\nARG C=${A}-c\nARG D\n"
	p, err := parseDockerfile("Dockerfile", []byte(df), map[string]string{"D": "given"}, "")
	if err != nil {
		t.Fatal(err)
	}
	st := &stageState{args: newArgScope(), cfg: scratchConfig()}
	r := &run{p: p}
	for _, c := range p.stages[0].stage.Commands {
		if err := c.(instructions.SupportsSingleWordExpansion).Expand(r.expander(st)); err != nil {
			t.Fatal(err)
		}
		for _, kv := range c.(*instructions.ArgCommand).Args {
			if err := p.declareArg(st.args, nil, kv, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	// B has no value anywhere: declared but not in the environment.
	if got := strings.Join(st.args.env(), " "); got != "A=global C=global-c D=given" {
		t.Errorf("stage args %q", got)
	}
}

func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		cl    instructions.ShellDependantCmdLine
		shell []string
		want  string
	}{
		{instructions.ShellDependantCmdLine{CmdLine: []string{"echo hi"}, PrependShell: true}, nil, "/bin/sh|-c|echo hi"},
		{instructions.ShellDependantCmdLine{CmdLine: []string{"echo hi"}, PrependShell: true}, []string{"/bin/bash", "-xc"}, "/bin/bash|-xc|echo hi"},
		{instructions.ShellDependantCmdLine{CmdLine: []string{"/bin/echo", "a b"}}, nil, "/bin/echo|a b"},
		{instructions.ShellDependantCmdLine{CmdLine: []string{"<<EOF"}, PrependShell: true, Files: []instructions.ShellInlineFile{{Name: "EOF", Data: "echo a\necho b\n"}}}, nil, "/bin/sh|-c|echo a\necho b\n"},
	} {
		got, err := commandLine(tc.cl, tc.shell)
		if err != nil || strings.Join(got, "|") != tc.want {
			t.Errorf("commandLine(%+v) = %q, %v; want %q", tc.cl, got, err, tc.want)
		}
	}
}

func TestExposedPorts(t *testing.T) {
	for in, want := range map[string]string{"80": "80/tcp", "53/UDP": "53/udp", "8000-8002/tcp": "8000/tcp 8001/tcp 8002/tcp"} {
		got, err := exposedPorts(in)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("exposedPorts(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"x", "70000", "9-1", "80/foo"} {
		if _, err := exposedPorts(bad); err == nil {
			t.Errorf("exposedPorts(%q) accepted", bad)
		}
	}
}

func TestSetEnv(t *testing.T) {
	env := setEnv([]string{"A=1", "B=2"}, "A", "3")
	if strings.Join(env, " ") != "B=2 A=3" {
		t.Errorf("setEnv = %v", env)
	}
	if got := mergeEnv([]string{"X=arg", "Y=1"}, []string{"X=env"}); strings.Join(got, " ") != "Y=1 X=env" {
		t.Errorf("mergeEnv = %v", got)
	}
}
