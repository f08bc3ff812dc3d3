package vm

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestHandlerList(t *testing.T) {
	var ran []string
	h := func(name string) Handler {
		return Handler{name, func(context.Context, *Machine) error { ran = append(ran, name); return nil }}
	}
	l := HandlerList{}.Append(h("a"), h("b"), h("c"))
	l2 := l.Swap(Handler{"b", func(context.Context, *Machine) error { return errors.New("boom") }}).Remove("c")
	if got := l.Names(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("original list changed: %v", got)
	}
	if err := l.Run(context.Background(), nil); err != nil || !slices.Equal(ran, []string{"a", "b", "c"}) {
		t.Fatalf("Run = %v, ran %v", err, ran)
	}
	ran = nil
	if err := l2.Run(context.Background(), nil); err == nil || !slices.Equal(ran, []string{"a"}) {
		t.Fatalf("edited Run = %v, ran %v", err, ran)
	}
	if got := defaultHandlers().Boot.Names(); got[0] != StateDirHandler || got[len(got)-1] != ControlHandler {
		t.Fatalf("default boot order: %v", got)
	}
}
