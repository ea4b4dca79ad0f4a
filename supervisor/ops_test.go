package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
)

// recorder is a Workflows whose every changing workflow records what it
// was called with (and whether it may restart the engine) and answers
// with err.
type recorder struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (r *recorder) record(o installer.Options, name string, args ...any) (*installer.Result, error) {
	restart := o.ConfirmEngineRestart != nil && o.ConfirmEngineRestart("test")
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("%s pull=%s restart=%v %s", name, o.Pull, restart, asJSON(args)))
	return &installer.Result{Version: name}, r.err
}

func (r *recorder) recordLicense(paths config.Paths, name string, args ...any) (*license.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("%s %s", name, asJSON(args)))
	return &license.Status{ID: name}, r.err
}

// asJSON shows what pointers point to.
func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return ""
	}
	return r.calls[len(r.calls)-1]
}

func (r *recorder) workflows() Workflows {
	return Workflows{
		Apply: func(_ context.Context, o installer.Options) (*installer.Result, error) { return r.record(o, "apply") },
		Control: func(_ context.Context, o installer.Options, a installer.ControlAction, s []string) (*installer.Result, error) {
			return r.record(o, "control", a, s)
		},
		Install: func(_ context.Context, in installer.InstallOptions) (*installer.Result, error) {
			o := in.Options
			in.Options = installer.Options{}
			return r.record(o, "install", in)
		},
		SetProxy: func(_ context.Context, o installer.Options, in installer.ProxyInput) (*installer.Result, error) {
			return r.record(o, "proxy set", in)
		},
		ClearProxy: func(_ context.Context, o installer.Options) (*installer.Result, error) {
			return r.record(o, "proxy clear")
		},
		ImportCertificate: func(_ context.Context, o installer.Options, in installer.TLSInput) (*installer.Result, error) {
			return r.record(o, "certs import", in)
		},
		UseSelfSigned: func(_ context.Context, o installer.Options) (*installer.Result, error) {
			return r.record(o, "self-signed")
		},
		OffloadTLS: func(_ context.Context, o installer.Options) (*installer.Result, error) { return r.record(o, "offload") },
		UseACME: func(_ context.Context, o installer.Options, in installer.ACMEInput) (*installer.Result, error) {
			return r.record(o, "acme", in)
		},
		RenewCertificate: func(_ context.Context, o installer.Options) (*installer.Result, error) { return r.record(o, "renew") },
		UpdateLicense: func(_ context.Context, p config.Paths, file string) (*license.Status, error) {
			return r.recordLicense(p, "license update", file)
		},
		CheckLicense: func(_ context.Context, p config.Paths) (*license.Status, error) {
			return r.recordLicense(p, "license check")
		},
		Upgrade: func(_ context.Context, in installer.UpgradeOptions) (*installer.Result, error) {
			o := in.Options
			in.Options = installer.Options{}
			return r.record(o, "upgrade", in)
		},
		Rollback: func(_ context.Context, in installer.RollbackOptions) (*installer.Result, error) {
			o := in.Options
			in.Options = installer.Options{}
			return r.record(o, "rollback", in)
		},
	}
}

// serveRecorder runs the API on rec's workflows and dials it.
func serveRecorder(t *testing.T, rec *recorder) (config.Paths, *Client) {
	t.Helper()
	paths := serveWith(t, ServeOptions{Workflows: rec.workflows()})
	c, err := Dial(context.Background(), paths)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return paths, c
}

// fill sets every field v reaches to a value of its own, so that a field
// the wire loses shows as a difference.
func fill(v reflect.Value, name string) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() && f.Tag.Get("json") != "-" {
				fill(v.Field(i), name+"."+f.Name)
			}
		}
	case reflect.String:
		v.SetString(strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "."), ".", "-")))
	case reflect.Int:
		v.SetInt(int64(len(name)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), name)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), name)
	}
}

func filled[T any]() T {
	var v T
	fill(reflect.ValueOf(&v).Elem(), "")
	return v
}

