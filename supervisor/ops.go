package supervisor

// The operations that change the node. While the agent runs it is their
// single writer: the CLI sends each one to the agent (POST /v1/<name>,
// the op's fields as the body) and renders the stream it answers. With no
// agent running, or with --no-service, the CLI runs the same op itself.
// One type per operation, whose run both paths call, so that they cannot
// drift apart.
//
// Files an op names (a certificate, a licence, customer.env) are given as
// absolute paths and read by whoever runs the op: the agent runs as root
// on the same host, with the same view of the file system (its unit has
// no private /tmp), and reads them through the same bounded reads.

import (
	"context"
	"fmt"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/stack"
)

// Op is an operation that changes the stack or its settings and answers
// with an installer.Result.
type Op interface {
	// Name is the op's path under /v1/.
	Name() string
	// event is the op's name in the agent's log, with what it was asked
	// (never a secret: files by path).
	event() string
	// restartsEngine says whether the op may restart the Docker engine
	// for new proxy settings: the agent cannot ask, so the CLI answers in
	// advance (its --yes).
	restartsEngine() bool
	run(ctx context.Context, wf Workflows, o installer.Options) (*installer.Result, error)
}

// LicenseOp is an operation on the licence, answered with its status.
type LicenseOp interface {
	Name() string
	event() string
	run(ctx context.Context, wf Workflows, paths config.Paths) (*license.Status, error)
}

// Do runs op through the agent when c is not nil, and directly
// otherwise (o.Paths says where; o.ConfirmEngineRestart asks).
func Do(ctx context.Context, c *Client, o installer.Options, op Op) (*installer.Result, error) {
	if c != nil {
		return c.operation(ctx, "/v1/"+op.Name(), op, o)
	}
	return op.run(ctx, Workflows{}.withDefaults(), o)
}

// DoLicense runs op through the agent when c is not nil, and directly
// on paths otherwise.
func DoLicense(ctx context.Context, c *Client, paths config.Paths, op LicenseOp) (*license.Status, error) {
	if c != nil {
		return c.licenseOperation(ctx, "/v1/"+op.Name(), op)
	}
	return op.run(ctx, Workflows{}.withDefaults(), paths)
}

// EngineRestart is the answer given in advance to "restart the Docker
// engine for its new proxy settings?", for the ops that may need it.
type EngineRestart struct {
	RestartEngine bool `json:"restart_engine,omitempty"`
}

func (e EngineRestart) restartsEngine() bool { return e.RestartEngine }

// noEngineRestart is embedded by the ops that never restart the engine.
type noEngineRestart struct{}

func (noEngineRestart) restartsEngine() bool { return false }

// ApplyOp is `config apply`.
type ApplyOp struct {
	Pull stack.PullPolicy `json:"pull,omitempty"`
	EngineRestart
}

func (ApplyOp) Name() string     { return "apply" }
func (op ApplyOp) event() string { return fmt.Sprintf("apply pull=%s", op.Pull) }
func (op ApplyOp) run(ctx context.Context, wf Workflows, o installer.Options) (*installer.Result, error) {
	o.Pull = op.Pull
	return wf.Apply(ctx, o)
}

// ControlOp is `start`, `stop` or `restart` of some services (all when
// none is named).
type ControlOp struct {
	Action   installer.ControlAction `json:"action"`
	Services []string                `json:"services,omitempty"`
	noEngineRestart
}

func (ControlOp) Name() string     { return "control" }
func (op ControlOp) event() string { return fmt.Sprintf("%s services=%q", op.Action, op.Services) }
func (op ControlOp) run(ctx context.Context, wf Workflows, o installer.Options) (*installer.Result, error) {
	return wf.Control(ctx, o, op.Action, op.Services)
}

// InstallOp is `install` run again on an installed node (the first one
// runs before there is an agent).
type InstallOp struct {
	Install installer.InstallOptions `json:"install"`
	Pull    stack.PullPolicy         `json:"pull,omitempty"`
	EngineRestart
}

func (InstallOp) Name() string     { return "install" }
func (op InstallOp) event() string { return fmt.Sprintf("install pull=%s", op.Pull) }
func (op InstallOp) run(ctx context.Context, wf Workflows, o installer.Options) (*installer.Result, error) {
	in := op.Install
	o.Pull = op.Pull
	in.Options = o
	return wf.Install(ctx, in)
}

// ProxySetOp is `proxy set`.
type ProxySetOp struct {
	Proxy installer.ProxyInput `json:"proxy"`
	EngineRestart
}

