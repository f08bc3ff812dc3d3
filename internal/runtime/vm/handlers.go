package vm

import (
	"context"
	"fmt"
)

// Handler is one named step of a VM's boot.
type Handler struct {
	Name string
	Fn   func(ctx context.Context, m *Machine) error
}

// HandlerList is an ordered list of handlers; its methods return edited
// copies, as firecracker-go-sdk's do.
type HandlerList struct {
	list []Handler
}

// Names of the default handlers, for Swap and Remove.
const (
	ValidateHostHandler   = "vm.ValidateHost"
	ValidateBundleHandler = "vm.ValidateBundle"
	PrepareSharesHandler  = "vm.PrepareShares"
	StateDirHandler       = "vm.CreateStateDir"
	InitramfsHandler      = "vm.BuildInitramfs"
	AccelHandler          = "vm.SelectAccel"
	VirtiofsdHandler      = "vm.StartVirtiofsd"
	NetworkHandler        = "vm.JoinNetwork"
	SharesHandler         = "vm.StartShares"
	QEMUHandler           = "vm.StartQEMU"
	AgentHandler          = "vm.ConnectAgent"
	SetupHandler          = "vm.SetupGuest"
	ControlHandler        = "vm.ServeControl"
)

// Handlers are a VM's boot steps: Validation runs first and launches
// nothing; Boot brings the VM up to a ready agent.
type Handlers struct {
	Validation HandlerList
	Boot       HandlerList
}

func defaultHandlers() Handlers {
	return Handlers{
		Validation: HandlerList{}.Append(
			method(ValidateHostHandler, (*Machine).validateHost),
			method(ValidateBundleHandler, (*Machine).validateBundle),
			method(PrepareSharesHandler, (*Machine).prepareShares),
		),
		Boot: HandlerList{}.Append(
			method(StateDirHandler, (*Machine).createStateDir),
			method(InitramfsHandler, (*Machine).buildInitramfs),
			method(AccelHandler, (*Machine).selectAccel),
			method(VirtiofsdHandler, (*Machine).startVirtiofsd),
			method(NetworkHandler, (*Machine).joinNetwork),
			method(SharesHandler, (*Machine).startShares),
			method(QEMUHandler, (*Machine).startQEMU),
			method(AgentHandler, (*Machine).connectAgent),
			method(SetupHandler, (*Machine).setupGuest),
			method(ControlHandler, (*Machine).serveControl),
		),
	}
}

// method makes a handler of a Machine method.
func method(name string, fn func(*Machine, context.Context) error) Handler {
	return Handler{Name: name, Fn: func(ctx context.Context, m *Machine) error { return fn(m, ctx) }}
}

// Append returns the list with hs added at the end.
func (l HandlerList) Append(hs ...Handler) HandlerList {
	return HandlerList{list: append(append([]Handler(nil), l.list...), hs...)}
}

// Swap returns the list with the handler named h.Name replaced by h.
func (l HandlerList) Swap(h Handler) HandlerList {
	out := HandlerList{list: append([]Handler(nil), l.list...)}
	for i := range out.list {
		if out.list[i].Name == h.Name {
			out.list[i] = h
		}
	}
	return out
}

// Remove returns the list without the handlers named name.
func (l HandlerList) Remove(name string) HandlerList {
	var out HandlerList
	for _, h := range l.list {
		if h.Name != name {
			out.list = append(out.list, h)
		}
	}
	return out
}

// Names lists the handlers in order.
func (l HandlerList) Names() []string {
	names := make([]string, len(l.list))
	for i, h := range l.list {
		names[i] = h.Name
	}
	return names
}

// Run runs the handlers in order, stopping at the first error.
func (l HandlerList) Run(ctx context.Context, m *Machine) error {
	for _, h := range l.list {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if err := h.Fn(ctx, m); err != nil {
			return err
		}
	}
	return nil
}
