package vm

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
)

// Exec runs cmd in the VM as root and returns its output and exit code.
// err is only for failing to run it (the VM gone, ctx ended): a command
// that exits non-zero is not an error.
func (v *VM) Exec(ctx context.Context, cmd ...string) (stdout, stderr string, exitCode int, err error) {
	var out, errOut bytes.Buffer
	exitCode, err = v.run(ctx, nil, &out, &errOut, cmd)
	return out.String(), errOut.String(), exitCode, err
}

// run runs cmd in the VM with stdin (when not nil) as its standard input,
// copying its output to stdout and stderr as it comes.
func (v *VM) run(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, cmd []string) (int, error) {
	created, err := v.cli.ExecCreate(ctx, v.ID, client.ExecCreateOptions{
		Cmd:          cmd,
		AttachStdin:  stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return -1, fmt.Errorf("running %q in VM %q: %w", cmd, v.Name, err)
	}
	att, err := v.cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	if err != nil {
		return -1, fmt.Errorf("running %q in VM %q: %w", cmd, v.Name, err)
	}
	defer att.Close()

	inErr := make(chan error, 1)
	if stdin != nil {
		go func() {
			_, err := io.Copy(att.Conn, stdin)
			// The end of input is what tells the command (docker load) to
			// finish; without CloseWrite it would wait forever.
			if cerr := att.CloseWrite(); err == nil {
				err = cerr
			}
			inErr <- err
		}()
	} else {
		inErr <- nil
	}
	if _, err := stdcopy.StdCopy(stdout, stderr, att.Reader); err != nil {
		return -1, fmt.Errorf("reading the output of %q in VM %q: %w", cmd, v.Name, err)
	}
	if err := <-inErr; err != nil {
		return -1, fmt.Errorf("sending input to %q in VM %q: %w", cmd, v.Name, err)
	}
	// The output ends a moment before the engine records the exit code; a
	// command that closed its output but still runs a minute later is an
	// error, not a reason to wait until the test's own timeout.
	exitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		insp, err := v.cli.ExecInspect(exitCtx, created.ID, client.ExecInspectOptions{})
		if err != nil {
			return -1, fmt.Errorf("inspecting %q in VM %q: %w", cmd, v.Name, err)
		}
		if !insp.Running {
			return insp.ExitCode, nil
		}
		select {
		case <-exitCtx.Done():
			return -1, fmt.Errorf("waiting for %q in VM %q to exit once its output ended: %w", cmd, v.Name, exitCtx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// CopyFile copies the host file hostPath to vmPath in the VM with mode,
// owned by root, creating vmPath's directory when missing. The file is
// streamed, not read into memory.
func (v *VM) CopyFile(ctx context.Context, hostPath, vmPath string, mode os.FileMode) error {
	f, err := os.Open(hostPath)
	if err != nil {
		return fmt.Errorf("copying to VM %q: %w", v.Name, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("copying to VM %q: %w", v.Name, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("copying %s to VM %q: not a regular file", hostPath, v.Name)
	}
	if err := v.mkdirAll(ctx, path.Dir(vmPath)); err != nil {
		return err
	}
	if err := v.putFile(ctx, vmPath, f, info.Size(), mode); err != nil {
		return fmt.Errorf("copying %s to %s in VM %q: %w", hostPath, vmPath, v.Name, err)
	}
	return nil
}

// WriteFile writes data to vmPath in the VM with mode, owned by root,
// creating vmPath's directory when missing.
func (v *VM) WriteFile(ctx context.Context, vmPath string, data []byte, mode os.FileMode) error {
	if err := v.mkdirAll(ctx, path.Dir(vmPath)); err != nil {
		return err
	}
	if err := v.putFile(ctx, vmPath, bytes.NewReader(data), int64(len(data)), mode); err != nil {
		return fmt.Errorf("writing %s in VM %q: %w", vmPath, v.Name, err)
	}
	return nil
}

// putFile streams a one-file tar archive of r (size bytes) to the engine,
// to be unpacked in vmPath's directory, which must exist.
func (v *VM) putFile(ctx context.Context, vmPath string, r io.Reader, size int64, mode os.FileMode) error {
	if !path.IsAbs(vmPath) {
		return fmt.Errorf("%q is not an absolute path", vmPath)
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg,
			Name:     path.Base(vmPath),
			Mode:     int64(mode.Perm()),
			Size:     size,
			ModTime:  time.Now(),
			Format:   tar.FormatPAX,
		})
		if err == nil {
			_, err = io.CopyN(tw, r, size)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	_, err := v.cli.CopyToContainer(ctx, v.ID, client.CopyToContainerOptions{
		DestinationPath: path.Dir(vmPath),
		Content:         pr,
	})
	pr.CloseWithError(err) // unblocks the writer if the engine gave up early
	return err
}

func (v *VM) mkdirAll(ctx context.Context, dir string) error {
	_, errOut, code, err := v.Exec(ctx, "mkdir", "-p", dir)
	if err == nil && code != 0 {
		err = fmt.Errorf("mkdir -p %s: exit %d: %s", dir, code, strings.TrimSpace(errOut))
	}
	if err != nil {
		return fmt.Errorf("creating %s in VM %q: %w", dir, v.Name, err)
	}
	return nil
}

// LoadImages copies images from the host's engine into the VM's: `docker
// save` on the host streamed into `docker load` in the VM, with no copy on
// disk in between. Each ref must exist on the host; afterwards each exists
// in the VM under the same name.
func (v *VM) LoadImages(ctx context.Context, refs ...string) error {
	if len(refs) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the save if the load fails first
	saved, err := v.cli.ImageSave(ctx, refs)
	if err != nil {
		return fmt.Errorf("saving %q from the host for VM %q: %w", refs, v.Name, err)
	}
	defer saved.Close()
	var out bytes.Buffer
	code, err := v.run(ctx, saved, &out, &out, []string{"docker", "load"})
	if err == nil && code != 0 {
		err = fmt.Errorf("docker load: exit %d: %s", code, strings.TrimSpace(out.String()))
	}
	if err != nil {
		return fmt.Errorf("loading %q into VM %q: %w", refs, v.Name, err)
	}
	// A save that failed half-way is a truncated archive, which docker load
	// may partly accept: check what arrived.
	args := append([]string{"docker", "image", "inspect", "--format", "{{.Id}}"}, refs...)
	if _, errOut, code, err := v.Exec(ctx, args...); err != nil || code != 0 {
		return errors.Join(fmt.Errorf("loading %q into VM %q: not all arrived: %s", refs, v.Name, strings.TrimSpace(errOut)), err)
	}
	return nil
}

// logsScript gathers what explains a failure inside a VM.
const logsScript = `
echo "== systemctl is-system-running"; systemctl is-system-running
echo "== systemctl --failed"; systemctl --failed --no-pager
echo "== docker ps -a"; docker ps -a
echo "== journalctl -n 100"; journalctl -b --no-pager -n 100
`

// Logs returns a report for a failing test: systemd's state and failed
// units, the inner engine's containers, and the last lines of the journal
// (of every boot: see Reboot). When the VM does not run, it returns the
// container's state and the end of its console (systemd's status lines).
func (v *VM) Logs(ctx context.Context) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "=== VM %q (container %s, address %s)\n", v.Name, v.Container, v.IP())
	insp, err := v.cli.ContainerInspect(ctx, v.ID, client.ContainerInspectOptions{})
	if err != nil {
		return b.String(), fmt.Errorf("inspecting VM %q: %w", v.Name, err)
	}
	if st := insp.Container.State; st == nil || !st.Running {
		if st != nil {
			fmt.Fprintf(&b, "not running: status %s, exit code %d, error %q\n", st.Status, st.ExitCode, st.Error)
		}
		res, err := v.cli.ContainerLogs(ctx, v.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: "100"})
		if err != nil {
			return b.String(), fmt.Errorf("reading the console of VM %q: %w", v.Name, err)
		}
		defer res.Close()
		b.WriteString("== console (last 100 lines)\n")
		_, err = io.Copy(&b, res) // a terminal's: not multiplexed
		return b.String(), err
	}
	out, errOut, _, err := v.Exec(ctx, "sh", "-c", logsScript)
	b.WriteString(out)
	b.WriteString(errOut)
	return b.String(), err
}