func (ProxySetOp) Name() string  { return "proxy/set" }
func (ProxySetOp) event() string { return "proxy-set" }
func (op ProxySetOp) run(ctx context.Context, wf Workflows, o installer.Options) (*installer.Result, error) {
	return wf.SetProxy(ctx, o, op.Proxy)
}

// ProxyClearOp is `proxy clear`.
type ProxyClearOp struct{ EngineRestart }

func (ProxyClearOp) Name() string  { return "proxy/clear" }
func (ProxyClearOp) event() string { return "proxy-clear" }
func (ProxyClearOp) run(ctx context.Context, wf Workflows, o installer.Options) (*installer.Result, error) {
	return wf.ClearProxy(ctx, o)
}

// CertsOp is one of the `certs` commands that change the router's
// certificate: import, self-signed, offload, acme or renew.
type CertsOp struct {
	Action CertsAction `json:"action"`
	// TLS is import's certificate, key and chain.
	TLS installer.TLSInput `json:"tls"`
	// ACME is acme's directory, contact and roots.
	ACME installer.ACMEInput `json:"acme"`
	noEngineRestart
}

// CertsAction names a CertsOp.
type CertsAction string

// The certs actions.
const (
	CertsImport     CertsAction = "import"
	CertsSelfSigned CertsAction = "self-signed"
	CertsOffload    CertsAction = "offload"
	CertsACME       CertsAction = "acme"
	CertsRenew      CertsAction = "renew"
)

func (CertsOp) Name() string     { return "certs" }
func (op CertsOp) event() string { return "certs-" + string(op.Action) }
func (op CertsOp) run(ctx context.Context, wf Workflows, o installer.Options) (*installer.Result, error) {
	switch op.Action {
	case CertsImport:
		return wf.ImportCertificate(ctx, o, op.TLS)
	case CertsSelfSigned:
		return wf.UseSelfSigned(ctx, o)
	case CertsOffload:
		return wf.OffloadTLS(ctx, o)
	case CertsACME:
		return wf.UseACME(ctx, o, op.ACME)
	case CertsRenew:
		return wf.RenewCertificate(ctx, o)
	}
	return nil, fmt.Errorf("%w: unknown certs action %q", ErrBadRequest, op.Action)
}

// UpgradeOp is `upgrade`: to a newer CARTO release of the channel.
type UpgradeOp struct {
	Upgrade installer.UpgradeOptions `json:"upgrade"`
	EngineRestart
}

func (UpgradeOp) Name() string { return "upgrade" }
func (op UpgradeOp) event() string {
	return fmt.Sprintf("upgrade to=%q skip_db_backup=%t appliance_only=%t no_self_update=%t", op.Upgrade.To, op.Upgrade.SkipDatabaseBackup, op.Upgrade.ApplianceOnly, op.Upgrade.NoSelfUpdate)
}
func (op UpgradeOp) run(ctx context.Context, wf Workflows, o installer.Options) (*installer.Result, error) {
	in := op.Upgrade
	in.Options = o
	return wf.Upgrade(ctx, in)
}

// RollbackOp is `rollback`: back over the last upgrade.
type RollbackOp struct {
	Rollback installer.RollbackOptions `json:"rollback"`
	noEngineRestart
}

func (RollbackOp) Name() string { return "rollback" }
func (op RollbackOp) event() string {
	return fmt.Sprintf("rollback restore_database=%t", op.Rollback.RestoreDatabase)
}
func (op RollbackOp) run(ctx context.Context, wf Workflows, o installer.Options) (*installer.Result, error) {
	in := op.Rollback
	in.Options = o
	return wf.Rollback(ctx, in)
}

// LicenseUpdateOp is `license update FILE`.
type LicenseUpdateOp struct {
	File string `json:"file"`
}

func (LicenseUpdateOp) Name() string     { return "license/update" }
func (op LicenseUpdateOp) event() string { return fmt.Sprintf("license-update file=%q", op.File) }
func (op LicenseUpdateOp) run(ctx context.Context, wf Workflows, paths config.Paths) (*license.Status, error) {
	return wf.UpdateLicense(ctx, paths, op.File)
}

// LicenseCheckOp is `license check`: the licence server is asked now,
// and its answer recorded.
type LicenseCheckOp struct{}

func (LicenseCheckOp) Name() string  { return "license/check" }
func (LicenseCheckOp) event() string { return "license-check" }
func (LicenseCheckOp) run(ctx context.Context, wf Workflows, paths config.Paths) (*license.Status, error) {
	return wf.CheckLicense(ctx, paths)
}