// Every op reaches the agent's workflow with every one of its fields, and
// with the answer about restarting the engine the CLI gave in advance: the
// same call as the op run directly.
func TestOpsCrossTheSocketWhole(t *testing.T) {
	rec := &recorder{}
	paths, c := serveRecorder(t, rec)
	ctx := context.Background()
	wf := rec.workflows()
	seen := map[string]bool{}
	for _, op := range []Op{
		filled[ApplyOp](), ApplyOp{},
		filled[ControlOp](),
		filled[InstallOp](), InstallOp{},
		filled[ProxySetOp](),
		filled[ProxyClearOp](), ProxyClearOp{},
		CertsOp{Action: CertsImport, TLS: filled[installer.TLSInput]()},
		CertsOp{Action: CertsSelfSigned}, CertsOp{Action: CertsOffload}, CertsOp{Action: CertsRenew},
		CertsOp{Action: CertsACME, ACME: filled[installer.ACMEInput]()},
		filled[UpgradeOp](), UpgradeOp{},
		filled[RollbackOp](), RollbackOp{},
	} {
		res, err := Do(ctx, c, installer.Options{}, op)
		if err != nil {
			t.Errorf("%s: %v", op.event(), err)
			continue
		}
		remote := rec.last()
		if _, err := op.run(ctx, wf, installer.Options{ConfirmEngineRestart: func(string) bool { return op.restartsEngine() }}); err != nil {
			t.Fatal(err)
		}
		if direct := rec.last(); remote != direct {
			t.Errorf("%T through the agent:\n  %s\ndirectly:\n  %s", op, remote, direct)
		}
		if res == nil || !strings.HasPrefix(remote, res.Version) {
			t.Errorf("%T: the result came back as %+v for %s", op, res, remote)
		}
		seen[res.Version] = true
	}
	if len(seen) != 12 {
		t.Errorf("the ops reached %d workflows, want 12: %v", len(seen), seen)
	}
	for _, op := range []LicenseOp{LicenseUpdateOp{File: "/tmp/l.json"}, LicenseCheckOp{}} {
		st, err := DoLicense(ctx, c, paths, op)
		if err != nil {
			t.Fatal(err)
		}
		remote := rec.last()
		op.run(ctx, wf, paths)
		if direct := rec.last(); remote != direct || st == nil || !strings.HasPrefix(remote, st.ID) {
			t.Errorf("%T through the agent: %s (%+v), directly: %s", op, remote, st, direct)
		}
	}
	if _, err := Do(ctx, c, installer.Options{}, CertsOp{Action: "rotate"}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("an unknown certs action: %v", err)
	}
}

// An error naming an operator's input or an appliance.yaml field keeps
// it across the socket, so the CLI names the flag that gives it as a
// direct run does; a licence op's error keeps its kind and status.
func TestOpErrorsKeepWhatTheyName(t *testing.T) {
	rec := &recorder{}
	paths, c := serveRecorder(t, rec)
	ctx := context.Background()

	rec.err = fmt.Errorf("reading it: %w", &installer.InputError{Input: installer.InputTLSKey, Err: errors.New("the key file is a FIFO")})
	_, err := Do(ctx, c, installer.Options{}, CertsOp{Action: CertsImport})
	var ie *installer.InputError
	if !errors.As(err, &ie) || ie.Input != installer.InputTLSKey || err.Error() != rec.err.Error() {
		t.Errorf("an input error came back as %v (%+v)", err, ie)
	}
	rec.err = &config.FieldError{Field: "proxy.url", Err: errors.New("not a URL")}
	_, err = Do(ctx, c, installer.Options{}, ProxySetOp{Proxy: installer.ProxyInput{RejectUnauthorized: new(bool)}})
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "proxy.url" || errors.As(err, &ie) {
		t.Errorf("a field error came back as %v (%+v)", err, fe)
	}
	rec.err = fmt.Errorf("refused: %w", license.ErrInvalid)
	st, err := DoLicense(ctx, c, paths, LicenseUpdateOp{File: "/x"})
	if !errors.Is(err, license.ErrInvalid) || st == nil || st.ID != "license update" {
		t.Errorf("a refused licence came back as %v, %+v", err, st)
	}
	rec.err = errors.New("plain")
	if _, err := Do(ctx, c, installer.Options{}, ApplyOp{}); errors.As(err, &ie) || errors.As(err, &fe) {
		t.Errorf("a plain error gained an input or a field: %v", err)
	}
}
